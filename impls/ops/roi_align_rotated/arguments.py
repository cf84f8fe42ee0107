"""Rotated roi_align's arguments, checked once in Python before any backend runs (``core/checks.py`` for what every
operator shares).

The values read: every box finite, every batch index whole and in ``[0, N)``, widths and heights >= 0 (detectron2
asserts the same; a negative side has no meaning for a centre-size box), the boxes still finite once scaled to the
map; read once per call (``checks.read_stats``: on the CPU the extension's ``impls::roi_align_rotated_value_stats``,
elsewhere one device-to-host copy). Under ``torch.compile`` the graph computes the same statistics and hands them
to the opaque operator ``impls::checked_rotated_rois``, which raises the eager exception when the graph runs and
returns a copy of the boxes that the kernels then read (``crop_and_resize/arguments.py`` says why).
"""

from __future__ import annotations

import math

import torch

from ...core import checks


def arguments(input, rois, output_size, spatial_scale, sampling_ratio, clockwise):
    """Validate; returns ``(rois Tensor[K, 6], pooled_height, pooled_width, spatial_scale, sampling_ratio)``."""
    checks.feature_map("input", input)
    if not isinstance(rois, torch.Tensor) or rois.dim() != 2 or rois.shape[1] != 6:
        got = tuple(rois.shape) if isinstance(rois, torch.Tensor) else type(rois).__name__
        raise ValueError(f"rois must be a Tensor[K, 6] of (batch_index, cx, cy, w, h, angle in degrees), got {got}")
    checks.like("rois", rois, "input", input)
    pooled_height, pooled_width = checks.pair("output_size", output_size)
    checks.spatial_scale(spatial_scale)
    if rois.numel():
        scale = float(spatial_scale)
        if torch.compiler.is_compiling():
            rois = checked_rotated_rois(rois, _rotated_stats(rois, scale), input.shape[0], scale)
        else:
            _raise_for_rotated_rois(checks.read_stats(_VALUE_STATS, _rotated_stats, rois, scale), input.shape[0],
                                   scale)
    checks.sampling_ratio(sampling_ratio)
    if not isinstance(clockwise, bool):
        raise TypeError(f"clockwise must be a bool, got {clockwise!r}")
    return rois, pooled_height, pooled_width, float(spatial_scale), int(sampling_ratio)


def _rotated_stats(rois, spatial_scale: float):
    """[6]: NaN where a value is not finite (else 0), all batch indices whole, the smallest and the largest, NaN
    where a value is not finite on the map (else 0), the smallest width or height."""
    batch = rois[:, 0].to(torch.float64)  # min and max then stack as they are
    scaled = rois[:, 1:5].to(torch.float64) * spatial_scale  # [K, 4] (cx, cy, w, h) on the map
    return checks.stats(checks.nan_unless_finite(rois), (batch == batch.floor()).all(), batch.min(), batch.max(),
                        checks.nan_unless_finite(scaled), rois[:, 3:5].min())


# The same statistics on CPU tensors, computed by the extension
# (csrc/roi_align_rotated/roi_align_rotated_value_stats_cpu.cpp).
_VALUE_STATS = checks.value_stats_op("roi_align_rotated", "(Tensor rois, float spatial_scale) -> float[]")


def _raise_for_rotated_rois(stats: list, n: int, spatial_scale: float) -> None:
    not_finite, whole, lo, hi, not_finite_scaled, smallest_side = stats
    if math.isnan(not_finite):
        raise ValueError("rois must be finite; found NaN or inf")
    if not whole:
        raise ValueError("rois[:, 0] (the batch index) must hold whole numbers")
    if lo < 0 or hi >= n:
        raise IndexError(f"rois[:, 0] (the batch index) must be in [0, {n}), found values in [{lo:.0f}, {hi:.0f}]")
    if math.isnan(not_finite_scaled):
        raise ValueError(
            f"rois * spatial_scale ({spatial_scale!r}) overflows to inf: the boxes are too large for this scale"
        )
    if smallest_side < 0:
        raise ValueError(
            f"rois[:, 3:5] (width, height) must be >= 0, found {smallest_side!r}; a box turned the other way is a "
            f"rotation of its angle by 180 degrees, not a negative size"
        )


@torch.library.custom_op("impls::checked_rotated_rois", mutates_args=(), tags=(torch.Tag.cudagraph_unsafe,))
def checked_rotated_rois(rois: torch.Tensor, stats: torch.Tensor, batch_size: int,
                         spatial_scale: float) -> torch.Tensor:
    _raise_for_rotated_rois(checks.read(stats), batch_size, spatial_scale)
    return rois.clone()


@checked_rotated_rois.register_fake
def _(rois, stats, batch_size, spatial_scale):
    return torch.empty_like(rois)


checked_rotated_rois.register_autograd(lambda ctx, grad: (grad, None, None, None))
