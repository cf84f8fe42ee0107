"""Every ``roi_align`` backend of ours equals ``torchvision.ops.roi_align`` (called directly, not through impls).

float64 forward and input gradient, over sampling_ratio {-1, 0, 1, 2} x aligned {False, True} x both box formats,
with spatial_scale 0.5 and boxes that cross the border (some samples land in [-1, 0) and are clamped, some
beyond -1 and are zero) or are smaller than a pixel. On a GPU the backends that run there are compared with
torchvision's CUDA kernels, on the same device.
"""

import cases
import pytest
import torch
import torchvision

import impls

# float64's tolerance (cases.TOLERANCE) holds: same formulas in float64; only the summation order of the input
# gradient differs (torchvision adds each sample's four taps in turn, vectorized sums per tap): a few ulps per
# term, < 1e3 terms. On CUDA both add the input gradient with atomics (any order) and torchvision's kernels may
# fuse multiply-adds: still a few ulps.
TOLERANCE = cases.TOLERANCE[torch.float64]
SPATIAL_SCALE = 0.5
OUTPUT_SIZE = (3, 4)


def _boxes_as(rois: torch.Tensor, box_format: str, n: int):
    if box_format == "tensor":
        return rois
    return [rois[rois[:, 0] == i, 1:] for i in range(n)]  # List[Tensor[L, 4]]


def _run(fn, x, boxes, grad):
    x = x.detach().requires_grad_()
    out = fn(x, boxes)
    out.backward(grad)
    return out.detach(), x.grad


@pytest.mark.parametrize("box_format", ["tensor", "list"])
@pytest.mark.parametrize("aligned", [False, True], ids=["unaligned", "aligned"])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2], ids=lambda s: f"sr{s}")
@pytest.mark.parametrize(
    "backend,device", cases.backend_device_params("roi_align", dtype=torch.float64, exclude=["torchvision"])
)
def test_roi_align_equals_torchvision(backend, device, sampling_ratio, aligned, box_format):
    x = cases.feature_map(seed=3)  # [2, 3, 9, 11]
    rois = cases.roi_boxes(k=8, seed=4, scale=SPATIAL_SCALE)  # [8, 5] image coordinates
    assert (rois[:, 1:3] * SPATIAL_SCALE < 0).any(), "the case must include boxes crossing the border"
    x, rois = x.to(device), rois.to(device)
    boxes = _boxes_as(rois, box_format, x.shape[0])
    kwargs = dict(output_size=OUTPUT_SIZE, spatial_scale=SPATIAL_SCALE, sampling_ratio=sampling_ratio,
                  aligned=aligned)
    grad = torch.randn(rois.shape[0], x.shape[1], *OUTPUT_SIZE, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(5)).to(device)
    want = _run(lambda t, b: torchvision.ops.roi_align(t, b, **kwargs), x, boxes, grad)
    got = _run(lambda t, b: impls.roi_align(t, b, backend=backend, **kwargs), x, boxes, grad)
    assert want[0].device.type == device and got[0].device.type == device
    cases.assert_close(got[0], want[0], TOLERANCE, "forward")
    cases.assert_close(got[1], want[1], TOLERANCE, "input gradient")
