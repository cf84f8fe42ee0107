"""roi_align's ``reference`` kernels: plain Python scalar loops, the oracle every other backend is checked against
(CONVENTIONS.md §3): a grid of bilinear samples averaged per bin, with torchvision's clamping rule.

Cost: roughly a microsecond per sample per channel; tiny inputs only. All arithmetic is on Python floats (IEEE
double), every expression in the order ``csrc/roi_align/`` evaluates it, so float64 results of ``reference`` and
``cpp`` compare bit for bit. Loop order: box, channel, output cell, sample; a box's in-range samples are listed
once per box (``_roi_samples``) and every kernel walks that list. The batch column is a float taken by truncation,
as in C++: valid when ``-1 < b < N``; another raises ``IndexError`` with the ``cpp`` kernels' message.
"""


from __future__ import annotations

import dataclasses
import math

import torch

from ...core import layout as _layout
from ...core.registry import OpKernels


def _roi_corner(v: float, size: int) -> tuple[int, int, float, bool]:
    """torchvision's clamp of one in-range coordinate: (low, high, fraction, moves_with_v).

    ``moves_with_v`` is False where the coordinate was clamped (v <= 0 or beyond the last pixel), so its
    derivative with respect to the box is zero there.
    """
    moves = True
    if v <= 0:
        v = 0.0
        moves = False
    low = int(v)
    if low >= size - 1:
        low = high = size - 1
        v = float(low)
        moves = False
    else:
        high = low + 1
    return low, high, v - low, moves


def _roi_rows(rois, N: int) -> list[list[float]]:
    """The rows of ``rois`` as Python floats, after checking that each batch column truncates to one of the ``N``
    images (``-1 < b < N``; NaN is not)."""
    rs = rois.double().tolist()
    for k, roi in enumerate(rs):
        if not -1.0 < roi[0] < N:
            raise IndexError(f"rois[{k}, 0] = {roi[0]} is not a batch index in [0, {N})")
    return rs


def _roi_geometry(roi, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    """Per-box constants: batch index, start, bin size, grid, sample count, and whether the size was clamped."""
    offset = 0.5 if aligned else 0.0
    n = int(roi[0])
    x_start = roi[1] * spatial_scale - offset
    y_start = roi[2] * spatial_scale - offset
    roi_w = roi[3] * spatial_scale - offset - x_start
    roi_h = roi[4] * spatial_scale - offset - y_start
    w_clamped = h_clamped = False
    if not aligned:
        # torchvision forces malformed boxes to 1x1; then the size no longer depends on the box.
        if roi_w < 1.0:
            roi_w, w_clamped = 1.0, True
        if roi_h < 1.0:
            roi_h, h_clamped = 1.0, True
    bin_h = roi_h / pooled_height
    bin_w = roi_w / pooled_width
    grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / pooled_height)
    grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / pooled_width)
    count = max(grid_h * grid_w, 1)
    return n, y_start, x_start, bin_h, bin_w, grid_h, grid_w, count, h_clamped, w_clamped


def _roi_sample(start: float, p: int, bin_size: float, i: int, grid: int) -> float:
    return start + p * bin_size + (i + 0.5) * bin_size / grid


def _roi_position(p: int, i: int, grid: int, pooled: int, clamped: bool) -> float:
    """Where sample i of bin p sits along the box, 0 at its start and 1 at its end: d sample / d end."""
    if clamped:
        return 0.0
    return (p + (i + 0.5) / grid) / pooled


def _roi_in_range(y: float, x: float, H: int, W: int) -> bool:
    return -1.0 <= y <= H and -1.0 <= x <= W  # NaN compares False: an out-of-range sample


@dataclasses.dataclass(frozen=True)
class _RoiSample:
    """One in-range sample of a bin: its four pixels, weights, whether each coordinate moves with the box, and
    where it sits along the box (``_roi_position``) on each axis."""

    y_low: int
    y_high: int
    ly: float
    hy: float
    y_moves: bool
    ay: float
    x_low: int
    x_high: int
    lx: float
    hx: float
    x_moves: bool
    ax: float


def _roi_samples(roi, H, W, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    """One box: ``(n, count, samples)`` with ``samples[ph][pw]`` the bin's in-range samples in (iy, ix) order."""
    n, y_start, x_start, bin_h, bin_w, grid_h, grid_w, count, h_clamped, w_clamped = _roi_geometry(
        roi, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned
    )
    samples = [[[] for _ in range(pooled_width)] for _ in range(pooled_height)]
    for ph in range(pooled_height):
        for pw in range(pooled_width):
            for iy in range(grid_h):
                y = _roi_sample(y_start, ph, bin_h, iy, grid_h)
                for ix in range(grid_w):
                    x = _roi_sample(x_start, pw, bin_w, ix, grid_w)
                    if not _roi_in_range(y, x, H, W):
                        continue
                    y_low, y_high, ly, y_moves = _roi_corner(y, H)
                    x_low, x_high, lx, x_moves = _roi_corner(x, W)
                    samples[ph][pw].append(_RoiSample(
                        y_low, y_high, ly, 1.0 - ly, y_moves,
                        _roi_position(ph, iy, grid_h, pooled_height, h_clamped),
                        x_low, x_high, lx, 1.0 - lx, x_moves,
                        _roi_position(pw, ix, grid_w, pooled_width, w_clamped),
                    ))
    return n, count, samples


def bins(samples_of, rois, grad, N, C, H, W, spatial_scale, pooled_height, pooled_width, sampling_ratio, flag):
    """Every (box, channel, bin) in the reference's order, with the bin's incoming gradient:
    ``(k, n, c, g, count, samples)``, ``samples`` the bin's in-range samples as ``samples_of`` lists them
    (``_roi_samples`` here; roi_align_rotated's reference lists its rotated samples, ``flag`` its ``clockwise``)."""
    rs = _roi_rows(rois, N)
    g_out = grad.double().tolist()
    for k in range(len(rs)):
        n, count, samples = samples_of(
            rs[k], H, W, spatial_scale, pooled_height, pooled_width, sampling_ratio, flag
        )
        for c in range(C):
            for ph in range(pooled_height):
                for pw in range(pooled_width):
                    yield k, n, c, g_out[k][c][ph][pw], count, samples[ph][pw]


def pooled_forward(samples_of, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, flag):
    """Each bin's mean of its samples as ``samples_of`` lists them (see ``bins``)."""
    N, C, H, W = input.shape
    K = rois.shape[0]
    img = input.double().tolist()
    rs = _roi_rows(rois, N)
    out = [[[[0.0] * pooled_width for _ in range(pooled_height)] for _ in range(C)] for _ in range(K)]
    for k in range(K):
        n, count, samples = samples_of(
            rs[k], H, W, spatial_scale, pooled_height, pooled_width, sampling_ratio, flag
        )
        for c in range(C):
            plane = img[n][c]
            for ph in range(pooled_height):
                for pw in range(pooled_width):
                    acc = 0.0
                    for s in samples[ph][pw]:
                        w1, w2, w3, w4 = s.hy * s.hx, s.hy * s.lx, s.ly * s.hx, s.ly * s.lx
                        acc += (
                            w1 * plane[s.y_low][s.x_low]
                            + w2 * plane[s.y_low][s.x_high]
                            + w3 * plane[s.y_high][s.x_low]
                            + w4 * plane[s.y_high][s.x_high]
                        )
                    out[k][c][ph][pw] = acc / count
    return _layout.like(torch.tensor(out, dtype=input.dtype).reshape(K, C, pooled_height, pooled_width), input)


def pooled_backward_input(samples_of, grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels,
                          height, width, sampling_ratio, flag):
    """The transpose of ``pooled_forward``: each sample's four taps get ``g * weight / count``."""
    N, C, H, W = batch_size, channels, height, width
    g_img = [[[[0.0] * W for _ in range(H)] for _ in range(C)] for _ in range(N)]
    for _, n, c, g, count, samples in bins(
        samples_of, rois, grad, N, C, H, W, spatial_scale, pooled_height, pooled_width, sampling_ratio, flag
    ):
        g_plane = g_img[n][c]
        for s in samples:
            g_plane[s.y_low][s.x_low] += g * (s.hy * s.hx) / count
            g_plane[s.y_low][s.x_high] += g * (s.hy * s.lx) / count
            g_plane[s.y_high][s.x_low] += g * (s.ly * s.hx) / count
            g_plane[s.y_high][s.x_high] += g * (s.ly * s.lx) / count
    return _layout.like(torch.tensor(g_img, dtype=grad.dtype).reshape(N, C, H, W), grad)


def forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    return pooled_forward(_roi_samples, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio,
                          aligned)


def backward_input(
    grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width, sampling_ratio,
    aligned,
):
    return pooled_backward_input(_roi_samples, grad, rois, spatial_scale, pooled_height, pooled_width, batch_size,
                                 channels, height, width, sampling_ratio, aligned)


def backward_boxes(
    grad, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned
):
    N, C, H, W = input.shape
    img = input.double().tolist()
    g_roi = [[0.0] * 5 for _ in range(rois.shape[0])]
    for k, n, c, g, count, samples in bins(
        _roi_samples, rois, grad, N, C, H, W, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned
    ):
        plane = img[n][c]
        for s in samples:
            v1, v2 = plane[s.y_low][s.x_low], plane[s.y_low][s.x_high]
            v3, v4 = plane[s.y_high][s.x_low], plane[s.y_high][s.x_high]
            if s.y_moves:
                gy = g * (s.hx * (v3 - v1) + s.lx * (v4 - v2)) / count
                g_roi[k][2] += gy * (spatial_scale * (1.0 - s.ay))
                g_roi[k][4] += gy * (spatial_scale * s.ay)
            if s.x_moves:
                gx = g * (s.hy * (v2 - v1) + s.ly * (v4 - v3)) / count
                g_roi[k][1] += gx * (spatial_scale * (1.0 - s.ax))
                g_roi[k][3] += gx * (spatial_scale * s.ax)
    return torch.tensor(g_roi, dtype=rois.dtype).reshape(-1, 5)


KERNELS = OpKernels(forward, backward_input, backward_boxes)
