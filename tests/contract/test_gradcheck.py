"""``torch.autograd.gradcheck`` in float64: a backend's analytic gradients equal finite differences of its own
forward, for both ops: the image gradient, and the box gradient where the backend gives one (``torchvision``
gives none, so its boxes do not require grad).

Every backend that computes in float64 (all but ``tensorflow``, float32 only) runs, on every device its record
lists that this machine has: on a CPU machine ``reference``, ``vectorized``, ``compiled``, ``cpp``, ``triton``
(under ``TRITON_INTERPRET=1``) and ``torchvision`` (roi_align); on a GPU also ``vectorized``, ``compiled``,
``cuda``, ``torchvision`` and ``triton`` on ``cuda`` (there ``triton`` runs on ``cuda`` only).

Boxes are random (no sample on a pixel edge or a rounding tie, where the bilinear map has a kink) and kept at
least two pixels wide, so that neither a finite-difference step (1e-6) nor roi_align's adaptive
``ceil(size / output)`` crosses a discontinuity. roi_align boxes are passed as a list of ``Tensor[L, 4]``, so the
box gradient is checked on the coordinates only (the batch column is an index, not a variable).
"""

import cases
import pytest
import torch

import impls


def _backend_devices(op):
    return cases.backend_device_params(op, dtype=torch.float64)


def _nondet_tol(device):
    """gradcheck runs each backward twice and by default wants the same bits. On CUDA the image gradients of
    ``cuda`` (default mode), ``vectorized`` (``index_add_``) and ``torchvision`` are added with atomics, in any
    order: float64 rounding differences of a few ulps of O(1) values, within float64's tolerance."""
    return cases.TOLERANCE[torch.float64] if device == "cuda" else 0.0


def _roi_case(device, seed=31):
    # one channel: each finite difference of the image gradient is one forward call, and channels are independent
    # (the matrix checks several against reference)
    x = cases.feature_map(seed=seed, n=2, c=1, h=6, w=7).to(device)  # [2, 1, 6, 7]
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(5, 2, generator=g, dtype=torch.float64) * 5 - 1.2  # some cross the top/left border
    wh = torch.rand(5, 2, generator=g, dtype=torch.float64) * 3 + 2
    boxes = torch.cat([xy, xy + wh], dim=1).to(device)  # [5, 4] (x1, y1, x2, y2)
    return x, [boxes[:3], boxes[3:]]


@pytest.mark.parametrize("aligned,sampling_ratio", [(True, 2), (False, 0)], ids=["aligned_sr2", "unaligned_adaptive"])
@pytest.mark.parametrize("backend,device", _backend_devices("roi_align"))
def test_roi_align_gradcheck(backend, aligned, sampling_ratio, device):
    x, (b0, b1) = _roi_case(device)
    boxes_grad = impls.core.registry.registered()[backend].kernels["roi_align"].boxes_grad
    x.requires_grad_()
    b0.requires_grad_(boxes_grad)
    b1.requires_grad_(boxes_grad)

    def fn(x, b0, b1):
        return impls.roi_align(x, [b0, b1], (2, 3), spatial_scale=0.9, sampling_ratio=sampling_ratio,
                               aligned=aligned, backend=backend)

    assert torch.autograd.gradcheck(fn, (x, b0, b1), eps=1e-6, atol=1e-8, rtol=1e-6, nondet_tol=_nondet_tol(device))


@pytest.mark.parametrize("method", ["bilinear", "nearest"])
@pytest.mark.parametrize("backend,device", _backend_devices("crop_and_resize"))
def test_crop_and_resize_gradcheck(backend, method, device):
    image = cases.feature_map(seed=41, n=2, c=1, h=5, w=6).to(device).requires_grad_()  # [2, 1, 5, 6], as above
    boxes, box_index = cases.crop_boxes(k=4, seed=42)  # flipped and outside [0, 1] included
    boxes = boxes.to(device).requires_grad_()

    def fn(image, boxes):
        return impls.crop_and_resize(image, boxes, box_index.to(device), (3, 2), method=method,
                                     extrapolation_value=0.5, backend=backend)

    # nearest: the box gradient is zero and finite differences agree (the crop is locally constant in the boxes).
    assert torch.autograd.gradcheck(fn, (image, boxes), eps=1e-6, atol=1e-8, rtol=1e-6,
                                    nondet_tol=_nondet_tol(device))
