"""The value statistics every public op reads before a backend runs (``impls/core/checks.py``): ``nan_unless_finite``
against ``torch.isfinite(t).all()`` as the oracle; each operator's statistics computed by the extension on the CPU
(``impls::<op>_value_stats``) against the same computed by its torch operators and read with one copy, in every
dtype and in strided views; that the CPU read is that one operator, and the torch one where the extension is not
built; and the public ops' answers to boxes that are finite but huge (a plain sum of them would overflow and call
them infinite)."""

import math

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
    assert math.isnan(stat.item()) == (not expected_finite)
    if expected_finite:
        assert stat.item() == 0.0


BIG = 1e300  # finite in float64; times a spatial scale of 1e10 it overflows to inf
# (name, the operator's arguments module, its statistics on tensors, a valid row, rows that break one rule each)
STATS = {
    "crop_and_resize": (
        crop_arguments, crop_arguments._box_stats,
        [[0.1, 0.2, 0.7, 0.9]],
        [[float("nan"), 0, 1, 1], [0, float("inf"), 1, 1], [0, 0, -float("inf"), 1]],
    ),
    "roi_align": (
        roi_arguments, roi_arguments._roi_stats,
        [[1, 0, 0, 3, 3]],
        [[0.5, 0, 0, 3, 3], [-1, 0, 0, 3, 3], [2, 0, 0, 3, 3], [0, BIG, 0, 1, 1], [float("nan"), 0, 0, 1, 1],
         [float("inf"), 0, 0, 1, 1], [0, 0, 0, 1, float("-inf")]],
    ),
    "roi_align_rotated": (
        rotated_arguments, rotated_arguments._rotated_stats,
        [[1, 2, 2, 3, 3, 30]],
        [[0.5, 2, 2, 3, 3, 0], [0, 2, 2, -1, 3, 0], [0, 2, 2, 3, BIG, 0], [0, 2, 2, 3, 3, float("inf")],
         [0, 2, 2, float("nan"), 3, 0], [-3, 2, 2, 3, -2, 0]],
    ),
}


def _every_other(t, poison):
    """``t`` as a strided view: every other element of its last dimension in a tensor twice as long, the others
    ``poison`` (a read past a stride finds one)."""
    return torch.stack([t, torch.full_like(t, poison)], dim=-1).flatten(-2)[..., ::2]


def _stats_args(op, dtype, rows, strided, index_dtype=torch.int64):
    """The statistics' arguments: the rows in ``dtype``, then crop_and_resize's box_index or the others' spatial
    scale; where ``strided``, each tensor a view of every other element (``_every_other``: NaN boxes, index -9)."""
    boxes = torch.tensor(rows, dtype=torch.float64).to(dtype)
    boxes = _every_other(boxes, math.nan) if strided else boxes
    if op != "crop_and_resize":
        return boxes, 1e10
    index = torch.tensor([0, 1, 5, -2, 3, 4, 2, 1, 0, 3][: len(rows)], dtype=index_dtype)
    return boxes, _every_other(index, -9) if strided else index


def _row_sets(op):
    _, _, valid, broken = STATS[op]
    return [valid, *([valid[0], bad] for bad in broken), [*valid, *broken]]


@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", STATS)
def test_extension_statistics_equal_the_torch_read(op, dtype, strided):
    # The oracle: the same statistics computed by torch operators and read with one copy (what CUDA tensors take).
    module, stats_of, _, _ = STATS[op]
    for rows in _row_sets(op):  # BIG is inf in float16 and bfloat16: still a case
        args = _stats_args(op, dtype, rows, strided)
        assert args[0].is_contiguous() != strided
        expected = checks.read(stats_of(*args))
        got = module._VALUE_STATS(*args)
        assert len(got) == len(expected) and all(type(v) is float for v in got), got
        assert np.array_equal(np.array(got), np.array(expected), equal_nan=True), (rows, got, expected)


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_extension_statistics_read_int32_and_int64_box_indices(index_dtype):
    boxes, index = _stats_args("crop_and_resize", torch.float32, [[0, 0, 1, 1]] * 4, False, index_dtype)
    assert crop_arguments._VALUE_STATS(boxes, index) == [0.0, -2.0, 5.0]  # index [0, 1, 5, -2]


class _CountOperators(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", STATS)
def test_cpu_statistics_are_the_extensions_one_operator(op, dtype):
    # Why one operator: right after a kernel each dispatched operator costs tens of microseconds (checks.read_stats).
    module, stats_of, valid, _ = STATS[op]
    args = _stats_args(op, dtype, valid, strided=True)
    with _CountOperators() as mode:
        stats = checks.read_stats(module._VALUE_STATS, stats_of, *args)
    assert mode.ops == [module._VALUE_STATS], mode.ops
    assert stats == module._VALUE_STATS(*args)


@pytest.mark.parametrize("op", STATS)
def test_without_the_extension_the_cpu_reads_the_torch_statistics(op, monkeypatch):
    # impls._C not built: its statistics operators have no CPU kernel, and the torch operators compute the same.
    monkeypatch.setattr(checks, "_has_cpu_kernel", lambda name: False)
    module, stats_of, valid, broken = STATS[op]
    args = _stats_args(op, torch.float32, [*valid, *broken], strided=False)
    with _CountOperators() as mode:
        stats = checks.read_stats(module._VALUE_STATS, stats_of, *args)
    assert module._VALUE_STATS not in mode.ops and len(mode.ops) > 1, mode.ops
    assert np.array_equal(np.array(stats), np.array(module._VALUE_STATS(*args)), equal_nan=True)


def test_every_statistics_operator_has_the_extensions_cpu_kernel():
    # A kernel file that misspells its operator's name would leave the CPU on the torch statistics, unseen.
    for module, *_ in STATS.values():
        assert checks._has_cpu_kernel(module._VALUE_STATS.name()), module._VALUE_STATS


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
