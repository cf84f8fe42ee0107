"""The Triton kernels of the ``triton`` backend (launched by ``impls/backends/triton/launcher.py``).

The Triton counterpart of ``csrc/<op>/<op>_cuda.cu``: the same sampling math as ``csrc/common/bilinear.h`` and the
operators' ``reference.py`` (CONVENTIONS.md §1 and §3), expression by expression and in the same order, written on tiles
instead of one thread per element. This file only holds ``@triton.jit`` functions; importing it needs triton, not a GPU
(under ``TRITON_INTERPRET=1`` the same kernels run on the CPU, with numpy).

The tile. Every kernel but the last one works on a 2-D tile ``[BLOCK_K, BLOCK_E]``: rows are boxes, columns are
elements of a box's output, ``e = c * cells + cell`` (channel-major, the NCHW order of ``out[k]``), ``cells`` being
the crop or bin count ``PH * PW``. Per-box values (box corners, batch index, roi_align's geometry) are loaded once
per row, ``[BLOCK_K, 1]``, and broadcast along it; sample positions depend on the row and the cell
(``[BLOCK_K, BLOCK_E]``, recomputed for every channel: a few flops, cheaper than staging them through memory).
One program covers ``BLOCK_K`` boxes, so a small call (the tests: 6 boxes x 36 elements) is one program and a
detector call (512 boxes x 256 channels x 7x7) has ``BLOCK_K = 1`` and a grid over the channels.

Masks. Lanes beyond ``K`` or beyond ``C * cells`` are masked (``lanes``). A box whose image index is outside
``[0, N)`` (the public ops reject it; masked anyway) reads nothing: its output is NaN and it gets no gradient,
as in the CUDA kernels. A sample outside the map takes the border rule of its operator; its coordinate is
replaced by 0 before any ``floor``/integer conversion, so no lane ever forms an index outside the map, and every
load and atomic is masked by the sample's validity as well.

Precision (CONVENTIONS.md §6). ``COMPUTE`` is float32 for float16/bfloat16/float32 and float64 for float64: half
types load as half, are computed in float32 and are rounded once at the store. crop_and_resize positions are
computed in ``COMPUTE`` by the reference's expression. Every division in ``COMPUTE`` goes through ``_div``,
IEEE-rounded on a GPU too. roi_align positions are computed in float64 for every
dtype, from per-box geometry that the host computes in float64 (``geometry``); the interpolation weights are then
rounded to ``COMPUTE``. Launches pass ``enable_fp_fusion=False`` so that on a GPU no multiply-add is fused (the
CUDA extension is built with ``--fmad=false`` for the same reason).

The passes:

* forward: one output element per lane, its samples looped over (roi_align: the box's ``grid_h x grid_w``);
* image gradient, default: the forward's loop, each sample adding its four taps with ``tl.atomic_add`` into a
  ``COMPUTE`` buffer (float32 for half types: rounded once at the end, by the host);
* image gradient, deterministic: ``*_taps_kernel`` lists every tap once (without the channel) in the reference's
  order; the host sorts the list by pixel (stable); ``gather_taps_kernel`` then gives every gradient element one
  lane that sums its pixel's taps in that order: no atomics, the same bits on every run;
* box gradient: ``BLOCK_K`` boxes per program, each lane accumulating its elements' contributions over a loop of
  tiles, then ``tl.sum`` along the row: a fixed partition and a fixed reduction tree, deterministic.
"""

from __future__ import annotations

import triton
import triton.language as tl

from . import geometry_table

# Rows of the roi_align geometry table (float64 [ROWS, K]), named and described in geometry_table.py, where the
# launcher builds it.
GEO_BATCH = tl.constexpr(geometry_table.BATCH)
GEO_Y_START = tl.constexpr(geometry_table.Y_START)
GEO_X_START = tl.constexpr(geometry_table.X_START)
GEO_BIN_H = tl.constexpr(geometry_table.BIN_H)
GEO_BIN_W = tl.constexpr(geometry_table.BIN_W)
GEO_GRID_H = tl.constexpr(geometry_table.GRID_H)
GEO_GRID_W = tl.constexpr(geometry_table.GRID_W)
GEO_COUNT = tl.constexpr(geometry_table.COUNT)
GEO_Y_ALONG = tl.constexpr(geometry_table.Y_ALONG)
GEO_X_ALONG = tl.constexpr(geometry_table.X_ALONG)
GEO_SCALE = tl.constexpr(geometry_table.SCALE)
GEO_LEVEL = tl.constexpr(geometry_table.LEVEL)

# Sizes vary from call to call (boxes per image, crops, maps): triton would compile a kernel once per pattern of
# sizes that equal 1 or divide by 16. Not specialized on them, a kernel compiles once per dtype and tile shape
# (strides stay specialized: a stride of 1 is worth knowing).
CROP_SIZES = ("K", "N", "C", "H", "W", "CH", "CW")
ROI_SIZES = ("K", "N", "C", "PH", "PW")  # the levels' sizes are tuples


# ------------------------------------------------------------------------------------------------ the tile


@triton.jit
def _tile(K, C, cells, BLOCK_K: tl.constexpr, BLOCK_E: tl.constexpr):
    """Program (i, j)'s boxes k [BLOCK_K, 1] and elements e [1, BLOCK_E] with e = c * cells + cell; ``rows``
    masks the boxes that exist, ``lanes`` the (box, element) pairs that exist."""
    k = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)[:, None]
    e = tl.program_id(1) * BLOCK_E + tl.arange(0, BLOCK_E)[None, :]
    rows = k < K
    lanes = rows & (e < C * cells)
    return k, e, rows, lanes


@triton.jit
def _element(e, cells, width):
    """Element e = c * cells + cell of a box's [C, rows, width] output: its channel (int64), row and column."""
    cell = e % cells
    return (e // cells).to(tl.int64), cell // width, cell % width


@triton.jit
def _div(a, b):
    """a / b rounded to nearest, as C++, CUDA and numpy divide. On NVIDIA GPUs Triton compiles a float32 ``/`` to
    an approximate division (``div.full.f32``, up to 2 ulp off); ``tl.div_rn`` is the IEEE one. float64 ``/`` is
    IEEE already (``div.rn.f64``)."""
    if a.dtype == tl.float64:
        return a / b
    else:
        return tl.div_rn(a, b)


# ------------------------------------------------------------------------------------------ crop_and_resize


@triton.jit
def _crop_coordinate(lo, hi, i, CROP, SIZE, COMPUTE: tl.constexpr):
    """Sample i of CROP along a normalized box side [lo, hi] on SIZE pixels (CONVENTIONS.md §1.2), in COMPUTE:
    ``lo*(SIZE-1) + i*((hi-lo)*(SIZE-1)/(CROP-1))``, or the box centre ``0.5*(lo+hi)*(SIZE-1)`` when CROP == 1.
    Also d coordinate / d lo and d coordinate / d hi (reference._crop_coordinate_grads)."""
    extent = tl.cast(SIZE - 1, COMPUTE)
    steps = tl.cast(tl.maximum(CROP - 1, 1), COMPUTE)  # CROP - 1, kept >= 1 for the branch not taken
    fi = tl.cast(i, COMPUTE)
    scale = _div((hi - lo) * extent, steps)
    ratio = _div(extent, steps)
    half = 0.5 * extent
    coord = tl.where(CROP > 1, lo * extent + fi * scale, 0.5 * (lo + hi) * extent)
    d_lo = tl.where(CROP > 1, extent - fi * ratio, half)
    d_hi = tl.where(CROP > 1, fi * ratio, half)
    return coord, d_lo, d_hi


@triton.jit
def _crop_sample(boxes, box_index, k, rows, py, px, N, H, W, CH, CW, COMPUTE: tl.constexpr):
    """Everything about sample (py, px) of boxes k: image n, whether the box may be read (``ok``) and the sample
    is inside the map (``inside``, CONVENTIONS.md §1.3: NaN-safe), and the clean coordinates (0 where outside)
    with their derivatives with respect to the box sides."""
    n = tl.load(box_index + k, mask=rows, other=-1)  # [BLOCK_K, 1] int64
    ok = rows & (n >= 0) & (n < N)
    n = tl.where(ok, n, 0)
    y1 = tl.load(boxes + k * 4 + 0, mask=rows, other=0).to(COMPUTE)  # boxes: contiguous [K, 4] (y1, x1, y2, x2)
    x1 = tl.load(boxes + k * 4 + 1, mask=rows, other=0).to(COMPUTE)
    y2 = tl.load(boxes + k * 4 + 2, mask=rows, other=0).to(COMPUTE)
    x2 = tl.load(boxes + k * 4 + 3, mask=rows, other=0).to(COMPUTE)
    in_y, dy_lo, dy_hi = _crop_coordinate(y1, y2, py, CH, H, COMPUTE)  # [BLOCK_K, BLOCK_E]
    in_x, dx_lo, dx_hi = _crop_coordinate(x1, x2, px, CW, W, COMPUTE)
    inside = (in_y >= 0) & (in_y <= H - 1) & (in_x >= 0) & (in_x <= W - 1)  # NaN compares False
    in_y = tl.where(inside, in_y, 0.0)
    in_x = tl.where(inside, in_x, 0.0)
    return n, ok, inside, in_y, in_x, dy_lo, dy_hi, dx_lo, dx_hi


@triton.jit
def _crop_taps(in_y, in_x):
    """The bilinear taps of in-range coordinates (CONVENTIONS.md §1.4): rows top = floor, bottom = ceil and
    columns left, right as int64 (equal at an integer coordinate, where the lerp is 0), and the two lerps."""
    top = tl.floor(in_y)
    left = tl.floor(in_x)
    return (top.to(tl.int64), tl.ceil(in_y).to(tl.int64), left.to(tl.int64), tl.ceil(in_x).to(tl.int64),
            in_y - top, in_x - left)


@triton.jit
def _round_half_away(v):
    """std::round for v >= 0: 2.5 -> 3 (CONVENTIONS.md §1.4), as an int64 index."""
    f = tl.floor(v)
    return tl.where(v - f >= 0.5, f + 1.0, f).to(tl.int64)


@triton.jit(do_not_specialize=CROP_SIZES)
def crop_and_resize_forward_kernel(
    image, boxes, box_index, extrapolation, out,
    K, N, C, H, W, CH, CW,
    s_n, s_c, s_h, s_w,  # image strides, in elements: any layout is read in place
    o_k, o_c, o_h, o_w,  # out strides: NCHW or channels_last, written in place
    NEAREST: tl.constexpr, COMPUTE: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_E: tl.constexpr,
):
    """out[k, c, py, px] ([K, C, CH, CW]): one lane per output element."""
    cells = CH * CW
    k, e, rows, lanes = _tile(K, C, cells, BLOCK_K, BLOCK_E)
    c, py, px = _element(e, cells, CW)
    n, ok, inside, in_y, in_x, _, _, _, _ = _crop_sample(boxes, box_index, k, rows, py, px, N, H, W, CH, CW, COMPUTE)
    read = lanes & ok & inside
    plane = image + n * s_n + c * s_c  # [BLOCK_K, BLOCK_E] pointers to each lane's (image, channel) plane
    if NEAREST:
        value = tl.load(plane + _round_half_away(in_y) * s_h + _round_half_away(in_x) * s_w, mask=read, other=0)
        value = value.to(COMPUTE)
    else:
        top, bottom, left, right, y_lerp, x_lerp = _crop_taps(in_y, in_x)
        t, b, lf, r = top * s_h, bottom * s_h, left * s_w, right * s_w
        tl_v = tl.load(plane + t + lf, mask=read, other=0).to(COMPUTE)
        tr_v = tl.load(plane + t + r, mask=read, other=0).to(COMPUTE)
        bl_v = tl.load(plane + b + lf, mask=read, other=0).to(COMPUTE)
        br_v = tl.load(plane + b + r, mask=read, other=0).to(COMPUTE)
        top_v = tl_v + (tr_v - tl_v) * x_lerp
        bottom_v = bl_v + (br_v - bl_v) * x_lerp
        value = top_v + (bottom_v - top_v) * y_lerp
    value = tl.where(inside, value, tl.load(extrapolation))  # extrapolation: one COMPUTE element
    value = tl.where(ok, value, float("nan"))
    tl.store(out + k.to(tl.int64) * o_k + c * o_c + py * o_h + px * o_w, value.to(out.dtype.element_ty), mask=lanes)


@triton.jit(do_not_specialize=CROP_SIZES)
def crop_and_resize_image_grad_atomic_kernel(
    grad, boxes, box_index, grad_image,
    K, N, C, H, W, CH, CW,
    g_k, g_c, g_h, g_w,  # grad strides (an expanded or permuted grad is read in place)
    b_n, b_c, b_h, b_w,  # grad_image strides (NCHW or channels_last)
    NEAREST: tl.constexpr, COMPUTE: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_E: tl.constexpr,
):
    """grad_image ([N, C, H, W] of COMPUTE, zeroed) += each in-range sample's four taps
    (CONVENTIONS.md §1.6), added atomically: lanes of one tile and other programs may hit the same pixel.
    ``sem="relaxed"``: the adds need no ordering among themselves (as ``gpuAtomicAddNoReturn`` in
    csrc/<op>/<op>_cuda.cu)."""
    cells = CH * CW
    k, e, rows, lanes = _tile(K, C, cells, BLOCK_K, BLOCK_E)
    c, py, px = _element(e, cells, CW)
    n, ok, inside, in_y, in_x, _, _, _, _ = _crop_sample(boxes, box_index, k, rows, py, px, N, H, W, CH, CW, COMPUTE)
    take = lanes & ok & inside
    g = tl.load(grad + k * g_k + c * g_c + py * g_h + px * g_w, mask=take, other=0).to(COMPUTE)
    plane = grad_image + n * b_n + c * b_c
    if NEAREST:
        nearest = plane + _round_half_away(in_y) * b_h + _round_half_away(in_x) * b_w
        tl.atomic_add(nearest, g, mask=take, sem="relaxed")
    else:
        top, bottom, left, right, y_lerp, x_lerp = _crop_taps(in_y, in_x)
        t, b, lf, r = top * b_h, bottom * b_h, left * b_w, right * b_w
        d_top = (1 - y_lerp) * g
        d_bottom = y_lerp * g
        tl.atomic_add(plane + t + lf, (1 - x_lerp) * d_top, mask=take, sem="relaxed")
        tl.atomic_add(plane + t + r, x_lerp * d_top, mask=take, sem="relaxed")
        tl.atomic_add(plane + b + lf, (1 - x_lerp) * d_bottom, mask=take, sem="relaxed")
        tl.atomic_add(plane + b + r, x_lerp * d_bottom, mask=take, sem="relaxed")


@triton.jit(do_not_specialize=("K", "N", "H", "W", "CH", "CW"))
def crop_and_resize_taps_kernel(
    boxes, box_index, pixel, cell_of, weight_a, weight_b,
    K, N, H, W, CH, CW,
    NEAREST: tl.constexpr, COMPUTE: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_E: tl.constexpr,
):
    """Deterministic image gradient, step 1: the four taps of every sample (k, py, px), without the channel,
    as entries 4 * (k * cells + cell) + corner, corners TL, TR, BL, BR: the reference's order. Entry: the pixel
    n*H*W + y*W + x (-1: no tap), the output cell k * cells + cell, and two weights whose contribution is
    ``a * (b * g)`` = (1 - x_lerp) * ((1 - y_lerp) * g), the reference's expression. Here e is the cell."""
    cells = CH * CW
    k, e, rows, lanes = _tile(K, 1, cells, BLOCK_K, BLOCK_E)
    py = e // CW
    px = e % CW
    n, ok, inside, in_y, in_x, _, _, _, _ = _crop_sample(boxes, box_index, k, rows, py, px, N, H, W, CH, CW, COMPUTE)
    take = lanes & ok & inside
    sample = k.to(tl.int64) * cells + e  # [BLOCK_K, BLOCK_E]
    entry = sample * 4
    base = n * H * W
    one = tl.full([BLOCK_K, BLOCK_E], 1.0, COMPUTE)
    if NEAREST:  # one tap, weight 1 * (1 * g) == g exactly; the other three entries are empty
        p0 = base + _round_half_away(in_y) * W + _round_half_away(in_x)
        tl.store(pixel + entry, tl.where(take, p0, -1), mask=lanes)
        for corner in tl.static_range(4):
            tl.store(cell_of + entry + corner, sample, mask=lanes)
            tl.store(weight_a + entry + corner, one, mask=lanes)
            tl.store(weight_b + entry + corner, one, mask=lanes)
        for corner in tl.static_range(1, 4):
            tl.store(pixel + entry + corner, tl.full([BLOCK_K, BLOCK_E], -1, tl.int64), mask=lanes)
    else:
        top, bottom, lf, r, y_lerp, x_lerp = _crop_taps(in_y, in_x)
        t, b = base + top * W, base + bottom * W
        for corner in tl.static_range(4):  # unrolled: corner 0 TL, 1 TR, 2 BL, 3 BR
            row = b if corner >= 2 else t
            col = r if corner % 2 == 1 else lf
            a_w = x_lerp if corner % 2 == 1 else 1 - x_lerp
            b_w = y_lerp if corner >= 2 else 1 - y_lerp
            tl.store(pixel + entry + corner, tl.where(take, row + col, -1), mask=lanes)
            tl.store(cell_of + entry + corner, sample, mask=lanes)
            tl.store(weight_a + entry + corner, a_w, mask=lanes)
            tl.store(weight_b + entry + corner, b_w, mask=lanes)


@triton.jit(do_not_specialize=CROP_SIZES)
def crop_and_resize_boxes_grad_kernel(
    grad, image, boxes, box_index, grad_boxes,
    K, N, C, H, W, CH, CW,
    s_n, s_c, s_h, s_w, g_k, g_c, g_h, g_w,
    COMPUTE: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_E: tl.constexpr,
):
    """grad_boxes (contiguous [K, 4], (y1, x1, y2, x2)) for BLOCK_K boxes per program (CONVENTIONS.md §1.6):
    each lane accumulates its elements' terms over the loop of tiles, then one tl.sum per row. Bilinear only
    (nearest has a zero box gradient: the host does not launch)."""
    cells = CH * CW
    k = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)[:, None]
    rows = k < K
    d_y1 = tl.zeros([BLOCK_K, BLOCK_E], COMPUTE)
    d_x1 = tl.zeros([BLOCK_K, BLOCK_E], COMPUTE)
    d_y2 = tl.zeros([BLOCK_K, BLOCK_E], COMPUTE)
    d_x2 = tl.zeros([BLOCK_K, BLOCK_E], COMPUTE)
    for start in range(0, C * cells, BLOCK_E):
        e = start + tl.arange(0, BLOCK_E)[None, :]
        lanes = rows & (e < C * cells)
        c, py, px = _element(e, cells, CW)
        n, ok, inside, in_y, in_x, dy_lo, dy_hi, dx_lo, dx_hi = _crop_sample(
            boxes, box_index, k, rows, py, px, N, H, W, CH, CW, COMPUTE)
        take = lanes & ok & inside
        g = tl.load(grad + k * g_k + c * g_c + py * g_h + px * g_w, mask=take, other=0).to(COMPUTE)
        plane = image + n * s_n + c * s_c
        top, bottom, left, right, y_lerp, x_lerp = _crop_taps(in_y, in_x)
        t, b, lf, r = top * s_h, bottom * s_h, left * s_w, right * s_w
        tl_v = tl.load(plane + t + lf, mask=take, other=0).to(COMPUTE)
        tr_v = tl.load(plane + t + r, mask=take, other=0).to(COMPUTE)
        bl_v = tl.load(plane + b + lf, mask=take, other=0).to(COMPUTE)
        br_v = tl.load(plane + b + r, mask=take, other=0).to(COMPUTE)
        gy = g * ((1 - x_lerp) * (bl_v - tl_v) + x_lerp * (br_v - tr_v))  # d loss / d in_y
        gx = g * ((1 - y_lerp) * (tr_v - tl_v) + y_lerp * (br_v - bl_v))  # d loss / d in_x
        d_y1 += tl.where(take, gy * dy_lo, 0.0)
        d_x1 += tl.where(take, gx * dx_lo, 0.0)
        d_y2 += tl.where(take, gy * dy_hi, 0.0)
        d_x2 += tl.where(take, gx * dx_hi, 0.0)
    out = grad_boxes + k.to(tl.int64) * 4
    ty = grad_boxes.dtype.element_ty
    tl.store(out + 0, tl.sum(d_y1, axis=1)[:, None].to(ty), mask=rows)
    tl.store(out + 1, tl.sum(d_x1, axis=1)[:, None].to(ty), mask=rows)
    tl.store(out + 2, tl.sum(d_y2, axis=1)[:, None].to(ty), mask=rows)
    tl.store(out + 3, tl.sum(d_x2, axis=1)[:, None].to(ty), mask=rows)


# ------------------------------------------------------------------------------------------------ roi_align
#
# One set of kernels for roi_align and multi-level roi_align: the maps of a pyramid arrive as tuples, one entry per
# level (pointers, sizes, strides: ``LEVELS`` of each), each map read in place; box k's level is a row of the
# geometry table, loaded in the kernel, and every lane picks its level's entries (``_pick``). roi_align is the
# one-level case (LEVELS = 1: every box on level 0, nothing to pick).


@triton.jit
def _pick(values, level, LEVELS: tl.constexpr):
    """values[level] per lane, for a tuple of LEVELS scalars (sizes, strides or pointers) and an int64 level
    tensor: a chain of selects, no memory read. With one level, values[0] itself."""
    out = values[0]
    for l in tl.static_range(1, LEVELS):
        out = tl.where(level == l, values[l], out)
    return out


@triton.jit
def _level_map(maps, s_n, s_c, s_h, s_w, heights, widths, level, LEVELS: tl.constexpr):
    """Level ``level``'s map (or gradient) per lane: its pointer, its strides (n, c, h, w) and its size (H, W)."""
    return (_pick(maps, level, LEVELS), _pick(s_n, level, LEVELS), _pick(s_c, level, LEVELS),
            _pick(s_h, level, LEVELS), _pick(s_w, level, LEVELS), _pick(heights, level, LEVELS),
            _pick(widths, level, LEVELS))


@triton.jit
def _roi_box(geometry, k, rows, K, N, COMPUTE: tl.constexpr):
    """Row k's geometry ([BLOCK_K, 1] each): image n, its level (int64), whether the box may be read, starts and
    bin sizes (float64), the sample grid (int64, 0 for a box not read) and the bin mean's divisor (COMPUTE)."""
    geo = geometry + k  # geometry: float64 [ROWS, K], rows GEO_*
    batch = tl.load(geo + GEO_BATCH * K, mask=rows, other=-1.0)
    ok = rows & (batch >= 0) & (batch < N)
    n = tl.where(ok, batch, 0.0).to(tl.int64)
    level = tl.where(ok, tl.load(geo + GEO_LEVEL * K, mask=rows, other=0.0), 0.0).to(tl.int64)
    y_start = tl.load(geo + GEO_Y_START * K, mask=rows, other=0.0)
    x_start = tl.load(geo + GEO_X_START * K, mask=rows, other=0.0)
    bin_h = tl.load(geo + GEO_BIN_H * K, mask=rows, other=0.0)
    bin_w = tl.load(geo + GEO_BIN_W * K, mask=rows, other=0.0)
    grid_h = tl.where(ok, tl.load(geo + GEO_GRID_H * K, mask=rows, other=0.0), 0.0).to(tl.int64)
    grid_w = tl.where(ok, tl.load(geo + GEO_GRID_W * K, mask=rows, other=0.0), 0.0).to(tl.int64)
    count = tl.load(geo + GEO_COUNT * K, mask=rows, other=1.0).to(COMPUTE)
    return n, level, ok, y_start, x_start, bin_h, bin_w, grid_h, grid_w, count


@triton.jit
def _roi_sample(start, p, bin_size, i, grid):
    """reference._roi_sample in float64, left to right: ``start + p*bin + (i + 0.5)*bin/grid``.
    ``grid`` is >= 1 on every lane whose sample is used; elsewhere it is kept >= 1 so nothing divides by 0."""
    return start + tl.cast(p, tl.float64) * bin_size + (tl.cast(i, tl.float64) + 0.5) * bin_size / tl.cast(
        tl.maximum(grid, 1), tl.float64)


@triton.jit
def _roi_position(p, i, grid, P):
    """reference._roi_position in float64: where sample i of bin p sits along the box, 0 at its start and 1 at its
    end, ``(p + (i + 0.5) / grid) / P``; ``grid`` kept >= 1 as in ``_roi_sample``."""
    return (tl.cast(p, tl.float64) + (tl.cast(i, tl.float64) + 0.5) / tl.cast(tl.maximum(grid, 1), tl.float64)) / P


@triton.jit
def _roi_corner(v, in_range, SIZE, COMPUTE: tl.constexpr):
    """torchvision's clamp of a coordinate (CONVENTIONS.md §3.3; reference._roi_corner): the two pixels around
    v, the weights of the low and high one in COMPUTE (rounded from float64), and whether v moves with the box
    (False where it was clamped). Out-of-range lanes get v = 0 first, so the int conversion always sees a small
    non-negative number."""
    v = tl.where(in_range, v, 0.0)
    moves = v > 0
    v = tl.maximum(v, 0.0)
    low = v.to(tl.int64)  # v >= 0: truncation is floor
    at_end = low >= SIZE - 1
    low = tl.where(at_end, SIZE - 1, low)
    high = tl.where(at_end, low, low + 1)
    v = tl.where(at_end, low.to(tl.float64), v)
    frac = v - low.to(tl.float64)
    return low, high, frac.to(COMPUTE), (1.0 - frac).to(COMPUTE), moves & ~at_end


@triton.jit(do_not_specialize=ROI_SIZES)
def roi_align_forward_kernel(
    maps, geometry, out,
    K, N, C, PH, PW,
    heights, widths,  # each level's H and W (tuples of LEVELS ints)
    s_n, s_c, s_h, s_w,  # each level's map strides (tuples): any layout is read in place
    o_k, o_c, o_h, o_w,  # out strides: NCHW or channels_last, written in place
    LEVELS: tl.constexpr, COMPUTE: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_E: tl.constexpr,
):
    """out[k, c, ph, pw] ([K, C, PH, PW]) = the mean of the bin's grid_h x grid_w bilinear samples of box k's
    level's map (CONVENTIONS.md §3.2, §3a). The loops run to the largest grid of the tile's boxes; a lane whose
    own grid is smaller masks the extra samples (with one box per tile, the usual case, nothing is masked)."""
    cells = PH * PW
    k, e, rows, lanes = _tile(K, C, cells, BLOCK_K, BLOCK_E)
    c, ph, pw = _element(e, cells, PW)
    n, level, ok, y_start, x_start, bin_h, bin_w, grid_h, grid_w, count = _roi_box(geometry, k, rows, K, N, COMPUTE)
    base, m_n, m_c, m_h, m_w, H, W = _level_map(maps, s_n, s_c, s_h, s_w, heights, widths, level, LEVELS)
    plane = base + n * m_n + c * m_c
    acc = tl.zeros([BLOCK_K, BLOCK_E], COMPUTE)
    for iy in range(0, tl.max(grid_h)):
        y = _roi_sample(y_start, ph, bin_h, iy, grid_h)  # float64 [BLOCK_K, BLOCK_E]
        y_ok = (y >= -1) & (y <= H) & (iy < grid_h)  # NaN compares False
        y_low, y_high, ly, hy, _ = _roi_corner(y, y_ok, H, COMPUTE)
        for ix in range(0, tl.max(grid_w)):
            x = _roi_sample(x_start, pw, bin_w, ix, grid_w)
            x_ok = (x >= -1) & (x <= W) & (ix < grid_w)
            x_low, x_high, lx, hx, _ = _roi_corner(x, x_ok, W, COMPUTE)
            take = lanes & ok & y_ok & x_ok
            v1 = tl.load(plane + y_low * m_h + x_low * m_w, mask=take, other=0).to(COMPUTE)
            v2 = tl.load(plane + y_low * m_h + x_high * m_w, mask=take, other=0).to(COMPUTE)
            v3 = tl.load(plane + y_high * m_h + x_low * m_w, mask=take, other=0).to(COMPUTE)
            v4 = tl.load(plane + y_high * m_h + x_high * m_w, mask=take, other=0).to(COMPUTE)
            w1 = hy * hx
            w2 = hy * lx
            w3 = ly * hx
            w4 = ly * lx
            acc += tl.where(take, w1 * v1 + w2 * v2 + w3 * v3 + w4 * v4, 0.0)
    value = tl.where(ok, _div(acc, count), float("nan"))
    tl.store(out + k.to(tl.int64) * o_k + c * o_c + ph * o_h + pw * o_w, value.to(out.dtype.element_ty), mask=lanes)


@triton.jit(do_not_specialize=ROI_SIZES)
def roi_align_image_grad_atomic_kernel(
    grad, geometry, grad_inputs,
    K, N, C, PH, PW,
    heights, widths,
    g_k, g_c, g_h, g_w,  # grad strides
    b_n, b_c, b_h, b_w,  # each level's grad_inputs strides (tuples; NCHW or channels_last)
    LEVELS: tl.constexpr, COMPUTE: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_E: tl.constexpr,
):
    """grad_inputs[level] ([N, C, H_l, W_l] of COMPUTE each, zeroed) += g * w / count for each of an in-range
    sample's four taps (CONVENTIONS.md §3.4), added atomically. Where clamping made low == high both shares go
    there."""
    cells = PH * PW
    k, e, rows, lanes = _tile(K, C, cells, BLOCK_K, BLOCK_E)
    c, ph, pw = _element(e, cells, PW)
    n, level, ok, y_start, x_start, bin_h, bin_w, grid_h, grid_w, count = _roi_box(geometry, k, rows, K, N, COMPUTE)
    base, m_n, m_c, m_h, m_w, H, W = _level_map(grad_inputs, b_n, b_c, b_h, b_w, heights, widths, level, LEVELS)
    g = tl.load(grad + k * g_k + c * g_c + ph * g_h + pw * g_w, mask=lanes & ok, other=0).to(COMPUTE)
    plane = base + n * m_n + c * m_c
    for iy in range(0, tl.max(grid_h)):
        y = _roi_sample(y_start, ph, bin_h, iy, grid_h)
        y_ok = (y >= -1) & (y <= H) & (iy < grid_h)
        y_low, y_high, ly, hy, _ = _roi_corner(y, y_ok, H, COMPUTE)
        for ix in range(0, tl.max(grid_w)):
            x = _roi_sample(x_start, pw, bin_w, ix, grid_w)
            x_ok = (x >= -1) & (x <= W) & (ix < grid_w)
            x_low, x_high, lx, hx, _ = _roi_corner(x, x_ok, W, COMPUTE)
            take = lanes & ok & y_ok & x_ok
            low_row = plane + y_low * m_h
            high_row = plane + y_high * m_h
            tl.atomic_add(low_row + x_low * m_w, _div(g * (hy * hx), count), mask=take, sem="relaxed")
            tl.atomic_add(low_row + x_high * m_w, _div(g * (hy * lx), count), mask=take, sem="relaxed")
            tl.atomic_add(high_row + x_low * m_w, _div(g * (ly * hx), count), mask=take, sem="relaxed")
            tl.atomic_add(high_row + x_high * m_w, _div(g * (ly * lx), count), mask=take, sem="relaxed")


@triton.jit
def _store_taps(pixel, cell_of, weight_a, weight_b, entry, exists, take, base, W, y_low, y_high, ly, hy, x_low, x_high,
                lx, hx, out_cell, count, COMPUTE: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_E: tl.constexpr):
    """One sample's four tap entries, entry + 0..3, corners (low, low), (low, high), (high, low), (high, high) in
    (y, x): the pixel base + y*W + x (-1 where the sample has no taps, ``take`` false), the output cell, the weight
    ``wy * wx`` and the divisor ``count``; lanes where the sample does not exist write nothing. The deterministic
    image gradient's step 1 of roi_align and of roi_align_rotated."""
    for corner in tl.static_range(4):  # unrolled
        row = y_high if corner >= 2 else y_low
        col = x_high if corner % 2 == 1 else x_low
        wy = ly if corner >= 2 else hy
        wx = lx if corner % 2 == 1 else hx
        tl.store(pixel + entry + corner, tl.where(take, base + row * W + col, -1), mask=exists)
        tl.store(cell_of + entry + corner, out_cell, mask=exists)
        tl.store(weight_a + entry + corner, wy * wx, mask=exists)
        tl.store(weight_b + entry + corner, tl.zeros([BLOCK_K, BLOCK_E], COMPUTE) + count, mask=exists)


@triton.jit(do_not_specialize=("K", "N", "PH", "PW"))
def roi_align_taps_kernel(
    geometry, first_sample, pixel, cell_of, weight_a, weight_b,
    K, N, PH, PW,
    heights, widths,
    pixel_offsets,  # level l's first pixel: N * (H_0 * W_0 + ... + H_{l-1} * W_{l-1}) (tuple)
    LEVELS: tl.constexpr, COMPUTE: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_E: tl.constexpr,
):
    """Deterministic image gradient, step 1: the four taps of every sample of every box, without the channel.
    Box k's samples are numbered from first_sample[k] (an exclusive prefix sum of cells * grid_h * grid_w, from
    the host) in the reference's order (cell, iy, ix); entry 4 * sample + corner, corners (low, low), (low, high),
    (high, low), (high, high) in (y, x). The pixel of a tap is numbered across the levels: pixel_offsets[level] +
    n*H*W + y*W + x. Contribution of an entry: ``(g * a) / b`` = (g * (hy * hx)) / count, the reference's
    expression. Here e is the cell; an out-of-range sample's entries get pixel -1."""
    cells = PH * PW
    k, e, rows, lanes = _tile(K, 1, cells, BLOCK_K, BLOCK_E)
    ph = e // PW
    pw = e % PW
    n, level, ok, y_start, x_start, bin_h, bin_w, grid_h, grid_w, count = _roi_box(geometry, k, rows, K, N, COMPUTE)
    H = _pick(heights, level, LEVELS)
    W = _pick(widths, level, LEVELS)
    first = tl.load(first_sample + k, mask=rows, other=0)  # [BLOCK_K, 1] int64
    out_cell = k.to(tl.int64) * cells + e
    base = _pick(pixel_offsets, level, LEVELS) + n * H * W
    for iy in range(0, tl.max(grid_h)):
        y = _roi_sample(y_start, ph, bin_h, iy, grid_h)
        y_ok = (y >= -1) & (y <= H)
        y_low, y_high, ly, hy, _ = _roi_corner(y, y_ok, H, COMPUTE)
        for ix in range(0, tl.max(grid_w)):
            x = _roi_sample(x_start, pw, bin_w, ix, grid_w)
            x_ok = (x >= -1) & (x <= W)
            x_low, x_high, lx, hx, _ = _roi_corner(x, x_ok, W, COMPUTE)
            exists = lanes & ok & (iy < grid_h) & (ix < grid_w)  # the sample is in the box's grid: write it
            take = exists & y_ok & x_ok  # and it is in range: it has taps
            entry = (first + (e * grid_h + iy) * grid_w + ix) * 4
            _store_taps(pixel, cell_of, weight_a, weight_b, entry, exists, take, base, W, y_low, y_high, ly, hy,
                        x_low, x_high, lx, hx, out_cell, count, COMPUTE, BLOCK_K, BLOCK_E)


@triton.jit(do_not_specialize=ROI_SIZES)
def roi_align_boxes_grad_kernel(
    grad, maps, geometry, grad_rois,
    K, N, C, PH, PW,
    heights, widths,
    s_n, s_c, s_h, s_w,  # each level's map strides (tuples)
    g_k, g_c, g_h, g_w,
    LEVELS: tl.constexpr, COMPUTE: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_E: tl.constexpr,
):
    """grad_rois (contiguous [K, 5], zeroed; column 0, the batch index, stays 0) for BLOCK_K boxes per program
    (CONVENTIONS.md §3.4): the derivative of the sample positions with the grid held fixed, each box on its level's
    map. Each lane accumulates over the loop of tiles, then one tl.sum per row: deterministic."""
    cells = PH * PW
    k = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)[:, None]
    rows = k < K
    n, level, ok, y_start, x_start, bin_h, bin_w, grid_h, grid_w, count = _roi_box(geometry, k, rows, K, N, COMPUTE)
    base, m_n, m_c, m_h, m_w, H, W = _level_map(maps, s_n, s_c, s_h, s_w, heights, widths, level, LEVELS)
    y_along = tl.load(geometry + GEO_Y_ALONG * K + k, mask=rows, other=0.0)
    x_along = tl.load(geometry + GEO_X_ALONG * K + k, mask=rows, other=0.0)
    scale = tl.load(geometry + GEO_SCALE * K + k, mask=rows, other=0.0)
    d_y1 = tl.zeros([BLOCK_K, BLOCK_E], COMPUTE)
    d_x1 = tl.zeros([BLOCK_K, BLOCK_E], COMPUTE)
    d_y2 = tl.zeros([BLOCK_K, BLOCK_E], COMPUTE)
    d_x2 = tl.zeros([BLOCK_K, BLOCK_E], COMPUTE)
    for start in range(0, C * cells, BLOCK_E):
        e = start + tl.arange(0, BLOCK_E)[None, :]
        lanes = rows & ok & (e < C * cells)
        c, ph, pw = _element(e, cells, PW)
        g = tl.load(grad + k * g_k + c * g_c + ph * g_h + pw * g_w, mask=lanes, other=0).to(COMPUTE)
        plane = base + n * m_n + c * m_c
        for iy in range(0, tl.max(grid_h)):
            y = _roi_sample(y_start, ph, bin_h, iy, grid_h)
            y_ok = (y >= -1) & (y <= H) & (iy < grid_h)
            y_low, y_high, ly, hy, y_moves = _roi_corner(y, y_ok, H, COMPUTE)
            # reference._roi_position: where the sample sits along the box (0 at y1, 1 at y2), in float64;
            # 0 where aligned=False forced the size to 1. The factors d y / d y1 and d y / d y2 are rounded once.
            ay = tl.where(y_along != 0, _roi_position(ph, iy, grid_h, PH), 0.0)
            y_lo_factor = (scale * (1.0 - ay)).to(COMPUTE)
            y_hi_factor = (scale * ay).to(COMPUTE)
            for ix in range(0, tl.max(grid_w)):
                x = _roi_sample(x_start, pw, bin_w, ix, grid_w)
                x_ok = (x >= -1) & (x <= W) & (ix < grid_w)
                x_low, x_high, lx, hx, x_moves = _roi_corner(x, x_ok, W, COMPUTE)
                ax = tl.where(x_along != 0, _roi_position(pw, ix, grid_w, PW), 0.0)
                take = lanes & y_ok & x_ok
                v1 = tl.load(plane + y_low * m_h + x_low * m_w, mask=take, other=0).to(COMPUTE)
                v2 = tl.load(plane + y_low * m_h + x_high * m_w, mask=take, other=0).to(COMPUTE)
                v3 = tl.load(plane + y_high * m_h + x_low * m_w, mask=take, other=0).to(COMPUTE)
                v4 = tl.load(plane + y_high * m_h + x_high * m_w, mask=take, other=0).to(COMPUTE)
                gy = _div(g * (hx * (v3 - v1) + lx * (v4 - v2)), count)
                gx = _div(g * (hy * (v2 - v1) + ly * (v4 - v3)), count)
                y_take = take & y_moves  # a clamped coordinate does not move with the box
                x_take = take & x_moves
                d_y1 += tl.where(y_take, gy * y_lo_factor, 0.0)
                d_y2 += tl.where(y_take, gy * y_hi_factor, 0.0)
                d_x1 += tl.where(x_take, gx * (scale * (1.0 - ax)).to(COMPUTE), 0.0)
                d_x2 += tl.where(x_take, gx * (scale * ax).to(COMPUTE), 0.0)
    out = grad_rois + k.to(tl.int64) * 5  # (batch, x1, y1, x2, y2)
    ty = grad_rois.dtype.element_ty
    tl.store(out + 1, tl.sum(d_x1, axis=1)[:, None].to(ty), mask=rows)
    tl.store(out + 2, tl.sum(d_y1, axis=1)[:, None].to(ty), mask=rows)
    tl.store(out + 3, tl.sum(d_x2, axis=1)[:, None].to(ty), mask=rows)
    tl.store(out + 4, tl.sum(d_y2, axis=1)[:, None].to(ty), mask=rows)


# ------------------------------------------------------------------------------- deterministic image gradient


@triton.jit(do_not_specialize=("total", "C", "cells", "CW"))
def gather_taps_kernel(
    start, order, cell_of, weight_a, weight_b, grad, grad_images,
    total, C, cells, CW,
    firsts,  # level l's first element among the levels' gradients laid end to end (tuple)
    planes,  # level l's H * W (tuple)
    pixel_offsets,  # level l's first pixel in the entries' numbering, N * (H_0 * W_0 + ...) (tuple)
    g_k, g_c, g_h, g_w,
    ROI: tl.constexpr, CHANNELS_LAST: tl.constexpr, LEVELS: tl.constexpr, COMPUTE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Deterministic image gradient, step 2 (the "pull" of csrc/common/cuda_common.cuh): one lane per element
    (n, c, y, x) of one of the gradients ``grad_images`` (a tuple of LEVELS [N, C, H_l, W_l] in the gradient's
    dtype, each dense NCHW or channels_last: one for crop_and_resize and roi_align, one per level for multi-level
    roi_align). Lane i is element i of the gradients laid end to end, in memory order, so channels_last puts a
    pixel's channels, which share one list, side by side. The host sorted the tap entries by pixel, stably, into
    ``order``, with pixel p's entries at order[start[p]:start[p + 1]]; the lane sums them in that order, which is
    the reference's, so every run gives the same bits (float64: the reference's bits). The loop runs to the
    longest list in the block; shorter lists are masked."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    lanes = i < total
    level = tl.zeros([BLOCK], tl.int64)
    for l in tl.static_range(1, LEVELS):
        level += (i >= firsts[l]).to(tl.int64)
    local = i - _pick(firsts, level, LEVELS)  # the element within its level's gradient
    HW = _pick(planes, level, LEVELS)
    if CHANNELS_LAST:  # local = (n*H*W + y*W + x) * C + c
        c = local % C
        p = local // C
    else:  # local = (n*C + c) * H*W + y*W + x
        c = (local // HW) % C
        p = (local // HW // C) * HW + local % HW
    # p: the pixel n*H*W + y*W + x of the tap entries, after the levels before it
    p += _pick(pixel_offsets, level, LEVELS)
    lo = tl.load(start + p, mask=lanes, other=0)
    length = tl.load(start + p + 1, mask=lanes, other=0) - lo
    acc = tl.zeros([BLOCK], COMPUTE)
    for j in range(0, tl.max(length)):
        take = lanes & (j < length)
        entry = tl.load(order + lo + j, mask=take, other=0)
        out_cell = tl.load(cell_of + entry, mask=take, other=0)
        k = out_cell // cells
        cell = out_cell % cells
        g = tl.load(grad + k * g_k + c * g_c + (cell // CW) * g_h + (cell % CW) * g_w, mask=take, other=0)
        g = g.to(COMPUTE)
        a = tl.load(weight_a + entry, mask=take, other=0)
        b = tl.load(weight_b + entry, mask=take, other=1)
        if ROI:
            contribution = _div(g * a, b)  # (g * (hy * hx)) / count
        else:
            contribution = a * (b * g)  # (1 - x_lerp) * ((1 - y_lerp) * g)
        acc += tl.where(take, contribution, 0.0)
    out = _pick(grad_images, level, LEVELS)
    tl.store(out + local, acc.to(out.dtype.element_ty), mask=lanes)
