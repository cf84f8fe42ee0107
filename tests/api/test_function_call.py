"""The public ops go through their autograd Function only where autograd records the call
(``impls/core/function_call.py``): a forward without gradients skips ``Function.apply`` (whose argument binding costs
more than a small kernel) and gives the same output; a forward that needs gradients still goes through it."""

import pytest
import torch

import impls
from impls.ops.crop_and_resize import op as crop_op
from impls.ops.roi_align import op as roi_op
from impls.ops.roi_align_rotated import op as rotated_op


def _calls():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 9, 11, generator=g, dtype=torch.float64)
    crop_boxes = torch.tensor([[0.1, 0.2, 0.8, 0.9], [0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    rois = torch.tensor([[0, 1.0, 1.0, 7.0, 6.0], [1, 0.5, 2.0, 9.0, 8.0]], dtype=torch.float64)
    rotated = torch.tensor([[0, 5.0, 4.0, 6.0, 3.0, 30.0], [1, 4.0, 5.0, 3.0, 5.0, -60.0]], dtype=torch.float64)
    return {
        "crop_and_resize": (crop_op, lambda x, b: impls.crop_and_resize(
            x, b, torch.tensor([0, 1]), (3, 4), backend="cpp"), x, crop_boxes),
        "roi_align": (roi_op, lambda x, b: impls.roi_align(x, b, (3, 4), 1.0, 2, True, backend="cpp"), x, rois),
        "roi_align_rotated": (rotated_op, lambda x, b: impls.roi_align_rotated(
            x, b, (3, 4), 1.0, 2, backend="cpp"), x, rotated),
    }


class _Recorded(Exception):
    pass


def _raising_apply(*args, **kwargs):
    raise _Recorded


@pytest.mark.parametrize("name", ["crop_and_resize", "roi_align", "roi_align_rotated"])
def test_forward_without_gradients_skips_function_apply(name, monkeypatch):
    module, call, x, boxes = _calls()[name]
    want = call(x, boxes)  # Function.apply untouched: the output to reproduce
    monkeypatch.setattr(module.Function, "apply", _raising_apply)
    assert torch.equal(call(x, boxes), want), "the forward alone gives another output"
    with torch.no_grad():
        assert torch.equal(call(x.requires_grad_(), boxes), want)
    x.requires_grad_(False)
    with torch.inference_mode():
        assert torch.equal(call(x, boxes), want)


@pytest.mark.parametrize("name", ["crop_and_resize", "roi_align", "roi_align_rotated"])
@pytest.mark.parametrize("wrt", ["input", "boxes"])
def test_forward_with_gradients_goes_through_function_apply(name, wrt, monkeypatch):
    module, call, x, boxes = _calls()[name]
    x, boxes = x.clone().requires_grad_(wrt == "input"), boxes.clone().requires_grad_(wrt == "boxes")
    out = call(x, boxes)
    assert out.grad_fn is not None, "a forward that needs gradients gives an output without a grad_fn"
    monkeypatch.setattr(module.Function, "apply", _raising_apply)
    with pytest.raises(_Recorded):
        call(x, boxes)
