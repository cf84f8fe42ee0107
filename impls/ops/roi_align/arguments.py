"""roi_align's arguments, checked once in Python before any backend runs (``core/checks.py`` for what every operator
shares). Multi-level roi_align checks its boxes with the same ``arguments``.

The values read: every box finite, every batch index whole and in ``[0, N)``, the boxes still finite once scaled
to the map; read once per call (``checks.read_stats``: on the CPU the extension's ``impls::roi_align_value_stats``,
elsewhere one device-to-host copy). Under ``torch.compile`` the graph computes the same statistics and hands them
to the opaque operator ``impls::checked_rois``, which raises the eager exception when the graph runs and returns a
copy of the boxes that the kernels then read (``crop_and_resize/arguments.py`` says why).
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch

from ...core import checks

BoxesArg = Union[torch.Tensor, Sequence[torch.Tensor]]


def arguments(input, boxes: BoxesArg, output_size, spatial_scale, sampling_ratio, aligned):
    """Validate; returns ``(rois Tensor[K, 5], pooled_height, pooled_width, spatial_scale, sampling_ratio)``.

    A list of per-image ``Tensor[L_i, 4]`` becomes rows ``(i, x1, y1, x2, y2)`` with ``torch.cat``, so a
    gradient to the list's tensors flows back through the concatenation.
    """
    checks.feature_map("input", input)
    if isinstance(boxes, (list, tuple)):
        for i, b in enumerate(boxes):
            if not isinstance(b, torch.Tensor) or b.dim() != 2 or b.shape[1] != 4:
                got = tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__
                raise ValueError(f"boxes[{i}] must be a Tensor[L, 4] of (x1, y1, x2, y2), got {got}")
            checks.like(f"boxes[{i}]", b, "input", input)
        if len(boxes) > input.shape[0]:
            raise IndexError(f"boxes is a list of {len(boxes)} tensors but input has only {input.shape[0]} images")
        rois = _list_to_rois(boxes, input)
    elif isinstance(boxes, torch.Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise ValueError(
                f"boxes must be a Tensor[K, 5] of (batch_index, x1, y1, x2, y2) or a list of Tensor[L, 4], "
                f"got shape {tuple(boxes.shape)}"
            )
        checks.like("boxes", boxes, "input", input)
        rois = boxes
    else:
        raise TypeError(f"boxes must be a Tensor[K, 5] or a list of Tensor[L, 4], got {type(boxes).__name__}")
    pooled_height, pooled_width = checks.pair("output_size", output_size)
    checks.spatial_scale(spatial_scale)
    if rois.numel():
        scale = float(spatial_scale)
        if torch.compiler.is_compiling():
            rois = checked_rois(rois, _roi_stats(rois, scale), input.shape[0], scale)
        else:
            _raise_for_rois(checks.read_stats(_VALUE_STATS, _roi_stats, rois, scale), input.shape[0], scale)
    checks.sampling_ratio(sampling_ratio)
    if not isinstance(aligned, bool):
        raise TypeError(f"aligned must be a bool, got {aligned!r}")
    return rois, pooled_height, pooled_width, float(spatial_scale), int(sampling_ratio)


def _roi_stats(rois, spatial_scale: float):
    """[5]: NaN where a value is not finite (else 0), all batch indices whole, the smallest and the largest, NaN
    where a value is not finite on the map (else 0)."""
    batch = rois[:, 0].to(torch.float64)  # min and max then stack as they are
    scaled = rois[:, 1:].to(torch.float64) * spatial_scale  # [K, 4] feature-map coordinates
    return checks.stats(checks.nan_unless_finite(rois), (batch == batch.floor()).all(), batch.min(), batch.max(),
                        checks.nan_unless_finite(scaled))


# The same statistics on CPU tensors, computed by the extension (csrc/roi_align/roi_align_value_stats_cpu.cpp).
_VALUE_STATS = checks.value_stats_op("roi_align", "(Tensor rois, float spatial_scale) -> float[]")


def _raise_for_rois(stats: list, n: int, spatial_scale: float) -> None:
    not_finite, whole, lo, hi, not_finite_scaled = stats
    if math.isnan(not_finite):
        raise ValueError("boxes must be finite; found NaN or inf")
    if not whole:
        raise ValueError("boxes[:, 0] (the batch index) must hold whole numbers")
    if lo < 0 or hi >= n:
        raise IndexError(f"boxes[:, 0] (the batch index) must be in [0, {n}), found values in [{lo:.0f}, {hi:.0f}]")
    if math.isnan(not_finite_scaled):
        raise ValueError(
            f"boxes * spatial_scale ({spatial_scale!r}) overflows to inf: the boxes are too large for this scale"
        )


@torch.library.custom_op("impls::checked_rois", mutates_args=(), tags=(torch.Tag.cudagraph_unsafe,))
def checked_rois(rois: torch.Tensor, stats: torch.Tensor, batch_size: int, spatial_scale: float) -> torch.Tensor:
    _raise_for_rois(checks.read(stats), batch_size, spatial_scale)
    return rois.clone()


@checked_rois.register_fake
def _(rois, stats, batch_size, spatial_scale):
    return torch.empty_like(rois)


checked_rois.register_autograd(lambda ctx, grad: (grad, None, None, None))


def _list_to_rois(boxes: Sequence[torch.Tensor], input: torch.Tensor) -> torch.Tensor:
    if len(boxes) == 0:
        return input.new_zeros((0, 5))
    index = torch.cat(
        [torch.full((b.shape[0], 1), i, dtype=b.dtype, device=b.device) for i, b in enumerate(boxes)]
    )  # [K, 1]
    return torch.cat([index, torch.cat(list(boxes))], dim=1)  # [K, 5]
