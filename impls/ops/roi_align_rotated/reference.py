"""``reference`` for roi_align_rotated: plain Python scalar loops, the oracle every other backend is checked against.

Detectron2's ``ROIAlignRotated`` (always "aligned": the box centre moves by -0.5 map pixel after scaling), with the
angle in degrees, counter-clockwise (``clockwise=True`` negates it), and gradients to the boxes as well
(``CONVENTIONS.md §3b``). Each output bin averages a ``grid_h x grid_w`` grid of bilinear samples taken on the
rotated box; the bilinear rule and its border are roi_align's (torchvision's clamp, ``CONVENTIONS.md §3.3``).

Cost: about a microsecond per bilinear tap per channel; tiny maps only. All arithmetic is on Python floats (IEEE
double), and every expression is written in the order ``csrc/roi_align_rotated/rotated_geometry.h`` and the
``cpp`` kernels evaluate it (``math.cos``/``math.sin`` are the C library's, as ``std::cos``/``std::sin``), so that
``cpp`` float64 equals this module bit for bit. Loop order: box, channel, output cell, sample (iy, ix), corner.
A box's in-range samples (pixels, weights, position derivatives) do not depend on the channel: they are listed once
per box (``_box_samples``) and every kernel walks that list.

A box whose batch column does not truncate to an image of the batch raises ``IndexError`` with the ``cpp``
kernels' message (the public op rejects it earlier; a direct caller of the kernels may not).
"""

from __future__ import annotations

import math

import torch

from ...core.registry import OpKernels
from ..roi_align import reference as roi_reference
from ..roi_align.reference import _roi_corner, _roi_in_range

# d theta / d angle: the angle is in degrees.
_RADIANS_PER_DEGREE = math.pi / 180.0


def _geometry(roi, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise):
    """Per-box constants, as ``rotated_geometry`` in rotated_geometry.h: ``(n, cy, cx, cos, sin, start_h, start_w,
    bin_h, bin_w, grid_h, grid_w, count, dtheta)`` with ``dtheta`` = d theta / d angle (radians per degree, negated
    when clockwise)."""
    n = int(roi[0])
    cx = roi[1] * spatial_scale - 0.5
    cy = roi[2] * spatial_scale - 0.5
    w = roi[3] * spatial_scale
    h = roi[4] * spatial_scale
    theta = roi[5] * math.pi / 180.0
    dtheta = _RADIANS_PER_DEGREE
    if clockwise:
        theta = -theta
        dtheta = -dtheta
    cos_t = math.cos(theta)
    sin_t = math.sin(theta)
    start_h = -h / 2.0
    start_w = -w / 2.0
    bin_h = h / pooled_height
    bin_w = w / pooled_width
    grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(h / pooled_height)
    grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(w / pooled_width)
    count = max(grid_h * grid_w, 1)
    return n, cy, cx, cos_t, sin_t, start_h, start_w, bin_h, bin_w, grid_h, grid_w, count, dtheta


def _box_offset(start: float, p: int, bin_size: float, i: int, grid: int) -> float:
    """Sample i of bin p along one box axis, relative to the box centre (roi_align's ``roi_sample``)."""
    return start + p * bin_size + (i + 0.5) * bin_size / grid


def _box_fraction(p: int, i: int, grid: int, pooled: int) -> float:
    """Sample i of bin p as a fraction of the box side, relative to the centre (-0.5 .. 0.5): offset = side * it."""
    return (p + (i + 0.5) / grid) / pooled - 0.5


class _Sample:
    """One in-range sample: its four pixels and weights, whether each coordinate moves with the box, and the
    derivatives of its position (y, x) with respect to (w, h, angle); d y / d cy = d x / d cx = spatial_scale."""

    __slots__ = ("y_low", "y_high", "ly", "hy", "y_moves", "x_low", "x_high", "lx", "hx", "x_moves",
                 "dy_dw", "dy_dh", "dy_da", "dx_dw", "dx_dh", "dx_da")

    def __init__(self, **kw):
        for name, value in kw.items():
            setattr(self, name, value)


def _box_samples(roi, H, W, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise):
    """One box: ``(n, count, samples)``, ``samples[ph][pw]`` the bin's in-range samples in (iy, ix) order."""
    n, cy, cx, cos_t, sin_t, start_h, start_w, bin_h, bin_w, grid_h, grid_w, count, dtheta = _geometry(
        roi, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise
    )
    samples = [[[] for _ in range(pooled_width)] for _ in range(pooled_height)]
    for ph in range(pooled_height):
        for pw in range(pooled_width):
            for iy in range(grid_h):
                yy = _box_offset(start_h, ph, bin_h, iy, grid_h)
                for ix in range(grid_w):
                    xx = _box_offset(start_w, pw, bin_w, ix, grid_w)
                    y = yy * cos_t - xx * sin_t + cy
                    x = yy * sin_t + xx * cos_t + cx
                    if not _roi_in_range(y, x, H, W):
                        continue
                    y_low, y_high, ly, y_moves = _roi_corner(y, H)
                    x_low, x_high, lx, x_moves = _roi_corner(x, W)
                    # yy = h_s * fy and xx = w_s * fx, with h_s = h * spatial_scale: d yy / d h = spatial_scale * fy.
                    sy = spatial_scale * _box_fraction(ph, iy, grid_h, pooled_height)
                    sx = spatial_scale * _box_fraction(pw, ix, grid_w, pooled_width)
                    samples[ph][pw].append(_Sample(
                        y_low=y_low, y_high=y_high, ly=ly, hy=1.0 - ly, y_moves=y_moves,
                        x_low=x_low, x_high=x_high, lx=lx, hx=1.0 - lx, x_moves=x_moves,
                        dy_dw=-(sx * sin_t), dy_dh=sy * cos_t, dy_da=-(yy * sin_t + xx * cos_t) * dtheta,
                        dx_dw=sx * cos_t, dx_dh=sy * sin_t, dx_da=(yy * cos_t - xx * sin_t) * dtheta,
                    ))
    return n, count, samples


def forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise):
    """``input (Tensor[N, C, H, W])``, ``rois (Tensor[K, 6])`` rows ``(batch_index, cx, cy, w, h, angle_degrees)``.
    Returns ``Tensor[K, C, PH, PW]`` in the input's dtype and memory format."""
    return roi_reference.pooled_forward(_box_samples, input, rois, spatial_scale, pooled_height, pooled_width,
                                        sampling_ratio, clockwise)


def backward_input(
    grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width, sampling_ratio,
    clockwise,
):
    """The input gradient, ``Tensor[N, C, H, W]`` in ``grad``'s dtype and memory format: each in-range sample's
    four taps get ``g * weight / count``."""
    return roi_reference.pooled_backward_input(_box_samples, grad, rois, spatial_scale, pooled_height, pooled_width,
                                               batch_size, channels, height, width, sampling_ratio, clockwise)


def backward_boxes(grad, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise):
    """The box gradient, ``Tensor[K, 6]`` in the rois' dtype: column 0 gets 0, columns 1..5 d out / d (cx, cy, w,
    h, angle in degrees) with the grid held fixed. A clamped coordinate contributes nothing along its axis."""
    N, C, H, W = input.shape
    img = input.double().tolist()
    g_roi = [[0.0] * 6 for _ in range(rois.shape[0])]
    for k, n, c, g, count, samples in roi_reference.bins(
        _box_samples, rois, grad, N, C, H, W, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise
    ):
        plane = img[n][c]
        d = g_roi[k]
        for s in samples:
            v1, v2 = plane[s.y_low][s.x_low], plane[s.y_low][s.x_high]
            v3, v4 = plane[s.y_high][s.x_low], plane[s.y_high][s.x_high]
            if s.y_moves:
                gy = g * (s.hx * (v3 - v1) + s.lx * (v4 - v2)) / count
                d[2] += gy * spatial_scale
                d[3] += gy * s.dy_dw
                d[4] += gy * s.dy_dh
                d[5] += gy * s.dy_da
            if s.x_moves:
                gx = g * (s.hy * (v2 - v1) + s.ly * (v4 - v3)) / count
                d[1] += gx * spatial_scale
                d[3] += gx * s.dx_dw
                d[4] += gx * s.dx_dh
                d[5] += gx * s.dx_da
    return torch.tensor(g_roi, dtype=rois.dtype).reshape(-1, 6)


KERNELS = OpKernels(forward, backward_input, backward_boxes)
