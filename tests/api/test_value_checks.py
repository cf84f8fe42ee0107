"""The value statistics every public op reads before a backend runs (``impls/core/checks.py``): ``nan_unless_finite``
against ``torch.isfinite(t).all()`` as the oracle, and the public ops' answers to boxes that are finite but huge (a
plain sum of them would overflow and call them infinite)."""

import math

import pytest
import torch

import impls
from impls.core import checks

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _with(dtype, values):
    t = torch.zeros(6, 4, dtype=dtype)
    t.view(-1)[: len(values)] = torch.tensor(values, dtype=torch.float64).to(dtype)
    return t


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("values", [
    [],
    [1.0, -2.5],
    ["max", "max", "max", "-max"],  # finite: a plain sum overflows to inf
    [float("nan")],
    [float("inf")],
    [float("-inf")],
    [1.0, float("inf"), float("-inf")],  # a plain sum is NaN here, but so is any mix
    ["max", float("nan")],
])
def test_nan_unless_finite_matches_isfinite(dtype, values):
    big = torch.finfo(dtype).max
    t = _with(dtype, [big if v == "max" else -big if v == "-max" else v for v in values])
    stat = checks.nan_unless_finite(t)
    assert stat.dtype == torch.float64 and stat.dim() == 0
    expected_finite = bool(torch.isfinite(t).all())
    assert math.isnan(stat.item()) == (not expected_finite)
    if expected_finite:
        assert stat.item() == 0.0


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_huge_finite_boxes_are_accepted(backend):
    # Finite float64 boxes whose sum overflows: valid input, every sample outside the image, so the crop is the
    # extrapolation value (TensorFlow's answer for a box far off the image).
    big = torch.finfo(torch.float64).max
    image = torch.randn(1, 2, 4, 5, dtype=torch.float64)
    boxes = torch.tensor([[big, big, big, big], [big, -big, big, -big]], dtype=torch.float64)
    out = impls.crop_and_resize(image, boxes, torch.zeros(2, dtype=torch.int64), 3, extrapolation_value=-1.0,
                                backend=backend)
    assert torch.equal(out, torch.full((2, 2, 3, 3), -1.0, dtype=torch.float64))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_batch_index_is_rejected(value):
    rois = torch.tensor([[value, 0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="boxes must be finite"):
        impls.roi_align(torch.zeros(1, 1, 4, 4), rois, 2, backend="reference")
