"""The value statistics every public op reads before a backend runs (``impls/core/checks.py``): ``nan_unless_finite``
against ``torch.isfinite(t).all()`` as the oracle, on tensors and on the NumPy views the CPU reads them through;
each operator's statistics read through views against the same read from its torch operators; and the public ops'
answers to boxes that are finite but huge (a plain sum of them would overflow and call them infinite)."""

import math
import warnings

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import impls
from impls.core import checks
from impls.ops.crop_and_resize import arguments as crop_arguments
from impls.ops.roi_align import arguments as roi_arguments
from impls.ops.roi_align_rotated import arguments as rotated_arguments

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
    expected_finite = bool(torch.isfinite(t).all())
    stat = checks.nan_unless_finite(t)
    assert stat.dtype == torch.float64 and stat.dim() == 0
    on_views = [] if dtype == torch.bfloat16 else [checks.nan_unless_finite(t.numpy())]  # NumPy has no bfloat16
    for value in [stat.item(), *on_views]:
        assert math.isnan(value) == (not expected_finite)
        if expected_finite:
            assert value == 0.0


BIG = 1e300  # finite in float64; times a spatial scale of 1e10 it overflows to inf
# (name, statistics of the operator, a valid row, rows that break one rule each)
STATS = {
    "crop_and_resize": (
        lambda boxes, index: crop_arguments._box_stats(boxes, index),
        [[0.1, 0.2, 0.7, 0.9]],
        [[float("nan"), 0, 1, 1], [0, float("inf"), 1, 1], [0, 0, -float("inf"), 1]],
    ),
    "roi_align": (
        lambda rois: roi_arguments._roi_stats(rois, 1e10),
        [[1, 0, 0, 3, 3]],
        [[0.5, 0, 0, 3, 3], [-1, 0, 0, 3, 3], [2, 0, 0, 3, 3], [0, BIG, 0, 1, 1], [float("nan"), 0, 0, 1, 1]],
    ),
    "roi_align_rotated": (
        lambda rois: rotated_arguments._rotated_stats(rois, 1e10),
        [[1, 2, 2, 3, 3, 30]],
        [[0.5, 2, 2, 3, 3, 0], [0, 2, 2, -1, 3, 0], [0, 2, 2, 3, BIG, 0], [0, 2, 2, 3, 3, float("inf")]],
    ),
}


def _stats_inputs(op, dtype, rows):
    if op == "crop_and_resize":
        return torch.tensor(rows, dtype=torch.float64).to(dtype), torch.tensor([0, 1, 5, -2][: len(rows)])
    return (torch.tensor(rows, dtype=torch.float64).to(dtype),)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", STATS)
def test_statistics_read_through_views_equal_the_torch_read(op, dtype):
    # The oracle: the same statistics computed by torch operators and read with one copy (what CUDA tensors take).
    stats_of, valid, broken = STATS[op]
    for rows in [valid, *([valid[0], bad] for bad in broken)]:  # BIG is inf in float16 and bfloat16: still a case
        tensors = _stats_inputs(op, dtype, rows)
        expected = checks.read(stats_of(*tensors))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # NumPy's overflow to inf on the scaled boxes is a value read, not a warning
            got = checks.read_stats(stats_of, *tensors)
        assert len(got) == len(expected) and all(type(v) is float for v in got), got
        assert np.array_equal(np.array(got), np.array(expected), equal_nan=True), (rows, got, expected)


class _CountOperators(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func)
        return func(*args, **(kwargs or {}))


def test_cpu_statistics_compute_with_no_torch_operator():
    # Why the views: right after a kernel each dispatched operator costs tens of microseconds (checks.read_stats).
    # Tensor.numpy() dispatches one detach (a view) per tensor; nothing else may run.
    boxes, index = _stats_inputs("crop_and_resize", torch.float32, [[0.1, 0.2, 0.7, 0.9], [0, 0, 1, 1]])
    with _CountOperators() as mode:
        stats = checks.read_stats(crop_arguments._box_stats, boxes, index)
    assert stats == [0.0, 0.0, 1.0]
    assert set(mode.ops) <= {torch.ops.aten.detach.default} and len(mode.ops) <= 2, mode.ops
    with _CountOperators() as mode:  # bfloat16 has no NumPy view: the torch operators, read once
        checks.read_stats(crop_arguments._box_stats, boxes.bfloat16(), index)
    assert torch.ops.aten._local_scalar_dense.default not in mode.ops and mode.ops, mode.ops


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
