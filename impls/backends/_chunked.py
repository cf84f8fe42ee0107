"""The kernels that ``vectorized`` and ``compiled`` share: pure torch, no loops over samples, any device.

The two backends differ only in the per-chunk *steps* they hand these kernels (``Steps``): ``vectorized.py`` the
functions below as they are, ``compiled.py`` the same functions compiled by ``torch.compile``.

Bilinear sampling is separable: a sample at (y, x) reads rows ``lo_y, hi_y`` and columns ``lo_x, hi_x`` with
weights ``w_y * w_x``. Both operators are therefore written as one sampler over per-box row and column
"axes" (indices, weights and box derivatives of every sample coordinate), gathered from the feature map viewed
as rows of channels ``[N*H*W, C]``. The feature map is read in place through indices, never copied per box: memory
is one channels-last copy of the map (none when it is channels_last already) plus a bounded chunk of gathered
samples (``_CHUNK_ELEMENTS``), however many boxes there are. Backward is written with ``index_put_`` (image) and
reductions (boxes), not by autograd.

Cost: about five gathered tensors of ``chunk x samples x C`` per chunk; half types are computed in float32. A
box whose adaptive sample grid alone exceeds a chunk (a 10,000-pixel box has ~1,400 x 1,400 samples per bin) is
itself split over its samples, so memory stays bounded for every box size.
Sample positions are computed by the reference's expressions, in the same order and precision (roi_align in
float64, crop_and_resize in the compute dtype, as ``csrc/`` does), so a sample on a pixel row lands on it here
too and the box gradient takes the same row pair. The sums then run in another order than ``reference.py``:
float results agree to rounding, not bit for bit.

Structure: each kernel is a Python loop over chunks that computes the chunk's sample geometry (``_Cells``) and
calls one *step* (``sample_step``, ``scatter_step``, ``box_grad_step``, shared by both operators): a function of
tensors and ints with no control flow on values, so that ``torch.compile(fullgraph=True, dynamic=True)`` takes
each as one graph. The ``compiled`` backend (``compiled.py``) is these kernels with those steps compiled.
With ``sampling_ratio > 0`` the loop is plain Python on shapes too, so ``torch.compile`` of roi_align takes the
whole call as one graph. The adaptive grid's grouping of boxes reads their values (``_roi_chunks``), which
Dynamo cannot trace: under ``torch.compile`` those calls become one opaque custom operator each
(``_adaptive_ops.py``), so ``fullgraph=True`` holds there too.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, NamedTuple

import torch

from ..core import layout as _layout
from ..core.layout import cells_last as _cells_last
from ..core.layout import channel_rows as _rows
from ..core.layout import compute_dtype as _compute_dtype
from ..core.registry import OpKernels
from ._masked_levels import multiscale_kernels
from ._roi_geometry import adaptive_grid, roi_boxes

# Gathered values per corner tensor in one chunk of boxes: 2**22 elements = 16 MB in float32, so a chunk
# holds at most ~100 MB of temporaries whatever K is (P2 box head, 7x7 x 2x2 samples x 256 channels: 83 boxes).
_CHUNK_ELEMENTS = 1 << 22




@dataclasses.dataclass
class _Axis:
    """Sample coordinates of a chunk of Kc boxes along one side, S samples each. Every field is [Kc, S, 2], the
    sample's low and high tap side by side: then no load along the sample dimension is contiguous, which steers
    Inductor to vectorize the compiled steps over channels (``compiled.py``, "Inductor settings")."""

    tap: torch.Tensor  # int64 pixel index of the (low, high) tap
    weight: torch.Tensor  # weight of the (low, high) tap (0 where the sample is out of range)
    d: torch.Tensor  # d coordinate / d (box start, box end) (0 where the coordinate does not move with the box)

    @classmethod
    def of(cls, lo, hi, w_lo, w_hi, d_start, d_end) -> "_Axis":
        return cls(torch.stack([lo, hi], -1), torch.stack([w_lo, w_hi], -1), torch.stack([d_start, d_end], -1))




def _image_index(index: torch.Tensor, N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each box's image [K] as a safe int64 index, and whether it was valid: a whole number in ``[0, N)``.

    The public ops reject a bad index before any backend runs, in eager and compiled mode
    (``impls/ops/<op>/arguments.py``); the kernels called directly still must not read another image. Here an invalid
    index points at image 0, ``_cells`` gives the box's samples no weight (so no gradient) and the kernels make its
    output NaN, as in the ``cuda`` kernels: never another image's values (an index of -1 would otherwise wrap to
    image N - 1)."""
    valid = (index >= 0) & (index < N)
    if index.is_floating_point():
        valid &= index == index.floor()
    return torch.where(valid, index, torch.zeros_like(index)).long().contiguous(), valid


# The per-chunk steps: the work on the feature map, shared by both operators. Each is a function of tensors and
# ints with no Python control flow on tensor values, so that torch.compile(fullgraph=True, dynamic=True) takes
# each as one graph (the ``compiled`` backend). Output cell (ph, pw) of a box takes the ``sy x sx`` samples
# (roi_align's bin; 1 x 1 for crop_and_resize) of its sample rows ``ph*sy ..`` and columns ``pw*sx ..``. Inside a
# step everything is indexed [Kc, PH, sy, PW, sx] (+ C) by broadcasting: sizes arrive as tensor dimensions and no
# tensor is reshaped.


class _Cells(NamedTuple):
    """The samples of a chunk of Kc boxes by output cell: ``n`` [Kc] the boxes' images; the y axis' ``y_tap``,
    ``y_weight``, ``y_d`` [Kc, PH, sy, 2] and the x axis' [Kc, PW, sx, 2] (``_Axis`` fields); ``count`` (0-d, in
    the compute dtype): samples per cell in the whole grid, the mean's divisor."""

    n: torch.Tensor
    y_tap: torch.Tensor
    y_weight: torch.Tensor
    y_d: torch.Tensor
    x_tap: torch.Tensor
    x_weight: torch.Tensor
    x_d: torch.Tensor
    count: torch.Tensor


def _cells(n, valid, ay: _Axis, ax: _Axis, PH: int, PW: int, count: int, dtype: torch.dtype) -> _Cells:
    """Axes [Kc, PH*sy, 2] and [Kc, PW*sx, 2] cut by output cell; the samples of a box whose image index was invalid
    (``valid`` [Kc] False, ``_image_index``) get weight 0: outside the map, reading and receiving nothing."""
    Kc = n.shape[0]
    keep = valid.view(Kc, 1, 1, 1).to(ay.weight.dtype)

    def y(t):
        return t.view(Kc, PH, -1, 2)

    def x(t):
        return t.view(Kc, PW, -1, 2)

    return _Cells(n, y(ay.tap), y(ay.weight) * keep, y(ay.d), x(ax.tap), x(ax.weight) * keep, x(ax.d),
                  torch.tensor(count, dtype=dtype, device=n.device))


def _y(t):
    return t[:, :, :, None, None]  # [Kc, PH, sy, ...] -> [Kc, PH, sy, 1, 1, ...]


def _x(t):
    return t[:, None, None]  # [Kc, PW, sx, ...] -> [Kc, 1, 1, PW, sx, ...]


def _taps(n, y_tap, y_weight, x_tap, x_weight, H: int, W: int):
    """Rows of ``_rows()`` read by every sample's four taps and their weights, each [Kc, PH, sy, PW, sx], in the
    order (low y, low x), (low y, high x), (high y, low x), (high y, high x)."""
    row0 = n[:, None, None, None, None] * H
    return [
        ((row0 + _y(y_tap[..., a])) * W + _x(x_tap[..., b]), _y(y_weight[..., a]) * _x(x_weight[..., b]))
        for a in (0, 1)
        for b in (0, 1)
    ]


def _inside(y_weight, x_weight) -> torch.Tensor:
    """Whether each sample is inside the map (some tap weighs): [Kc, PH, sy, PW, sx]."""
    return (_y(y_weight.sum(-1)) * _x(x_weight.sum(-1))) > 0


def sample_step(rows, n, y_tap, y_weight, x_tap, x_weight, H: int, W: int, outside) -> torch.Tensor:
    """Sums of the bilinear values of each cell's samples, reading rows [N*H*W, C]: [Kc, PH, PW, C]. A sample
    outside the map counts as ``outside``: 0 for roi_align, whose out-of-range samples add nothing (a 0-d tensor);
    crop_and_resize's extrapolation value, or NaN for a box with an invalid image, per box ([Kc, 1, 1, 1, 1, 1])."""
    values = sum(w[..., None] * rows[r] for r, w in _taps(n, y_tap, y_weight, x_tap, x_weight, H, W))
    return torch.where(_inside(y_weight, x_weight)[..., None], values, outside).sum(dim=(2, 4))


def scatter_step(grad_rows, g, n, y_tap, y_weight, x_tap, x_weight, H: int, W: int, count) -> None:
    """Adds each sample's share (1 / count) of its cell's incoming gradient g [Kc, PH, PW, C] to its four taps in
    grad_rows [N*H*W, C], in place."""
    share = g[:, :, None, :, None, :] / count  # [Kc, PH, 1, PW, 1, C]
    for r, w in _taps(n, y_tap, y_weight, x_tap, x_weight, H, W):
        grad_rows.index_put_((r,), w[..., None] * share, accumulate=True)


def box_grad_step(rows, g, n, y_tap, y_weight, y_d, x_tap, x_weight, x_d, H: int, W: int, count) -> torch.Tensor:
    """d loss / d (y_start, x_start, y_end, x_end) per box [Kc, 4], given its cells' incoming gradient
    g [Kc, PH, PW, C]."""
    share = g[:, :, None, :, None, :] / count  # [Kc, PH, 1, PW, 1, C]
    tl, tr, bl, br = (rows[r] for r, _ in _taps(n, y_tap, y_weight, x_tap, x_weight, H, W))  # [Kc, PH, sy, PW, sx, C]
    wyl, wyh = _y(y_weight[..., 0, None]), _y(y_weight[..., 1, None])  # [Kc, PH, sy, 1, 1, 1]
    wxl, wxh = _x(x_weight[..., 0, None]), _x(x_weight[..., 1, None])  # [Kc, 1, 1, PW, sx, 1]
    gy = (share * (wxl * (bl - tl) + wxh * (br - tr))).sum(dim=(3, 4, 5))  # [Kc, PH, sy]: d loss / d sample row
    gx = (share * (wyl * (tr - tl) + wyh * (br - bl))).sum(dim=(1, 2, 5))  # [Kc, PW, sx]: d loss / d sample column
    dy = (gy[..., None] * y_d).sum(dim=(1, 2))  # [Kc, 2]: d / d (y_start, y_end)
    dx = (gx[..., None] * x_d).sum(dim=(1, 2))  # [Kc, 2]: d / d (x_start, x_end)
    return torch.stack([dy[:, 0], dx[:, 0], dy[:, 1], dx[:, 1]], dim=1)  # [Kc, 4]


def _chunks(index: torch.Tensor, samples_per_box: int):
    """Consecutive slices of ``index`` [K] holding at most ``_CHUNK_ELEMENTS`` gathered values each; none for K = 0."""
    step = max(1, _CHUNK_ELEMENTS // max(samples_per_box, 1))
    return [idx for idx in index.split(step) if idx.shape[0] > 0]


# ------------------------------------------------------------------------------------------ crop_and_resize


def _crop_axis(start, end, crop: int, size: int, nearest: bool) -> _Axis:
    """crop_and_resize's corner-aligned samples of normalized sides start/end [Kc] on a side of ``size``."""
    i = torch.arange(crop, device=start.device, dtype=start.dtype)  # [S]
    if crop > 1:
        # The expressions of reference._crop_coordinate and its derivatives, in the compute dtype.
        scale = (end - start) * (size - 1) / (crop - 1)  # [Kc] sample spacing in pixels
        coord = start[:, None] * (size - 1) + i * scale[:, None]  # [Kc, S]
        ratio = torch.full((), size - 1, dtype=start.dtype, device=start.device) / (crop - 1)  # [] in the dtype
        d_start, d_end = (size - 1) - i * ratio, i * ratio  # [S]
    else:
        coord = (0.5 * (start + end) * (size - 1))[:, None]  # [Kc, 1]: the box centre
        d_start = d_end = torch.full_like(i, 0.5 * (size - 1))  # [1]
    valid = (coord >= 0) & (coord <= size - 1)  # [Kc, S]; NaN compares False
    coord = torch.where(valid, coord, torch.zeros_like(coord))  # keeps every tap index inside the map
    low = coord.floor()
    if nearest:
        nearest_index = torch.where(coord - low >= 0.5, low + 1, low).long()  # round half away from zero
        one = valid.to(coord.dtype)
        zero = torch.zeros_like(coord)
        return _Axis.of(nearest_index, nearest_index, one, zero, zero, zero)
    frac = coord - low  # [Kc, S]
    mask = valid.to(coord.dtype)
    return _Axis.of(low.long(), coord.ceil().long(), (1 - frac) * mask, frac * mask, d_start * mask, d_end * mask)


def _crop_cells(boxes, n, valid, crop_height, crop_width, H, W, method, dtype) -> _Cells:
    """The samples of boxes [Kc, 4] on images n [Kc] (``_image_index``, with ``valid``), one per output cell."""
    b = boxes.to(_compute_dtype(boxes.dtype))  # [Kc, 4]
    nearest = method == "nearest"
    ay = _crop_axis(b[:, 0], b[:, 2], crop_height, H, nearest)  # [Kc, ch, 2]
    ax = _crop_axis(b[:, 1], b[:, 3], crop_width, W, nearest)  # [Kc, cw, 2]
    return _cells(n, valid, ay, ax, crop_height, crop_width, 1, dtype)


def crop_and_resize_forward(image, boxes, box_index, crop_height, crop_width, method, extrapolation_value, *,
                            steps):
    N, C, H, W = image.shape
    K = boxes.shape[0]
    rows = _rows(image)  # [N*H*W, C]
    n, valid = _image_index(box_index, N)  # [K]
    # [K, 1, 1, 1, 1, 1]: what a sample outside the map reads; every sample of an invalid box is outside.
    outside = torch.where(valid, rows.new_full((), extrapolation_value), math.nan).view(K, 1, 1, 1, 1, 1)
    out = torch.empty((K, crop_height, crop_width, C), dtype=rows.dtype, device=image.device)
    for idx in _chunks(torch.arange(K, device=image.device), crop_height * crop_width * C):
        c = _crop_cells(boxes[idx], n[idx], valid[idx], crop_height, crop_width, H, W, method, rows.dtype)
        out[idx] = steps.sample(rows, c.n, c.y_tap, c.y_weight, c.x_tap, c.x_weight, H, W,
                                outside[idx])  # [Kc, ch, cw, C]
    return _layout.like(out.permute(0, 3, 1, 2).to(image.dtype), image)  # [K, C, ch, cw]




def crop_and_resize_backward_input(
    grad, boxes, box_index, crop_height, crop_width, batch_size, channels, height, width, method, *, steps
):
    N, C, H, W = batch_size, channels, height, width
    K = boxes.shape[0]
    n, valid = _image_index(box_index, N)  # [K]
    g_all = _cells_last(grad)  # [K, ch, cw, C]
    grad_rows = g_all.new_zeros((N * H * W, C))  # [N*H*W, C]
    for idx in _chunks(torch.arange(K, device=grad.device), crop_height * crop_width * C):
        c = _crop_cells(boxes[idx], n[idx], valid[idx], crop_height, crop_width, H, W, method, grad_rows.dtype)
        steps.scatter(grad_rows, g_all[idx], c.n, c.y_tap, c.y_weight, c.x_tap, c.x_weight, H, W, c.count)
    return _layout.like(grad_rows.view(N, H, W, C).permute(0, 3, 1, 2).to(grad.dtype), grad)  # [N, C, H, W]


def crop_and_resize_backward_boxes(grad, image, boxes, box_index, crop_height, crop_width, method, *, steps):
    N, C, H, W = image.shape
    K = boxes.shape[0]
    rows = _rows(image)  # [N*H*W, C]
    n, valid = _image_index(box_index, N)  # [K]
    g_all = _cells_last(grad)  # [K, ch, cw, C]
    grad_boxes = boxes.new_zeros((K, 4), dtype=rows.dtype)  # (y1, x1, y2, x2) order
    for idx in _chunks(torch.arange(K, device=image.device), crop_height * crop_width * C):
        c = _crop_cells(boxes[idx], n[idx], valid[idx], crop_height, crop_width, H, W, method, rows.dtype)
        grad_boxes[idx] = steps.box_grad(rows, g_all[idx], c.n, c.y_tap, c.y_weight, c.y_d, c.x_tap, c.x_weight,
                                         c.x_d, H, W, c.count)  # [Kc, 4]
    return grad_boxes.to(boxes.dtype)


# ------------------------------------------------------------------------------------------------ roi_align


def _roi_axis(start, bin_size, clamped, pooled: int, grid: int, first: int, count: int, extent: int,
              spatial_scale: float, dtype: torch.dtype) -> _Axis:
    """roi_align's samples ``first .. first + count - 1`` of every bin along one side, for Kc boxes with the same
    ``grid``: [Kc, pooled * count], bin-major. Positions in float64; weights and derivatives in ``dtype``."""
    f64 = dict(device=start.device, dtype=torch.float64)
    p = torch.arange(pooled, **f64)[:, None]  # [P, 1]
    i = torch.arange(first, first + count, **f64)[None, :]  # [1, g]
    b = bin_size[:, None, None]  # [Kc, 1, 1]
    # reference._roi_sample: start + p * bin_size + (i + 0.5) * bin_size / grid, evaluated left to right.
    coord = (start[:, None, None] + p * b + (i + 0.5) * b / grid).flatten(1)  # [Kc, S]
    position = ((p + (i + 0.5) / grid) / pooled).reshape(-1)  # [S]: reference._roi_position
    in_range = (coord >= -1) & (coord <= extent) & (extent > 0)  # [Kc, S]; NaN compares False
    c = coord.clamp(min=0)
    low = c.floor()
    at_end = low >= extent - 1
    low = torch.where(at_end, torch.full_like(low, extent - 1), low)
    high = torch.where(at_end, low, low + 1)
    frac = torch.where(at_end, torch.zeros_like(c), c - low)  # [Kc, S]
    mask = in_range.to(torch.float64)
    moves = in_range & (coord > 0) & ~at_end  # [Kc, S]: the coordinate was not clamped
    along = torch.where(clamped[:, None], torch.zeros_like(coord), position)  # [Kc, S]; a clamped side is fixed
    d_start = torch.where(moves, spatial_scale * (1 - along), torch.zeros_like(coord))
    d_end = torch.where(moves, spatial_scale * along, torch.zeros_like(coord))
    return _Axis.of(low.long(), high.long(), ((1 - frac) * mask).to(dtype), (frac * mask).to(dtype),
                 d_start.to(dtype), d_end.to(dtype))


def _roi_cells(rois, n, valid, H, W, spatial_scale, pooled_height, pooled_width, aligned, grid, samples,
               dtype) -> _Cells:
    """The samples of a chunk of boxes rois [Kc, 5] on images n [Kc] (``_image_index``, with ``valid``) sharing the
    sample grid ``(gh, gw)``: of every bin, the samples ``((first_y, count_y), (first_x, count_x))`` of that grid."""
    b = roi_boxes(rois, spatial_scale, pooled_height, pooled_width, aligned)  # [Kc] each
    (gh, gw), ((fy, sy), (fx, sx)) = grid, samples
    # ay: [Kc, PH*sy, 2], ax: [Kc, PW*sx, 2]
    ay = _roi_axis(b.y_start, b.bin_h, b.h_clamped, pooled_height, gh, fy, sy, H, spatial_scale, dtype)
    ax = _roi_axis(b.x_start, b.bin_w, b.w_clamped, pooled_width, gw, fx, sx, W, spatial_scale, dtype)
    return _cells(n, valid, ay, ax, pooled_height, pooled_width, gh * gw, dtype)


def _blocks(grid: int, width: int) -> list[tuple[int, int]]:
    """``range(grid)`` in consecutive pieces ``(first, count)`` of at most ``width``."""
    return [(i, min(width, grid - i)) for i in range(0, grid, width)]


def _roi_chunks(rois, C, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    """Boxes grouped by sample grid (gh, gw), cut into chunks of at most ``_CHUNK_ELEMENTS`` gathered values:
    several boxes per chunk, or one box's samples in pieces when its grid alone is larger. Yields
    ``(idx, (gh, gw), ((first_y, count_y), (first_x, count_x)))``: box ids [Kc], their grid and the samples of
    every bin that this chunk takes.

    With ``sampling_ratio > 0`` every box has the same grid, and this is plain Python on ints and shapes, which
    ``torch.compile`` traces into one graph. The adaptive grid (``sampling_ratio <= 0``, ``ceil(side / bins)``
    per box) is data-dependent: the groups and their sizes are read from the boxes' values (``unique``,
    ``nonzero``), and each group's grid decides the shapes of its chunks' tensors. That grouping is Python
    control flow on values, which ``torch.compile`` cannot trace: a traced call with this grid goes through
    ``_adaptive_ops.py`` instead and never gets here while tracing.
    """
    K = rois.shape[0]
    per_sample = pooled_height * pooled_width * max(C, 1)  # gathered values of one (iy, ix) over a box's bins
    samples_per_chunk = max(1, _CHUNK_ELEMENTS // per_sample)
    if K == 0:
        return
    if sampling_ratio > 0:
        groups = [(sampling_ratio, sampling_ratio, torch.arange(K, device=rois.device))]
    else:
        boxes = roi_boxes(rois, spatial_scale, pooled_height, pooled_width, aligned)
        grid_h, grid_w = (g.long() for g in adaptive_grid(boxes, pooled_height, pooled_width))  # [K] each
        grids = torch.stack([grid_h, grid_w], dim=1)  # [K, 2]
        groups = [
            (gh, gw, ((grid_h == gh) & (grid_w == gw)).nonzero().flatten())  # [Kg]
            for gh, gw in torch.unique(grids, dim=0).tolist()
            if gh > 0 and gw > 0  # an empty grid averages nothing: those outputs stay 0
        ]
    for gh, gw, members in groups:
        if gh * gw <= samples_per_chunk:
            box_chunks = members.split(samples_per_chunk // (gh * gw))
            pieces = [((0, gh), (0, gw))]
        else:
            box_chunks = members.split(1)
            width = min(gw, samples_per_chunk)
            pieces = [(iy, ix) for iy in _blocks(gh, max(1, samples_per_chunk // width)) for ix in _blocks(gw, width)]
        for idx in box_chunks:
            for samples in pieces:
                yield idx, (gh, gw), samples


def _traced_adaptive(sampling_ratio: int) -> bool:
    """Whether this roi_align call is being traced by torch.compile with the adaptive grid, whose grouping of boxes
    by grid reads their values: it then goes through an opaque custom operator (``_adaptive_ops.py``)."""
    return sampling_ratio <= 0 and torch.compiler.is_compiling()


def roi_align_forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned, *,
                      steps):
    if _traced_adaptive(sampling_ratio):
        return torch.ops.impls.adaptive_roi_align_forward(input, rois, spatial_scale, pooled_height,
                                                          pooled_width, sampling_ratio, aligned, steps.name)
    N, C, H, W = input.shape
    K = rois.shape[0]
    rows = _rows(input)  # [N*H*W, C]
    n, valid = _image_index(rois[:, 0], N)  # [K]
    outside = rows.new_zeros(())
    sums = torch.zeros((K, pooled_height, pooled_width, C), dtype=rows.dtype, device=input.device)
    counts = torch.ones(K, dtype=rows.dtype, device=input.device)  # [K] samples per bin, at least 1
    for idx, grid, samples in _roi_chunks(rois, C, spatial_scale, pooled_height, pooled_width, sampling_ratio,
                                          aligned):
        c = _roi_cells(rois[idx], n[idx], valid[idx], H, W, spatial_scale, pooled_height, pooled_width, aligned, grid,
                       samples, rows.dtype)
        part = steps.sample(rows, c.n, c.y_tap, c.y_weight, c.x_tap, c.x_weight, H, W,
                            outside)  # [Kc, PH, PW, C]
        sums.index_add_(0, idx, part)
        counts[idx] = float(grid[0] * grid[1])
    counts = torch.where(valid, counts, math.nan)  # an invalid box's output: NaN
    sums /= counts[:, None, None, None]  # [K, PH, PW, C]: the bin means
    return _layout.like(sums.permute(0, 3, 1, 2).to(input.dtype), input)  # [K, C, PH, PW]


def roi_align_backward_input(
    grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width, sampling_ratio,
    aligned, *, steps,
):
    if _traced_adaptive(sampling_ratio):
        return torch.ops.impls.adaptive_roi_align_backward_input(
            grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width, sampling_ratio,
            aligned, steps.name)
    N, C, H, W = batch_size, channels, height, width
    n, valid = _image_index(rois[:, 0], N)  # [K]
    g_all = _cells_last(grad)  # [K, PH, PW, C]
    grad_rows = g_all.new_zeros((N * H * W, C))  # [N*H*W, C]
    for idx, grid, samples in _roi_chunks(rois, C, spatial_scale, pooled_height, pooled_width, sampling_ratio,
                                          aligned):
        c = _roi_cells(rois[idx], n[idx], valid[idx], H, W, spatial_scale, pooled_height, pooled_width, aligned, grid,
                       samples, grad_rows.dtype)
        steps.scatter(grad_rows, g_all[idx], c.n, c.y_tap, c.y_weight, c.x_tap, c.x_weight, H, W, c.count)
    return _layout.like(grad_rows.view(N, H, W, C).permute(0, 3, 1, 2).to(grad.dtype), grad)  # [N, C, H, W]


def roi_align_backward_boxes(grad, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned,
                             *, steps):
    if _traced_adaptive(sampling_ratio):
        return torch.ops.impls.adaptive_roi_align_backward_boxes(
            grad, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned, steps.name)
    N, C, H, W = input.shape
    K = rois.shape[0]
    rows = _rows(input)  # [N*H*W, C]
    n, valid = _image_index(rois[:, 0], N)  # [K]
    g_all = _cells_last(grad)  # [K, PH, PW, C]
    grad_boxes = rows.new_zeros((K, 4))  # (y1, x1, y2, x2) order
    for idx, grid, samples in _roi_chunks(rois, C, spatial_scale, pooled_height, pooled_width, sampling_ratio,
                                          aligned):
        c = _roi_cells(rois[idx], n[idx], valid[idx], H, W, spatial_scale, pooled_height, pooled_width, aligned, grid,
                       samples, rows.dtype)
        part = steps.box_grad(rows, g_all[idx], c.n, c.y_tap, c.y_weight, c.y_d, c.x_tap, c.x_weight, c.x_d, H, W,
                              c.count)  # [Kc, 4]
        grad_boxes.index_add_(0, idx, part)
    y1, x1, y2, x2 = grad_boxes.unbind(1)  # each [K]
    zero = torch.zeros_like(x1)  # the batch index gets no gradient
    return torch.stack([zero, x1, y1, x2, y2], dim=1).to(rois.dtype)  # [K, 5]


class Steps(NamedTuple):
    """The per-chunk steps the kernels above run, and the backend they belong to: ``vectorized`` runs the functions
    of this module as they are, ``compiled`` runs them compiled."""

    name: str
    sample: Callable
    scatter: Callable
    box_grad: Callable


# Every Steps that a backend registered, by name: the adaptive-grid operators (``_adaptive_ops.py``) are called with
# the name, since a custom operator takes no Python objects.
STEPS: dict[str, Steps] = {}


def kernels_with(steps: Steps) -> dict[str, OpKernels]:
    """Both operators' kernels running ``steps``, and multi-level roi_align over them (``_masked_levels.py``), for
    the registry; ``steps`` becomes known by its name."""
    if steps.name in STEPS:
        raise ValueError(f"steps {steps.name!r} are registered twice")
    STEPS[steps.name] = steps
    bound = {
        "crop_and_resize": (crop_and_resize_forward, crop_and_resize_backward_input, crop_and_resize_backward_boxes),
        "roi_align": (roi_align_forward, roi_align_backward_input, roi_align_backward_boxes),
    }
    kernels = {op: OpKernels(*(functools.partial(k, steps=steps) for k in ks)) for op, ks in bound.items()}
    kernels["multiscale_roi_align"] = multiscale_kernels(kernels["roi_align"])
    return kernels
