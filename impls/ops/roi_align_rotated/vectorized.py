"""roi_align_rotated in pure torch, vectorized over chunks of boxes: detectron2's ROIAlignRotated with gradients to the
feature map and to the boxes (the math of ``SPEC.md``: always "aligned", grid sizes held fixed in the box gradient).

What it costs. The feature map is viewed as rows of channels ``[N*H*W, C]`` (one copy per call unless it is
channels_last float32/float64 already; never one per box) and read through tap indices. Boxes are processed in
chunks; a chunk gathers ``Kc x PH x PW x IY x IX x C`` values per tap, at most ``_CHUNK_ELEMENTS`` (16 MB in
float32), and a step holds at most about six such tensors at once (~100 MB) whatever K is. No ``K x C x H x W``
tensor exists. A box whose sample grid alone exceeds a chunk is split over its samples (pieces of its ``iy`` and
``ix`` ranges).
The rotated geometry of each sample (``_sample_geometry``: positions, taps, weights, box derivatives) is computed
once per chunk and shared by all channels: ``Kc x PH x PW x IY x IX`` values, no channel dimension.

Precision (as roi_align, CONVENTIONS.md §6). Box geometry and sample positions are float64 whatever the dtype,
evaluated in ``SPEC.md``'s order (``start + p*bin + (i + 0.5)*bin/grid``, then ``yy*cos - xx*sin + cy_s``);
interpolation weights and the sums are in the compute dtype: float64 for float64, float32 for float32 and the half
types (rounded once to the input dtype at the end). Sums run in torch's reduction order, so float results agree
with the scalar oracle to rounding, not bit for bit.

Determinism. The forward and the box gradient are reductions in a fixed order. The image gradient adds with
``index_put_(accumulate=True)`` over the chunk's taps flattened in the order (box, ph, pw, iy, ix, corner), chunks
one after another: on the CPU that kernel adds serially in index order, so every run gives the same bits; on CUDA
torch makes it deterministic under ``torch.use_deterministic_algorithms(True)`` (torch's documented list).

The adaptive grid (``sampling_ratio <= 0``: ``ceil(h_s / PH)`` x ``ceil(w_s / PW)`` samples per bin, per box) is
data-dependent. Every box of a chunk is padded to the chunk's largest grid, the extra samples masked (weight 0,
no gradient), so the per-chunk functions see only shapes. Planning the chunks (``_plan``) reads the grid sizes
once to the host (one synchronization on a GPU), sorts the boxes by grid area so that a chunk's boxes have similar
grids (little padding), and cuts chunks by the memory bound. With a fixed ``sampling_ratio`` nothing is read: the
chunks are consecutive slices of the boxes, and ``torch.compile(fullgraph=True)`` takes a whole call as one graph.

Building ``compiled`` from this module (``backends.py``, as ``impls/backends/compiled.py`` does for roi_align). The
kernels take a keyword ``steps`` (a ``Steps``; default ``EAGER``, these functions as they are). Each step is a
function of tensors and ints with no Python control flow on values: ``sample_step``, ``scatter_step`` (in place)
and ``box_grad_step``. For ``compiled``: ``Steps("compiled", CompiledStep(sample_step), CompiledStep(scatter_step),
CompiledStep(box_grad_step))`` and ``functools.partial(forward, steps=...)`` (likewise both backwards). The
varying dimensions to mark unbacked, by parameter name: ``rows``/``grad_rows`` (1,); ``g`` (0, 1, 2, 3);
``tap``, ``y_weight``, ``x_weight``, ``d_y``, ``d_x`` (0, 1, 2, 3, 4); ``count`` (0,). The geometry stays eager,
as roi_align's. Under ``torch.compile`` the adaptive grid's ``_plan`` cannot be traced (it reads values): while
tracing, the three kernels with ``sampling_ratio <= 0`` call opaque custom operators instead
(``traced_adaptive.py``), which run these same kernels eagerly with the same steps (``STEPS``, by name).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import torch

from ...core import layout as _layout
from ...core.layout import cells_last as _cells_last
from ...core.layout import channel_rows as _rows
from ...core.registry import OpKernels

# Gathered values per tap tensor in one chunk: 2**22 elements = 16 MB in float32 (e.g. a 7x7 head, 2x2 samples,
# 256 channels: 83 boxes per chunk).
_CHUNK_ELEMENTS = 1 << 22












# ------------------------------------------------------------------------------------------------ geometry


class Boxes(NamedTuple):
    """Per box, ``SPEC.md``'s constants: float64 ``[K]`` unless said otherwise."""

    n: torch.Tensor  # int64 image index, 0 where invalid
    valid: torch.Tensor  # bool: the batch column is a whole number in [0, N)
    cx_s: torch.Tensor  # cx * scale - 0.5
    cy_s: torch.Tensor  # cy * scale - 0.5
    start_h: torch.Tensor  # -h_s / 2
    start_w: torch.Tensor  # -w_s / 2
    bin_h: torch.Tensor  # h_s / PH
    bin_w: torch.Tensor  # w_s / PW
    cos: torch.Tensor  # cos(theta)
    sin: torch.Tensor  # sin(theta)
    grid_h: torch.Tensor  # samples per bin along the box's height (0 for a zero-height adaptive box)
    grid_w: torch.Tensor
    count: torch.Tensor  # max(grid_h * grid_w, 1): a bin's divisor


def box_geometry(rois: torch.Tensor, N: int, spatial_scale: float, pooled_height: int, pooled_width: int,
                 sampling_ratio: int, clockwise: bool) -> Boxes:
    """``SPEC.md``'s per-box constants of rois [K, 6] (batch, cx, cy, w, h, angle in degrees), in float64 torch ops
    in SPEC.md's order; no control flow on values (traceable, no host read). The ``triton`` launcher builds its
    geometry table from this too, so both put every sample at the same float64 position.

    A batch column that is not a whole number in ``[0, N)`` (the public op rejects it; a caller of the kernels may
    not) makes the box invalid: it reads image 0 with no samples, its output is NaN and it gets no gradient, as
    roi_align's ``vectorized`` kernels do. Never another image's values (-1 would otherwise wrap to image N - 1)."""
    r = rois.to(torch.float64)  # [K, 6]
    batch = r[:, 0]
    valid = (batch >= 0) & (batch < N) & (batch == batch.floor())  # [K]; NaN compares False
    n = torch.where(valid, batch, torch.zeros_like(batch)).long()  # [K]
    cx_s = r[:, 1] * spatial_scale - 0.5
    cy_s = r[:, 2] * spatial_scale - 0.5
    w_s = r[:, 3] * spatial_scale
    h_s = r[:, 4] * spatial_scale
    theta = r[:, 5] * math.pi / 180.0
    if clockwise:
        theta = -theta
    bin_h = h_s / pooled_height
    bin_w = w_s / pooled_width
    if sampling_ratio > 0:
        grid_h = torch.full_like(h_s, float(sampling_ratio))
        grid_w = torch.full_like(w_s, float(sampling_ratio))
    else:
        grid_h = torch.ceil(h_s / pooled_height)  # e.g. a 30-pixel-high box on 7 bins: 5 samples per bin side
        grid_w = torch.ceil(w_s / pooled_width)
    # An invalid box samples nothing; a non-finite side (only from a direct kernel call) would make a grid that no
    # loop can run: no samples either (its count stays NaN).
    readable = valid & torch.isfinite(grid_h) & torch.isfinite(grid_w)
    grid_h = torch.where(readable, grid_h, 0.0)
    grid_w = torch.where(readable, grid_w, 0.0)
    count = torch.clamp(grid_h * grid_w, min=1.0)
    return Boxes(n, valid, cx_s, cy_s, -h_s / 2, -w_s / 2, bin_h, bin_w, torch.cos(theta), torch.sin(theta),
                 grid_h, grid_w, count)


def _select(b: Boxes, idx: torch.Tensor) -> Boxes:
    return Boxes(*(t[idx] for t in b))


class _Samples(NamedTuple):
    """A chunk's samples, laid out [Kc, PH, PW, IY, IX] (IY x IX: the chunk's padded piece of every bin's grid):

    tap: int64 [..., 4], the rows of ``_rows()`` read by the corners (low y, low x), (low y, high x),
    (high y, low x), (high y, high x); y_weight, x_weight: [..., 2], the (low, high) tap weights (hy, ly) and
    (hx, lx) in the compute dtype, 0 for a sample that reads 0 (out of range, padded, invalid box);
    d_y, d_x: [..., 5] (None unless asked for), d y and d x / d (cx, cy, w, h, angle in degrees) in the compute
    dtype, 0 along an axis that does not move with the box (clamped to the border) and for a sample that reads 0."""

    tap: torch.Tensor
    y_weight: torch.Tensor
    x_weight: torch.Tensor
    d_y: torch.Tensor
    d_x: torch.Tensor


def _corner(v: torch.Tensor, inside: torch.Tensor, size: int):
    """torchvision's clamp of a coordinate (CONVENTIONS.md §3.3) for every sample at once: (low, high) int64,
    (low weight, high weight) float64, and whether v moves with the box (False where clamped or out of range).
    An out-of-range sample gets v = 0 first, so every tap index is inside the map."""
    v = torch.where(inside, v, torch.zeros_like(v))
    moves = inside & (v > 0)
    v = v.clamp(min=0)
    low = v.floor()
    at_end = low >= size - 1
    low = torch.where(at_end, torch.full_like(low, size - 1), low)
    high = torch.where(at_end, low, low + 1)
    frac = torch.where(at_end, torch.zeros_like(v), v - low)  # ly: y = H-1 exactly after clamping
    return low.long(), high.long(), 1 - frac, frac, moves & ~at_end


def _sample_geometry(b: Boxes, H: int, W: int, pooled_height: int, pooled_width: int, piece, spatial_scale: float,
                     clockwise: bool, dtype: torch.dtype, derivatives: bool = False) -> _Samples:
    """The samples ``piece = ((first_y, count_y), (first_x, count_x))`` of every bin of the chunk's boxes ``b``
    (each field [Kc]): positions in float64 by SPEC.md's expressions, masks, taps, weights and, with
    ``derivatives`` (the box gradient), the box derivatives (else ``d_y = d_x = None``). Samples beyond a box's own
    grid (the chunk is padded to its largest) get no weight. Traceable: shapes only."""
    (fy, sy), (fx, sx) = piece
    f64 = dict(dtype=torch.float64, device=b.cx_s.device)
    Kc = b.cx_s.shape[0]

    def box(t):
        return t.view(Kc, 1, 1, 1, 1)  # [Kc] -> [Kc, 1, 1, 1, 1]

    ph = torch.arange(pooled_height, **f64).view(1, pooled_height, 1, 1, 1)
    pw = torch.arange(pooled_width, **f64).view(1, 1, pooled_width, 1, 1)
    iy = torch.arange(fy, fy + sy, **f64).view(1, 1, 1, sy, 1)
    ix = torch.arange(fx, fx + sx, **f64).view(1, 1, 1, 1, sx)
    grid_h, grid_w = box(b.grid_h), box(b.grid_w)
    # Kept >= 1 in the divisions: a zero grid (zero-size adaptive box) has no sample that is used.
    gh, gw = grid_h.clamp(min=1), grid_w.clamp(min=1)
    bin_h, bin_w = box(b.bin_h), box(b.bin_w)
    # SPEC.md: yy = start_h + ph*bin_h + (iy + 0.5)*bin_h/grid_h, evaluated left to right; xx alike.
    yy = box(b.start_h) + ph * bin_h + (iy + 0.5) * bin_h / gh  # [Kc, PH, 1, IY, 1]
    xx = box(b.start_w) + pw * bin_w + (ix + 0.5) * bin_w / gw  # [Kc, 1, PW, 1, IX]
    cos, sin = box(b.cos), box(b.sin)
    y = yy * cos - xx * sin + box(b.cy_s)  # [Kc, PH, PW, IY, IX]
    x = yy * sin + xx * cos + box(b.cx_s)  # [Kc, PH, PW, IY, IX]
    exists = (iy < grid_h) & (ix < grid_w)  # [Kc, 1, 1, IY, IX]: inside the box's own grid (grid 0: invalid too)
    inside = exists & (y >= -1) & (y <= H) & (x >= -1) & (x <= W)  # [Kc, PH, PW, IY, IX]; NaN compares False
    y_low, y_high, hy, ly, y_moves = _corner(y, inside, H)
    x_low, x_high, hx, lx, x_moves = _corner(x, inside, W)
    row0 = box(b.n) * H
    top, bottom = (row0 + y_low) * W, (row0 + y_high) * W  # [Kc, PH, PW, IY, IX]
    tap = torch.stack([top + x_low, top + x_high, bottom + x_low, bottom + x_high], dim=-1)  # [Kc, PH, PW, IY, IX, 4]
    keep = inside.to(torch.float64)
    y_weight = torch.stack([hy * keep, ly * keep], dim=-1).to(dtype)  # [Kc, PH, PW, IY, IX, 2]
    x_weight = torch.stack([hx * keep, lx * keep], dim=-1).to(dtype)  # [Kc, PH, PW, IY, IX, 2]
    if not derivatives:
        return _Samples(tap, y_weight, x_weight, None, None)
    # Box derivatives (SPEC.md "Gradients"): yy = h_s * a_y, xx = w_s * a_x with the box-relative factors below.
    a_y = (ph + (iy + 0.5) / gh) / pooled_height - 0.5  # [Kc, PH, 1, IY, 1]
    a_x = (pw + (ix + 0.5) / gw) / pooled_width - 0.5  # [Kc, 1, PW, 1, IX]
    s = spatial_scale
    per_degree = (-1.0 if clockwise else 1.0) * math.pi / 180.0  # d theta / d angle
    zero = torch.zeros_like(y)  # [Kc, PH, PW, IY, IX]
    d_y = torch.stack([
        zero,  # d y / d cx
        zero + s,  # d y / d cy
        -(s * a_x * sin) + zero,  # d y / d w
        s * a_y * cos + zero,  # d y / d h
        -(yy * sin + xx * cos) * per_degree,  # d y / d angle: -(x - cx_s) per radian
    ], dim=-1)  # [Kc, PH, PW, IY, IX, 5]
    d_x = torch.stack([
        zero + s,
        zero,
        s * a_x * cos + zero,
        s * a_y * sin + zero,
        (yy * cos - xx * sin) * per_degree,  # d x / d angle: (y - cy_s) per radian
    ], dim=-1)  # [Kc, PH, PW, IY, IX, 5]
    d_y = torch.where(y_moves[..., None], d_y, 0.0).to(dtype)
    d_x = torch.where(x_moves[..., None], d_x, 0.0).to(dtype)
    return _Samples(tap, y_weight, x_weight, d_y, d_x)


# ------------------------------------------------------------------------------------------------ the steps
#
# The work on the feature map, per chunk. Each is a function of tensors with no Python control flow on values,
# so torch.compile(fullgraph=True, dynamic=True) takes each as one graph (the module docstring says how to build
# ``compiled`` from them). Everything is laid out [Kc, PH, PW, IY, IX] (+ corner, + C) by broadcasting.


def _tap_weights(y_weight: torch.Tensor, x_weight: torch.Tensor) -> list[torch.Tensor]:
    """The four corners' weights hy*hx, hy*lx, ly*hx, ly*lx, each [Kc, PH, PW, IY, IX], in ``tap``'s order."""
    return [y_weight[..., a] * x_weight[..., c] for a in (0, 1) for c in (0, 1)]


def _inside(y_weight: torch.Tensor, x_weight: torch.Tensor) -> torch.Tensor:
    """Whether each sample reads the map (hy + ly = 1 > 0 there, 0 elsewhere): bool [Kc, PH, PW, IY, IX]."""
    return (y_weight.sum(-1) * x_weight.sum(-1)) > 0


def sample_step(rows, tap, y_weight, x_weight) -> torch.Tensor:
    """Sums of each bin's bilinear samples, reading rows [N*H*W, C]: [Kc, PH, PW, C]. A sample that reads 0 is
    dropped by ``where`` (not multiplied by 0), so an inf in the map at its dummy tap cannot make a NaN."""
    values = sum(w[..., None] * rows[tap[..., j]]
                 for j, w in enumerate(_tap_weights(y_weight, x_weight)))  # [Kc, PH, PW, IY, IX, C]
    return torch.where(_inside(y_weight, x_weight)[..., None], values, 0.0).sum(dim=(3, 4))


def scatter_step(grad_rows, g, tap, y_weight, x_weight, count) -> None:
    """Adds ``(g * w) / count`` (the reference's expression) of every sample's four taps into grad_rows
    [N*H*W, C], in place, given the bins' incoming gradient g [Kc, PH, PW, C] and the boxes' count [Kc]. One
    ``index_put_`` over the taps flattened in (box, ph, pw, iy, ix, corner) order: a fixed order (module docstring)."""
    w = torch.stack(_tap_weights(y_weight, x_weight), dim=-1)  # [Kc, PH, PW, IY, IX, 4]
    values = g[:, :, :, None, None, None, :] * w[..., None]  # [Kc, PH, PW, IY, IX, 4, C]
    values /= count.view(-1, 1, 1, 1, 1, 1, 1)  # in place: one tensor of 4 x chunk elements, not three
    values.masked_fill_(~_inside(y_weight, x_weight)[..., None, None], 0.0)  # an inf/NaN g times weight 0
    grad_rows.index_put_((tap.reshape(-1),), values.reshape(-1, grad_rows.shape[1]), accumulate=True)


def box_grad_step(rows, g, tap, y_weight, x_weight, d_y, d_x, count) -> torch.Tensor:
    """d loss / d (cx, cy, w, h, angle) per box [Kc, 5], given the bins' incoming gradient g [Kc, PH, PW, C]."""
    share = g[:, :, :, None, None, :] / count.view(-1, 1, 1, 1, 1, 1)  # [Kc, PH, PW, 1, 1, C]
    v1, v2, v3, v4 = (rows[tap[..., j]] for j in range(4))  # [Kc, PH, PW, IY, IX, C] each
    hy, ly = y_weight[..., 0, None], y_weight[..., 1, None]  # [Kc, PH, PW, IY, IX, 1]
    hx, lx = x_weight[..., 0, None], x_weight[..., 1, None]
    gy = (share * (hx * (v3 - v1) + lx * (v4 - v2))).sum(-1)  # [Kc, PH, PW, IY, IX]: d loss / d sample y
    gx = (share * (hy * (v2 - v1) + ly * (v4 - v3))).sum(-1)  # [Kc, PH, PW, IY, IX]: d loss / d sample x
    return (gy[..., None] * d_y + gx[..., None] * d_x).sum(dim=(1, 2, 3, 4))  # [Kc, 5]


class Steps(NamedTuple):
    """The per-chunk steps the kernels run, and the backend they belong to (``EAGER``: this module's functions)."""

    name: str
    sample: Callable
    scatter: Callable
    box_grad: Callable


EAGER = Steps("vectorized", sample_step, scatter_step, box_grad_step)
# Every Steps that ``kernels`` gave a backend, by name: the traced adaptive operators are called with the name.
STEPS: dict[str, Steps] = {}


def _traced_adaptive(sampling_ratio: int) -> bool:
    """Whether torch.compile is tracing a call with the adaptive grid, whose plan reads the boxes' values: the
    kernel then calls its opaque operator (``traced_adaptive.py``)."""
    return sampling_ratio <= 0 and torch.compiler.is_compiling()


# The dimensions of the steps' arguments that vary from call to call, by parameter name: the ``compiled`` backend
# marks them unbacked so that no graph is specialized to a size of 1 (``impls/backends/compiled.py``).
FREE_DIMS = {"rows": (1,), "grad_rows": (1,), "g": (0, 1, 2, 3), "count": (0,),
             **{name: (0, 1, 2, 3, 4) for name in ("tap", "y_weight", "x_weight", "d_y", "d_x")}}


# ------------------------------------------------------------------------------------------------ chunks


class _Chunk(NamedTuple):
    idx: torch.Tensor  # [Kc] int64 box ids
    piece: tuple  # ((first_y, count_y), (first_x, count_x)): the samples of every bin this chunk takes


def _blocks(grid: int, width: int) -> list[tuple[int, int]]:
    """``range(grid)`` in consecutive pieces ``(first, count)`` of at most ``width``."""
    return [(i, min(width, grid - i)) for i in range(0, grid, width)]


def _pieces(gh: int, gw: int, samples_per_chunk: int) -> list[tuple]:
    """A grid too large for one chunk, cut into pieces of at most ``samples_per_chunk`` samples per bin."""
    width = min(gw, samples_per_chunk)
    return [(py, px) for py in _blocks(gh, max(1, samples_per_chunk // width)) for px in _blocks(gw, width)]


def _plan(b: Boxes, C: int, pooled_height: int, pooled_width: int, sampling_ratio: int) -> list[_Chunk]:
    """The chunks of a call, each at most ``_CHUNK_ELEMENTS`` gathered values per tap; none for K = 0.

    Fixed ``sampling_ratio``: consecutive slices of the boxes (Python on shapes only: traceable). Adaptive: the
    grids are read to the host once; boxes with samples are sorted (stably) by grid area and filled greedily into
    chunks padded to the chunk's largest (grid_h, grid_w); a box too large for one chunk goes alone, in pieces."""
    K = b.n.shape[0]
    device = b.n.device
    samples_per_chunk = max(1, _CHUNK_ELEMENTS // (pooled_height * pooled_width * max(C, 1)))
    if K == 0:
        return []
    if sampling_ratio > 0:
        r = sampling_ratio
        if r * r <= samples_per_chunk:
            return [_Chunk(idx, ((0, r), (0, r)))
                    for idx in torch.arange(K, device=device).split(samples_per_chunk // (r * r))]
        return [_Chunk(idx, piece) for idx in torch.arange(K, device=device).split(1)
                for piece in _pieces(r, r, samples_per_chunk)]
    grid_h, grid_w = b.grid_h.long().tolist(), b.grid_w.long().tolist()  # the one host read
    order = sorted((k for k in range(K) if grid_h[k] > 0 and grid_w[k] > 0), key=lambda k: grid_h[k] * grid_w[k])
    chunks, members, max_h, max_w = [], [], 0, 0

    def flush():
        if members:
            chunks.append(_Chunk(torch.tensor(members, dtype=torch.int64, device=device), ((0, max_h), (0, max_w))))

    for k in order:
        gh, gw = grid_h[k], grid_w[k]
        if gh * gw > samples_per_chunk:  # alone and in pieces (sorted last: the chunk so far is complete)
            flush()
            members, max_h, max_w = [], 0, 0
            chunks += [_Chunk(torch.tensor([k], device=device), piece) for piece in _pieces(gh, gw, samples_per_chunk)]
            continue
        h, w = max(max_h, gh), max(max_w, gw)
        if members and (len(members) + 1) * h * w > samples_per_chunk:
            flush()
            members, h, w = [], gh, gw
        members.append(k)
        max_h, max_w = h, w
    flush()
    return chunks


# ------------------------------------------------------------------------------------------------ the kernels


def forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise, *, steps=EAGER):
    """out (Tensor[K, C, PH, PW]) in input's dtype and memory format: each bin's mean of its samples (SPEC.md)."""
    if _traced_adaptive(sampling_ratio):
        return torch.ops.impls.adaptive_roi_align_rotated_forward(input, rois, spatial_scale, pooled_height,
                                                                  pooled_width, sampling_ratio, clockwise, steps.name)
    N, C, H, W = input.shape
    K = rois.shape[0]
    rows = _rows(input)  # [N*H*W, C]
    b = box_geometry(rois, N, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise)
    sums = rows.new_zeros((K, pooled_height, pooled_width, C))  # [K, PH, PW, C]
    for chunk in _plan(b, C, pooled_height, pooled_width, sampling_ratio):
        s = _sample_geometry(_select(b, chunk.idx), H, W, pooled_height, pooled_width, chunk.piece, spatial_scale,
                             clockwise, rows.dtype)
        sums.index_add_(0, chunk.idx, steps.sample(rows, s.tap, s.y_weight, s.x_weight))  # [Kc, PH, PW, C] added
    divisor = torch.where(b.valid, b.count, math.nan).to(rows.dtype)  # [K]; an invalid box's output is NaN
    sums = sums / divisor[:, None, None, None]  # [K, PH, PW, C]: the bin means
    return _layout.like(sums.permute(0, 3, 1, 2).to(input.dtype), input)  # [K, C, PH, PW]


def backward_input(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width,
                   sampling_ratio, clockwise, *, steps=EAGER):
    """d loss / d input (Tensor[N, C, H, W]) in grad's dtype and memory format: the forward's transpose."""
    if _traced_adaptive(sampling_ratio):
        return torch.ops.impls.adaptive_roi_align_rotated_backward_input(
            grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width,
            sampling_ratio, clockwise, steps.name)
    N, C, H, W = batch_size, channels, height, width
    g_all = _cells_last(grad)  # [K, PH, PW, C]
    grad_rows = g_all.new_zeros((N * H * W, C))  # [N*H*W, C]
    b = box_geometry(rois, N, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise)
    count = b.count.to(grad_rows.dtype)  # [K]
    for chunk in _plan(b, C, pooled_height, pooled_width, sampling_ratio):
        s = _sample_geometry(_select(b, chunk.idx), H, W, pooled_height, pooled_width, chunk.piece, spatial_scale,
                             clockwise, grad_rows.dtype)
        steps.scatter(grad_rows, g_all[chunk.idx], s.tap, s.y_weight, s.x_weight, count[chunk.idx])
    return _layout.like(grad_rows.view(N, H, W, C).permute(0, 3, 1, 2).to(grad.dtype), grad)  # [N, C, H, W]


def backward_boxes(grad, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise, *,
                   steps=EAGER):
    """d loss / d rois (Tensor[K, 6]) in rois' dtype: 0 for the batch column, then d / d (cx, cy, w, h, angle in
    degrees) with the grid sizes held fixed."""
    if _traced_adaptive(sampling_ratio):
        return torch.ops.impls.adaptive_roi_align_rotated_backward_boxes(
            grad, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise, steps.name)
    N, C, H, W = input.shape
    K = rois.shape[0]
    rows = _rows(input)  # [N*H*W, C]
    g_all = _cells_last(grad)  # [K, PH, PW, C]
    b = box_geometry(rois, N, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise)
    count = b.count.to(rows.dtype)  # [K]
    grad_boxes = rows.new_zeros((K, 5))  # [K, 5]: (cx, cy, w, h, angle)
    for chunk in _plan(b, C, pooled_height, pooled_width, sampling_ratio):
        s = _sample_geometry(_select(b, chunk.idx), H, W, pooled_height, pooled_width, chunk.piece, spatial_scale,
                             clockwise, rows.dtype, derivatives=True)
        part = steps.box_grad(rows, g_all[chunk.idx], s.tap, s.y_weight, s.x_weight, s.d_y, s.d_x,
                              count[chunk.idx])  # [Kc, 5]
        grad_boxes.index_add_(0, chunk.idx, part)
    return torch.cat([torch.zeros_like(grad_boxes[:, :1]), grad_boxes], dim=1).to(rois.dtype)  # [K, 6]


def kernels(steps: Steps) -> OpKernels:
    """The three kernels running ``steps``, for a backend record (``vectorized``: ``EAGER``; ``compiled``: the same
    steps compiled); ``steps`` becomes known by its name."""
    if STEPS.setdefault(steps.name, steps) is not steps:
        raise ValueError(f"steps {steps.name!r} are registered twice")
    return OpKernels(*(functools.partial(k, steps=steps) for k in (forward, backward_input, backward_boxes)))
