"""crop_and_resize's arguments, checked once in Python before any backend runs (``core/checks.py`` for what every
operator shares).

The values read: every box finite and every ``box_index`` in ``[0, N)``, once per call (``checks.read_stats``: on
the CPU the extension's ``impls::crop_and_resize_value_stats``, elsewhere one device-to-host copy). Under
``torch.compile`` a value cannot be read while tracing: the graph computes the same statistics and hands them to the
opaque operator ``impls::checked_boxes``, which raises the eager exception when the graph runs and returns a copy of
the boxes that the kernels then read, so no compiler can drop the check or run a kernel before it. It carries the
``cudagraph_unsafe`` tag, so ``mode="reduce-overhead"`` leaves it out of its CUDA graphs. Behind the check the
``cuda``, ``vectorized``, ``compiled`` and ``triton`` kernels still never read another image or out of bounds when
called directly with a bad index (NaN output, no gradient).
"""

from __future__ import annotations

import math
import numbers

import torch

from ...core import checks

METHODS = ("bilinear", "nearest")


def arguments(image, boxes, box_index, crop_size, method, extrapolation_value):
    """Validate; returns ``(boxes, box_index as int64, crop_height, crop_width, extrapolation_value as float)``.

    Under ``torch.compile`` the returned boxes are the value check's copy (module docstring); the kernels must
    read those."""
    checks.feature_map("image", image)
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        got = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise ValueError(f"boxes must be a Tensor[K, 4] of normalized (y1, x1, y2, x2), got {got}")
    checks.like("boxes", boxes, "image", image)
    if not isinstance(box_index, torch.Tensor) or box_index.dim() != 1:
        got = tuple(box_index.shape) if isinstance(box_index, torch.Tensor) else type(box_index).__name__
        raise ValueError(f"box_index must be a Tensor[K] of image indices, got {got}")
    if box_index.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"box_index must be int32 or int64, got {box_index.dtype}; use box_index.long()")
    if box_index.device != image.device:
        raise ValueError(f"box_index is on {box_index.device} but image is on {image.device}; move it")
    if box_index.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"box_index has {box_index.shape[0]} entries but boxes has {boxes.shape[0]} rows; give one per box"
        )
    if box_index.numel():
        if torch.compiler.is_compiling():
            boxes = checked_boxes(boxes, _box_stats(boxes, box_index), image.shape[0])
        else:
            _raise_for_boxes(checks.read_stats(_VALUE_STATS, _box_stats, boxes, box_index), image.shape[0])
    crop_height, crop_width = checks.pair("crop_size", crop_size)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(extrapolation_value, numbers.Real):
        raise TypeError(f"extrapolation_value must be a number, got {type(extrapolation_value).__name__}")
    return boxes, box_index.long(), crop_height, crop_width, float(extrapolation_value)


def _box_stats(boxes, box_index):
    """[3]: NaN where a box is not finite (else 0), the smallest and the largest image index."""
    return checks.stats(checks.nan_unless_finite(boxes), box_index.min(), box_index.max())


# The same statistics on CPU tensors, computed by the extension (csrc/crop_and_resize/..._value_stats_cpu.cpp).
_VALUE_STATS = checks.value_stats_op("crop_and_resize", "(Tensor boxes, Tensor box_index) -> float[]")


def _raise_for_boxes(stats: list, n: int) -> None:
    not_finite, lo, hi = stats
    if lo < 0 or hi >= n:
        raise IndexError(f"box_index must be in [0, {n}) (the image batch size), found values in [{lo:.0f}, {hi:.0f}]")
    if math.isnan(not_finite):
        raise ValueError("boxes must be finite; found NaN or inf")


@torch.library.custom_op("impls::checked_boxes", mutates_args=(), tags=(torch.Tag.cudagraph_unsafe,))
def checked_boxes(boxes: torch.Tensor, stats: torch.Tensor, batch_size: int) -> torch.Tensor:
    _raise_for_boxes(checks.read(stats), batch_size)
    return boxes.clone()


@checked_boxes.register_fake
def _(boxes, stats, batch_size):
    return torch.empty_like(boxes)


checked_boxes.register_autograd(lambda ctx, grad: (grad, None, None))
