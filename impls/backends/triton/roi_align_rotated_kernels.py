"""roi_align_rotated as hand-written Triton kernels, and their launch functions (the signatures of ``SPEC.md``).

What it mirrors: the roi_align kernels of ``kernels.py`` and their launch in ``launcher.py`` (tile, block sizes,
dtype rules, in-place reads through strides), with the sampling of ``SPEC.md``: detectron2's ROIAlignRotated,
always aligned. The sampling is not separable, so each lane computes its sample's rotated position itself, in
float64 from per-box geometry (``yy*cos - xx*sin + cy_s``, ``yy*sin + xx*cos + cx_s``); the per-box constants come
from the host as a float64 table (``_geometry_table``: a Python float kernel argument would reach a GPU kernel as
float32), built by ``vectorized.box_geometry``, so this backend and ``vectorized`` place every sample at the same
float64 position.

The passes (lanes: ``[BLOCK_K, BLOCK_E]`` tiles of boxes x output elements ``e = c * PH*PW + cell``):

* forward: one output element per lane, the loop over the box's ``grid_h x grid_w`` samples; a tile's loops run to
  its largest grid and a lane masks the samples beyond its own box's grid;
* image gradient, by default: the forward's loops, each in-range sample adding its four taps with
  ``tl.atomic_add`` into a zeroed buffer of the compute dtype (float32 for half types, rounded once at the end).
  The order of the adds is not fixed, so the last bits may change from run to run;
* image gradient under ``torch.use_deterministic_algorithms(True)``: roi_align's sorted gather with a rotated
  first step. ``roi_align_rotated_taps_kernel`` lists every sample's four taps once, without the channel, in the
  reference's order (box, cell, iy, ix, corner); ``launcher._gather`` sorts the list by pixel, stably, and its
  ``gather_taps_kernel`` sums each gradient element's entries in that order (contribution ``(g * (hy * hx)) /
  count``, the atomic kernel's expression): the same bits every run, float64 the reference's bits. A fixed
  sampling_ratio gives every box ``cells * ratio^2`` slots; the adaptive grid's total is read back to the host
  once (no CUDA graph may hold that pass);
* box gradient: ``BLOCK_K`` boxes per program, each lane accumulating over a loop of tiles, then one ``tl.sum`` per
  row and column: a fixed reduction, deterministic.

Precision: ``COMPUTE`` is float64 for float64 and float32 for float32 and the half types; positions are float64
for every dtype (as roi_align, CONVENTIONS.md §6); weights and sums in ``COMPUTE``; every division through
``kernels._div`` (IEEE on a GPU); launched with ``enable_fp_fusion=False`` so no multiply-add is fused.

Runs on a CUDA GPU, or on the CPU under ``TRITON_INTERPRET=1`` set before triton is imported (as the rest of the
``triton`` backend: ``launcher.DEVICE``). Written and checked on a CPU under the interpreter only: compilation by
GPU Triton (float64 arithmetic, float64 ``tl.atomic_add``) is not checked here.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from impls.core import layout as _layout
from impls.ops.roi_align_rotated.vectorized import box_geometry

from .kernels import _div, _element, _roi_corner, _store_taps, _tile
from .launcher import _blocks, _check_device, _compute, _gather, _launch, _sample_slots, _strides, _tap_entries

# Rows of the geometry table (float64 [ROWS, K], one column per box).
BATCH = 0  # image index as a float; -1 for a box that may not be read
CX_S = 1  # cx * scale - 0.5
CY_S = 2
START_H = 3  # -h_s / 2
START_W = 4
BIN_H = 5  # h_s / PH
BIN_W = 6
COS = 7  # cos(theta), theta negated when clockwise
SIN = 8
GRID_H = 9  # samples per bin side (sampling_ratio or ceil(h_s / PH)); 0 for a box not read
GRID_W = 10
COUNT = 11  # max(grid_h * grid_w, 1)
SCALE = 12  # spatial_scale
PER_DEGREE = 13  # d theta / d angle: pi / 180, negated when clockwise
ROWS = 14

G_BATCH = tl.constexpr(BATCH)
G_CX_S = tl.constexpr(CX_S)
G_CY_S = tl.constexpr(CY_S)
G_START_H = tl.constexpr(START_H)
G_START_W = tl.constexpr(START_W)
G_BIN_H = tl.constexpr(BIN_H)
G_BIN_W = tl.constexpr(BIN_W)
G_COS = tl.constexpr(COS)
G_SIN = tl.constexpr(SIN)
G_GRID_H = tl.constexpr(GRID_H)
G_GRID_W = tl.constexpr(GRID_W)
G_COUNT = tl.constexpr(COUNT)
G_SCALE = tl.constexpr(SCALE)
G_PER_DEGREE = tl.constexpr(PER_DEGREE)

# Sizes vary from call to call: not specialized on them, a kernel compiles once per dtype and tile shape.
SIZES = ("K", "N", "C", "H", "W", "PH", "PW")


# ------------------------------------------------------------------------------------------------ kernels


@triton.jit
def _box(geometry, k, rows, K, N, COMPUTE: tl.constexpr):
    """Box k's table column ([BLOCK_K, 1] each): image n, whether it may be read, the float64 geometry, the grid
    (int64, 0 for a box not read) and the bin mean's divisor (COMPUTE)."""
    geo = geometry + k  # geometry: float64 [ROWS, K]
    batch = tl.load(geo + G_BATCH * K, mask=rows, other=-1.0)
    ok = rows & (batch >= 0) & (batch < N)
    n = tl.where(ok, batch, 0.0).to(tl.int64)
    cx_s = tl.load(geo + G_CX_S * K, mask=rows, other=0.0)
    cy_s = tl.load(geo + G_CY_S * K, mask=rows, other=0.0)
    start_h = tl.load(geo + G_START_H * K, mask=rows, other=0.0)
    start_w = tl.load(geo + G_START_W * K, mask=rows, other=0.0)
    bin_h = tl.load(geo + G_BIN_H * K, mask=rows, other=0.0)
    bin_w = tl.load(geo + G_BIN_W * K, mask=rows, other=0.0)
    cos = tl.load(geo + G_COS * K, mask=rows, other=1.0)
    sin = tl.load(geo + G_SIN * K, mask=rows, other=0.0)
    grid_h = tl.where(ok, tl.load(geo + G_GRID_H * K, mask=rows, other=0.0), 0.0).to(tl.int64)
    grid_w = tl.where(ok, tl.load(geo + G_GRID_W * K, mask=rows, other=0.0), 0.0).to(tl.int64)
    count = tl.load(geo + G_COUNT * K, mask=rows, other=1.0).to(COMPUTE)
    return n, ok, cx_s, cy_s, start_h, start_w, bin_h, bin_w, cos, sin, grid_h, grid_w, count


@triton.jit
def _offset(start, p, bin_size, i, grid):
    """SPEC.md's box-frame offset of sample i of bin p in float64, left to right: ``start + p*bin + (i +
    0.5)*bin/grid``; ``grid`` kept >= 1 (a lane with grid 0 uses no sample)."""
    return start + tl.cast(p, tl.float64) * bin_size + (tl.cast(i, tl.float64) + 0.5) * bin_size / tl.cast(
        tl.maximum(grid, 1), tl.float64)


@triton.jit
def _position(yy, xx, cos, sin, cy_s, cx_s):
    """The image position (y, x) of the sample at box-frame offset (yy, xx): rotated by the box's angle about its
    centre, in float64."""
    return yy * cos - xx * sin + cy_s, yy * sin + xx * cos + cx_s


@triton.jit
def _in_map(y, x, H, W):
    """Whether a sample at (y, x) reads the map: inside [-1, H] x [-1, W] (NaN: False)."""
    return (y >= -1) & (y <= H) & (x >= -1) & (x <= W)


@triton.jit
def _fraction(p, i, grid, P):
    """a_y (a_x): the sample's offset over the box's side, ``(p + (i + 0.5)/grid)/P - 0.5``, in float64."""
    along = tl.cast(p, tl.float64) + (tl.cast(i, tl.float64) + 0.5) / tl.cast(tl.maximum(grid, 1), tl.float64)
    return along / P - 0.5


@triton.jit(do_not_specialize=SIZES)
def roi_align_rotated_forward_kernel(
    input, geometry, out,
    K, N, C, H, W, PH, PW,
    s_n, s_c, s_h, s_w,  # input strides, in elements: any layout is read in place
    o_k, o_c, o_h, o_w,  # out strides: NCHW or channels_last, written in place
    COMPUTE: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_E: tl.constexpr,
):
    """out[k, c, ph, pw] ([K, C, PH, PW]): the mean of the bin's grid_h x grid_w rotated bilinear samples."""
    cells = PH * PW
    k, e, rows, lanes = _tile(K, C, cells, BLOCK_K, BLOCK_E)
    c, ph, pw = _element(e, cells, PW)
    n, ok, cx_s, cy_s, start_h, start_w, bin_h, bin_w, cos, sin, grid_h, grid_w, count = _box(
        geometry, k, rows, K, N, COMPUTE)
    plane = input + n * s_n + c * s_c
    acc = tl.zeros([BLOCK_K, BLOCK_E], COMPUTE)
    for iy in range(0, tl.max(grid_h)):
        yy = _offset(start_h, ph, bin_h, iy, grid_h)  # float64 [BLOCK_K, BLOCK_E]
        for ix in range(0, tl.max(grid_w)):
            xx = _offset(start_w, pw, bin_w, ix, grid_w)
            y, x = _position(yy, xx, cos, sin, cy_s, cx_s)
            inside = (iy < grid_h) & (ix < grid_w) & _in_map(y, x, H, W)
            y_low, y_high, ly, hy, _ = _roi_corner(y, inside, H, COMPUTE)
            x_low, x_high, lx, hx, _ = _roi_corner(x, inside, W, COMPUTE)
            take = lanes & ok & inside
            v1 = tl.load(plane + y_low * s_h + x_low * s_w, mask=take, other=0).to(COMPUTE)
            v2 = tl.load(plane + y_low * s_h + x_high * s_w, mask=take, other=0).to(COMPUTE)
            v3 = tl.load(plane + y_high * s_h + x_low * s_w, mask=take, other=0).to(COMPUTE)
            v4 = tl.load(plane + y_high * s_h + x_high * s_w, mask=take, other=0).to(COMPUTE)
            acc += tl.where(take, hy * hx * v1 + hy * lx * v2 + ly * hx * v3 + ly * lx * v4, 0.0)
    value = tl.where(ok, _div(acc, count), float("nan"))
    tl.store(out + k.to(tl.int64) * o_k + c * o_c + ph * o_h + pw * o_w, value.to(out.dtype.element_ty), mask=lanes)


@triton.jit(do_not_specialize=SIZES)
def roi_align_rotated_image_grad_atomic_kernel(
    grad, geometry, grad_input,
    K, N, C, H, W, PH, PW,
    g_k, g_c, g_h, g_w,  # grad strides (an expanded or permuted grad is read in place)
    b_n, b_c, b_h, b_w,  # grad_input strides (NCHW or channels_last)
    COMPUTE: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_E: tl.constexpr,
):
    """grad_input ([N, C, H, W] of COMPUTE, zeroed) += (g * w) / count for each of an in-range sample's four taps,
    added atomically (``sem="relaxed"``: the adds need no ordering among themselves)."""
    cells = PH * PW
    k, e, rows, lanes = _tile(K, C, cells, BLOCK_K, BLOCK_E)
    c, ph, pw = _element(e, cells, PW)
    n, ok, cx_s, cy_s, start_h, start_w, bin_h, bin_w, cos, sin, grid_h, grid_w, count = _box(
        geometry, k, rows, K, N, COMPUTE)
    g = tl.load(grad + k * g_k + c * g_c + ph * g_h + pw * g_w, mask=lanes & ok, other=0).to(COMPUTE)
    plane = grad_input + n * b_n + c * b_c
    for iy in range(0, tl.max(grid_h)):
        yy = _offset(start_h, ph, bin_h, iy, grid_h)
        for ix in range(0, tl.max(grid_w)):
            xx = _offset(start_w, pw, bin_w, ix, grid_w)
            y, x = _position(yy, xx, cos, sin, cy_s, cx_s)
            inside = (iy < grid_h) & (ix < grid_w) & _in_map(y, x, H, W)
            y_low, y_high, ly, hy, _ = _roi_corner(y, inside, H, COMPUTE)
            x_low, x_high, lx, hx, _ = _roi_corner(x, inside, W, COMPUTE)
            take = lanes & ok & inside
            low_row = plane + y_low * b_h
            high_row = plane + y_high * b_h
            tl.atomic_add(low_row + x_low * b_w, _div(g * (hy * hx), count), mask=take, sem="relaxed")
            tl.atomic_add(low_row + x_high * b_w, _div(g * (hy * lx), count), mask=take, sem="relaxed")
            tl.atomic_add(high_row + x_low * b_w, _div(g * (ly * hx), count), mask=take, sem="relaxed")
            tl.atomic_add(high_row + x_high * b_w, _div(g * (ly * lx), count), mask=take, sem="relaxed")


@triton.jit(do_not_specialize=("K", "N", "H", "W", "PH", "PW"))
def roi_align_rotated_taps_kernel(
    geometry, first_sample, pixel, cell_of, weight_a, weight_b,
    K, N, H, W, PH, PW,
    COMPUTE: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_E: tl.constexpr,
):
    """Deterministic image gradient, step 1 (``kernels.roi_align_taps_kernel`` with the rotated sampling): the
    four taps of every sample of every box, without the channel. Box k's samples are numbered from
    first_sample[k] in the reference's order (cell, iy, ix); entry 4 * sample + corner, corners (low, low),
    (low, high), (high, low), (high, high) in (y, x); a tap's pixel is n*H*W + y*W + x, -1 for a sample out of
    range. Here e is the cell."""
    cells = PH * PW
    k, e, rows, lanes = _tile(K, 1, cells, BLOCK_K, BLOCK_E)
    ph = e // PW
    pw = e % PW
    n, ok, cx_s, cy_s, start_h, start_w, bin_h, bin_w, cos, sin, grid_h, grid_w, count = _box(
        geometry, k, rows, K, N, COMPUTE)
    first = tl.load(first_sample + k, mask=rows, other=0)  # [BLOCK_K, 1] int64
    out_cell = k.to(tl.int64) * cells + e
    base = n * H * W
    for iy in range(0, tl.max(grid_h)):
        yy = _offset(start_h, ph, bin_h, iy, grid_h)
        for ix in range(0, tl.max(grid_w)):
            xx = _offset(start_w, pw, bin_w, ix, grid_w)
            y, x = _position(yy, xx, cos, sin, cy_s, cx_s)
            exists = lanes & ok & (iy < grid_h) & (ix < grid_w)  # the sample is in the box's grid: write it
            take = exists & _in_map(y, x, H, W)  # and it is in range: it has taps
            y_low, y_high, ly, hy, _ = _roi_corner(y, take, H, COMPUTE)
            x_low, x_high, lx, hx, _ = _roi_corner(x, take, W, COMPUTE)
            entry = (first + (e * grid_h + iy) * grid_w + ix) * 4
            _store_taps(pixel, cell_of, weight_a, weight_b, entry, exists, take, base, W, y_low, y_high, ly, hy,
                        x_low, x_high, lx, hx, out_cell, count, COMPUTE, BLOCK_K, BLOCK_E)


@triton.jit(do_not_specialize=SIZES)
def roi_align_rotated_boxes_grad_kernel(
    grad, input, geometry, grad_rois,
    K, N, C, H, W, PH, PW,
    s_n, s_c, s_h, s_w,
    g_k, g_c, g_h, g_w,
    COMPUTE: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_E: tl.constexpr,
):
    """grad_rois (contiguous [K, 6], zeroed; column 0, the batch index, stays 0) for BLOCK_K boxes per program:
    d out / d (cx, cy, w, h, angle in degrees) by SPEC.md's chain rule, the grid held fixed; a sample that reads 0
    adds nothing, and an axis clamped to the border adds nothing along it. Each lane accumulates over the loop
    of tiles, then one tl.sum per row: deterministic."""
    cells = PH * PW
    k = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)[:, None]
    rows = k < K
    n, ok, cx_s, cy_s, start_h, start_w, bin_h, bin_w, cos, sin, grid_h, grid_w, count = _box(
        geometry, k, rows, K, N, COMPUTE)
    scale = tl.load(geometry + G_SCALE * K + k, mask=rows, other=0.0)  # float64 [BLOCK_K, 1]
    per_degree = tl.load(geometry + G_PER_DEGREE * K + k, mask=rows, other=0.0)
    d_cx = tl.zeros([BLOCK_K, BLOCK_E], COMPUTE)
    d_cy = tl.zeros([BLOCK_K, BLOCK_E], COMPUTE)
    d_w = tl.zeros([BLOCK_K, BLOCK_E], COMPUTE)
    d_h = tl.zeros([BLOCK_K, BLOCK_E], COMPUTE)
    d_angle = tl.zeros([BLOCK_K, BLOCK_E], COMPUTE)
    for start in range(0, C * cells, BLOCK_E):
        e = start + tl.arange(0, BLOCK_E)[None, :]
        lanes = rows & ok & (e < C * cells)
        c, ph, pw = _element(e, cells, PW)
        g = tl.load(grad + k * g_k + c * g_c + ph * g_h + pw * g_w, mask=lanes, other=0).to(COMPUTE)
        plane = input + n * s_n + c * s_c
        for iy in range(0, tl.max(grid_h)):
            yy = _offset(start_h, ph, bin_h, iy, grid_h)
            a_y = _fraction(ph, iy, grid_h, PH)  # float64: yy = h_s * a_y
            for ix in range(0, tl.max(grid_w)):
                xx = _offset(start_w, pw, bin_w, ix, grid_w)
                a_x = _fraction(pw, ix, grid_w, PW)
                y, x = _position(yy, xx, cos, sin, cy_s, cx_s)
                inside = (iy < grid_h) & (ix < grid_w) & _in_map(y, x, H, W)
                y_low, y_high, ly, hy, y_moves = _roi_corner(y, inside, H, COMPUTE)
                x_low, x_high, lx, hx, x_moves = _roi_corner(x, inside, W, COMPUTE)
                take = lanes & inside
                v1 = tl.load(plane + y_low * s_h + x_low * s_w, mask=take, other=0).to(COMPUTE)
                v2 = tl.load(plane + y_low * s_h + x_high * s_w, mask=take, other=0).to(COMPUTE)
                v3 = tl.load(plane + y_high * s_h + x_low * s_w, mask=take, other=0).to(COMPUTE)
                v4 = tl.load(plane + y_high * s_h + x_high * s_w, mask=take, other=0).to(COMPUTE)
                gy = _div(g * (hx * (v3 - v1) + lx * (v4 - v2)), count)  # d loss / d y
                gx = _div(g * (hy * (v2 - v1) + ly * (v4 - v3)), count)  # d loss / d x
                y_take = take & y_moves  # an axis clamped to the border does not move with the box
                x_take = take & x_moves
                # d y / d (cy, w, h, angle) and d x / d (cx, w, h, angle) in float64, each rounded once.
                d_cx += tl.where(x_take, gx * scale.to(COMPUTE), 0.0)
                d_cy += tl.where(y_take, gy * scale.to(COMPUTE), 0.0)
                d_w += tl.where(y_take, gy * (-(scale * a_x * sin)).to(COMPUTE), 0.0)
                d_w += tl.where(x_take, gx * (scale * a_x * cos).to(COMPUTE), 0.0)
                d_h += tl.where(y_take, gy * (scale * a_y * cos).to(COMPUTE), 0.0)
                d_h += tl.where(x_take, gx * (scale * a_y * sin).to(COMPUTE), 0.0)
                d_angle += tl.where(y_take, gy * (-(yy * sin + xx * cos) * per_degree).to(COMPUTE), 0.0)
                d_angle += tl.where(x_take, gx * ((yy * cos - xx * sin) * per_degree).to(COMPUTE), 0.0)
    out = grad_rois + k.to(tl.int64) * 6  # (batch, cx, cy, w, h, angle)
    ty = grad_rois.dtype.element_ty
    tl.store(out + 1, tl.sum(d_cx, axis=1)[:, None].to(ty), mask=rows)
    tl.store(out + 2, tl.sum(d_cy, axis=1)[:, None].to(ty), mask=rows)
    tl.store(out + 3, tl.sum(d_w, axis=1)[:, None].to(ty), mask=rows)
    tl.store(out + 4, tl.sum(d_h, axis=1)[:, None].to(ty), mask=rows)
    tl.store(out + 5, tl.sum(d_angle, axis=1)[:, None].to(ty), mask=rows)


# ------------------------------------------------------------------------------------------------ launches


def _geometry_table(rois, N, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise) -> torch.Tensor:
    """``vectorized.box_geometry`` as float64 ``[ROWS, K]``, contiguous, on rois' device (no host read)."""
    b = box_geometry(rois, N, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise)
    per_degree = (-1.0 if clockwise else 1.0) * torch.pi / 180.0
    rows = {
        BATCH: torch.where(b.valid, b.n.to(torch.float64), -1.0),
        CX_S: b.cx_s,
        CY_S: b.cy_s,
        START_H: b.start_h,
        START_W: b.start_w,
        BIN_H: b.bin_h,
        BIN_W: b.bin_w,
        COS: b.cos,
        SIN: b.sin,
        GRID_H: b.grid_h,
        GRID_W: b.grid_w,
        COUNT: b.count,
        SCALE: torch.full_like(b.cx_s, spatial_scale),
        PER_DEGREE: torch.full_like(b.cx_s, per_degree),
    }
    return torch.stack([rows[row] for row in range(ROWS)]).contiguous()  # [ROWS, K]


def forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise):
    _check_device(input, rois)
    N, C, H, W = input.shape
    K = rois.shape[0]
    out = torch.empty((K, C, pooled_height, pooled_width), dtype=input.dtype, device=input.device,
                      memory_format=_layout.memory_format(input))  # the feature map's layout
    if out.numel() == 0:
        return out
    geometry = _geometry_table(rois, N, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise)
    _, compute = _compute(input.dtype)
    block_k, block_e = _blocks(K, C * pooled_height * pooled_width)
    _launch(
        roi_align_rotated_forward_kernel,
        (triton.cdiv(K, block_k), triton.cdiv(C * pooled_height * pooled_width, block_e)),
        input, geometry, out, K, N, C, H, W, pooled_height, pooled_width, *_strides(input), *_strides(out),
        COMPUTE=compute, BLOCK_K=block_k, BLOCK_E=block_e,
    )
    return out


def backward_input(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width,
                   sampling_ratio, clockwise):
    _check_device(grad, rois)
    N, C, H, W = batch_size, channels, height, width
    K = rois.shape[0]
    acc, compute = _compute(grad.dtype)
    if torch.are_deterministic_algorithms_enabled():
        geometry = _geometry_table(rois, N, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise)
        return _deterministic_image_grad(grad, geometry, N, C, H, W, pooled_height, pooled_width, sampling_ratio)
    grad_input = torch.zeros((N, C, H, W), dtype=acc, device=grad.device).contiguous(
        memory_format=_layout.memory_format(grad))  # the incoming gradient's layout; float32 while adding half types
    if grad.numel() > 0 and grad_input.numel() > 0:
        geometry = _geometry_table(rois, N, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise)
        block_k, block_e = _blocks(K, C * pooled_height * pooled_width)
        _launch(
            roi_align_rotated_image_grad_atomic_kernel,
            (triton.cdiv(K, block_k), triton.cdiv(C * pooled_height * pooled_width, block_e)),
            grad, geometry, grad_input, K, N, C, H, W, pooled_height, pooled_width, *_strides(grad),
            *_strides(grad_input), COMPUTE=compute, BLOCK_K=block_k, BLOCK_E=block_e,
        )
    return grad_input.to(grad.dtype)  # half types: the one rounding (.to keeps the layout)


def _deterministic_image_grad(grad, geometry, N, C, H, W, pooled_height, pooled_width, sampling_ratio):
    """The sorted gather (module docstring): the tap list, then ``launcher._gather``; [N, C, H, W] in grad's dtype
    and layout."""
    K = geometry.shape[1]
    cells = pooled_height * pooled_width
    _, compute = _compute(grad.dtype)
    first_sample, total = _sample_slots(geometry[GRID_H], geometry[GRID_W], cells, sampling_ratio)
    entries = _tap_entries(total * 4, grad.dtype, grad.device)
    if total > 0:
        block_k, block_e = _blocks(K, cells)
        _launch(
            roi_align_rotated_taps_kernel, (triton.cdiv(K, block_k), triton.cdiv(cells, block_e)),
            geometry, first_sample, *entries, K, N, H, W, pooled_height, pooled_width,
            COMPUTE=compute, BLOCK_K=block_k, BLOCK_E=block_e,
        )
    return _gather(entries, grad, N, C, [H], [W], cells, pooled_width, roi=True)[0]


def backward_boxes(grad, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise):
    _check_device(grad, input, rois)
    N, C, H, W = input.shape
    K = rois.shape[0]
    grad_rois = torch.zeros((K, 6), dtype=rois.dtype, device=rois.device)
    if K == 0 or C == 0:
        return grad_rois
    geometry = _geometry_table(rois, N, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise)
    _, compute = _compute(input.dtype)
    block_k, block_e = _blocks(K, C * pooled_height * pooled_width)
    _launch(
        roi_align_rotated_boxes_grad_kernel, (triton.cdiv(K, block_k),),
        grad, input, geometry, grad_rois, K, N, C, H, W, pooled_height, pooled_width, *_strides(input),
        *_strides(grad), COMPUTE=compute, BLOCK_K=block_k, BLOCK_E=block_e,
    )
    return grad_rois
