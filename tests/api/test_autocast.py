"""Mixed precision: a detector's training step under ``torch.autocast`` runs through every backend, as through
torchvision, and under ``torch.compile`` too.

The rule (``impls/core/autocast.py``): under autocast both ops compute in float32 and return the feature map's dtype.
The oracle is torchvision's own autocast behaviour for ``roi_align`` (the same rule), and the float32 computation
cast to the map's dtype for ``crop_and_resize`` (TensorFlow has no autocast).
"""

import cases
import pytest
import torch

import impls

# The conv runs in the autocast dtype on both sides, so the only difference left is the float32 roi_align's
# summation order (1e-6 relative) seen through the final rounding to bfloat16/float16 (2**-8 / 2**-11 relative):
# outputs may differ by one rounding step of the half type.
TOLERANCE = {torch.bfloat16: 1e-2, torch.float16: 2e-3}
AUTOCAST_DTYPES = {"cpu": (torch.bfloat16,), "cuda": (torch.bfloat16, torch.float16)}


def _step(device, dtype, pool):
    """conv -> pool(features, boxes) -> loss -> backward under autocast; returns output, conv grad, boxes grad."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 24, 28, generator=g).to(device)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).to(device)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=g))
    rois = torch.tensor([[0, 4.5, 2.0, 60.0, 80.5], [1, 10.0, 12.0, 40.0, 33.0], [1, 0.0, 0.0, 111.0, 95.0]],
                        device=device, requires_grad=True)
    with torch.autocast(device, dtype=dtype):
        features = conv(images)  # [2, 4, 24, 28] in the autocast dtype
        assert features.dtype == dtype
        out = pool(features, rois)
        loss = (out.float() ** 2).mean()
    loss.backward()
    return out, conv.weight.grad, rois.grad


def _roi_align(backend):
    return lambda x, r: impls.roi_align(x, r, (3, 4), 0.25, 2, True, backend=backend)


def _autocast_params():
    for device in cases.DEVICES:
        for dtype in AUTOCAST_DTYPES[device]:
            for backend in cases.backends_for("roi_align", device, exclude=("torchvision",)):
                yield pytest.param(backend, device, dtype, id=f"{backend}-{device}-{str(dtype)[6:]}")


@pytest.mark.parametrize("backend,device,dtype", list(_autocast_params()))
def test_roi_align_training_step_matches_torchvision(backend, device, dtype):
    import torchvision

    def peer(x, r):
        return torchvision.ops.roi_align(x, r.detach(), (3, 4), 0.25, 2, True)

    out, conv_grad, rois_grad = _step(device, dtype, _roi_align(backend))
    want_out, want_conv_grad, _ = _step(device, dtype, peer)
    assert out.dtype == want_out.dtype == dtype, "the output keeps the feature map's dtype"
    cases.assert_close(out, want_out, TOLERANCE[dtype], "forward")
    cases.assert_close(conv_grad, want_conv_grad, TOLERANCE[dtype], "conv weight gradient")
    assert rois_grad is not None and rois_grad.dtype == torch.float32 and rois_grad.abs().sum() > 0


@pytest.mark.parametrize("backend,device,dtype", list(_autocast_params()))
def test_crop_and_resize_training_step_is_float32_cast_back(backend, device, dtype):
    box_index = torch.tensor([0, 1, 1], device=device)

    def crop(backend_name, cast=None):
        def pool(x, r):
            boxes = (r[:, [2, 1, 4, 3]] / 100.0)  # pixel rois -> normalized (y1, x1, y2, x2)
            if cast is not None:  # the oracle: float32 explicitly, autocast off, then the map's dtype
                with torch.autocast(device, enabled=False):
                    return impls.crop_and_resize(x.float(), boxes.float(), box_index, (3, 4),
                                                 backend=backend_name).to(cast)
            return impls.crop_and_resize(x, boxes, box_index, (3, 4), backend=backend_name)
        return pool

    out, conv_grad, rois_grad = _step(device, dtype, crop(backend))
    want_out, want_conv_grad, want_rois_grad = _step(device, dtype, crop("reference", cast=dtype))
    assert out.dtype == dtype
    cases.assert_close(out, want_out, TOLERANCE[dtype], "forward")
    cases.assert_close(conv_grad, want_conv_grad, TOLERANCE[dtype], "conv weight gradient")
    cases.assert_close(rois_grad, want_rois_grad, TOLERANCE[dtype], "box gradient")


def test_autocast_holds_under_compile():
    # The rule lives in the public op, before the autograd Function, so dynamo traces the casts with it.
    torch._dynamo.reset()
    x = torch.randn(2, 4, 12, 14).bfloat16()
    rois = torch.tensor([[0, 1.3, 2.2, 30.5, 40.1], [1, 5.0, 6.0, 20.0, 18.0]])

    def fn(x, r):
        return impls.roi_align(x, r, (3, 4), 0.25, 2, True, backend="cpp")

    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager = fn(x, rois)
        compiled = torch.compile(fn, fullgraph=True)(x, rois)
    assert compiled.dtype == eager.dtype == torch.bfloat16
    assert torch.equal(compiled, eager)


def test_float64_is_left_alone_under_autocast():
    # autocast never casts float64; neither do the ops.
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    rois = torch.tensor([[0, 0.5, 0.5, 4.0, 5.0]], dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = impls.roi_align(x, rois, 2, backend="reference")
    assert out.dtype == torch.float64
    assert torch.equal(out, impls.roi_align(x, rois, 2, backend="reference"))
