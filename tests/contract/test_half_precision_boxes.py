"""Half-precision boxes put samples exactly on pixel rows, where the roi_align box gradient has a kink.

Box rows 96..120 at spatial_scale 1/4, aligned, 7 bins, sampling_ratio 2: the second sample of bin 1 sits at
y = 23.5 + 6/7 + 1.5 * 3/7 = 25.0 exactly. The bilinear map's slope jumps there (rows 25-26 on one side, 24-25 on
the other), so a backend that computes the position in a narrower type (24.999998) takes the other slope: the
P2 benchmark found the cpp backend 15% off the float64 gradient this way. Every backend must decide as the
reference does on the values it was given (float16 boxes are exact in float64). On a GPU the backends that run
there are compared with the reference computed on the CPU.
"""

import cases
import pytest
import torch

import impls

# The same float16 tolerance as the matrix (cases.TOLERANCE): outputs rounded to 11 bits, sums in float32.
TOLERANCE = cases.TOLERANCE[torch.float16]


def _box_grad(backend, x, rois):
    x = x.detach().requires_grad_()
    rois = rois.detach().requires_grad_()
    out = impls.roi_align(x, rois, 7, spatial_scale=0.25, sampling_ratio=2, aligned=True, backend=backend)
    out.backward(torch.ones_like(out))
    return rois.grad


@pytest.mark.parametrize(
    "backend,device", [p for p in cases.backend_device_params("roi_align", dtype=torch.float16)
                       if impls.core.registry.registered()[p.values[0]].kernels["roi_align"].boxes_grad],
)
def test_box_gradient_at_a_sample_on_a_pixel_row(backend, device):
    g = torch.Generator().manual_seed(61)
    x = torch.randn(1, 4, 40, 60, generator=g).half()  # [1, 4, 40, 60]
    rois = torch.tensor([[0, 40.0, 96.0, 180.0, 120.0]]).half()  # image px; rows 24..30 on the map
    want = _box_grad(cases.ORACLE, x.double(), rois.double())  # on the CPU, the oracle's only device
    got = _box_grad(backend, x.to(device), rois.to(device))
    assert got.device.type == device
    assert want[0, 2].abs() > 1, "the case must have a sizeable y1 gradient"
    cases.assert_close(got, want, TOLERANCE, "boxes gradient")
