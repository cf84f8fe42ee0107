"""``vectorized``: pure torch, no loops over samples, any device torch runs on.

Bilinear sampling is separable: a sample at (y, x) reads rows ``lo_y, hi_y`` and columns ``lo_x, hi_x`` with
weights ``w_y * w_x``. Both operators are therefore written as one sampler over per-box row and column
"axes" (indices, weights and box derivatives of every sample coordinate), gathered from the feature map viewed
as rows of channels ``[N*H*W, C]``. The feature map is read in place through indices, never copied per box: memory
is one channels-last copy of the map plus a bounded chunk of gathered samples (``_CHUNK_ELEMENTS``), however
many boxes there are. Backward is written with ``index_add_`` (image) and reductions (boxes), not by autograd.

Cost: about five gathered tensors of ``chunk x samples x C`` per chunk; half types are computed in float32.
Mirrors the math of ``reference.py`` (same conventions), not its evaluation order: float results agree to
rounding, not bit for bit.
"""

from __future__ import annotations

import dataclasses

import torch

from ._registry import FLOAT_DTYPES, Backend, OpKernels, register

# Gathered values per corner tensor in one chunk of boxes: 2**22 elements = 16 MB in float32, so a chunk
# holds at most ~100 MB of temporaries whatever K is (P2 box head, 7x7 x 2x2 samples x 256 channels: 83 boxes).
_CHUNK_ELEMENTS = 1 << 22


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclasses.dataclass
class _Axis:
    """Sample coordinates of a chunk of Kc boxes along one side, S samples each: everything [Kc, S]."""

    lo: torch.Tensor  # int64 pixel index of the low tap
    hi: torch.Tensor  # int64 pixel index of the high tap
    w_lo: torch.Tensor  # weight of the low tap (0 where the sample is out of range)
    w_hi: torch.Tensor  # weight of the high tap
    d_start: torch.Tensor  # d coordinate / d box start (0 where the coordinate does not move with the box)
    d_end: torch.Tensor  # d coordinate / d box end


def _rows(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N*H*W, C] in the compute dtype (a view for channels_last float32/64 input)."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]).to(_compute_dtype(x.dtype))


def _flat_index(n, ys, xs, H: int, W: int) -> torch.Tensor:
    # n [Kc], ys [Kc, SY], xs [Kc, SX] -> [Kc*SY*SX] rows of _rows()
    return ((n[:, None, None] * H + ys[:, :, None]) * W + xs[:, None, :]).reshape(-1)


def _corners(rows, n, ay: _Axis, ax: _Axis, H: int, W: int):
    """The four taps of every sample, each [Kc, SY, SX, C]."""
    shape = (n.shape[0], ay.lo.shape[1], ax.lo.shape[1], rows.shape[1])
    return tuple(
        rows.index_select(0, _flat_index(n, ys, xs, H, W)).view(shape)
        for ys, xs in ((ay.lo, ax.lo), (ay.lo, ax.hi), (ay.hi, ax.lo), (ay.hi, ax.hi))
    )


def _sample(rows, n, ay: _Axis, ax: _Axis, H: int, W: int) -> torch.Tensor:
    """Bilinear values [Kc, SY, SX, C]."""
    tl, tr, bl, br = _corners(rows, n, ay, ax, H, W)
    wyl, wyh = ay.w_lo[:, :, None, None], ay.w_hi[:, :, None, None]  # [Kc, SY, 1, 1]
    wxl, wxh = ax.w_lo[:, None, :, None], ax.w_hi[:, None, :, None]  # [Kc, 1, SX, 1]
    return wyl * (wxl * tl + wxh * tr) + wyh * (wxl * bl + wxh * br)  # [Kc, SY, SX, C]


def _scatter_image_grad(grad_rows, g, n, ay: _Axis, ax: _Axis, H: int, W: int) -> None:
    """Adds each sample's incoming gradient g [Kc, SY, SX, C] to its four taps in grad_rows [N*H*W, C]."""
    C = g.shape[-1]
    for ys, xs, wy, wx in (
        (ay.lo, ax.lo, ay.w_lo, ax.w_lo),
        (ay.lo, ax.hi, ay.w_lo, ax.w_hi),
        (ay.hi, ax.lo, ay.w_hi, ax.w_lo),
        (ay.hi, ax.hi, ay.w_hi, ax.w_hi),
    ):
        w = (wy[:, :, None] * wx[:, None, :])[..., None]  # [Kc, SY, SX, 1]
        grad_rows.index_add_(0, _flat_index(n, ys, xs, H, W), (g * w).reshape(-1, C))


def _box_grads(rows, g, n, ay: _Axis, ax: _Axis, H: int, W: int) -> torch.Tensor:
    """d loss / d (y_start, x_start, y_end, x_end) per box [Kc, 4], from sample gradients g [Kc, SY, SX, C]."""
    tl, tr, bl, br = _corners(rows, n, ay, ax, H, W)
    wyl, wyh = ay.w_lo[:, :, None, None], ay.w_hi[:, :, None, None]  # [Kc, SY, 1, 1]
    wxl, wxh = ax.w_lo[:, None, :, None], ax.w_hi[:, None, :, None]  # [Kc, 1, SX, 1]
    gy = (g * (wxl * (bl - tl) + wxh * (br - tr))).sum(-1)  # [Kc, SY, SX] d loss / d sample y
    gx = (g * (wyl * (tr - tl) + wyh * (br - bl))).sum(-1)  # [Kc, SY, SX] d loss / d sample x
    gy_row = gy.sum(2)  # [Kc, SY]
    gx_col = gx.sum(1)  # [Kc, SX]
    return torch.stack(
        [
            (gy_row * ay.d_start).sum(1),
            (gx_col * ax.d_start).sum(1),
            (gy_row * ay.d_end).sum(1),
            (gx_col * ax.d_end).sum(1),
        ],
        dim=1,
    )  # [Kc, 4]


def _chunks(index: torch.Tensor, samples_per_box: int):
    step = max(1, _CHUNK_ELEMENTS // max(samples_per_box, 1))
    return index.split(step)


# ------------------------------------------------------------------------------------------ crop_and_resize


def _crop_axis(start, end, crop: int, size: int, nearest: bool) -> _Axis:
    """crop_and_resize's corner-aligned samples of normalized sides start/end [Kc] on a side of ``size``."""
    i = torch.arange(crop, device=start.device, dtype=start.dtype)  # [S]
    if crop > 1:
        ratio = (size - 1) / (crop - 1)
        coord = start[:, None] * (size - 1) + i * ((end - start) * ratio)[:, None]  # [Kc, S]
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
        return _Axis(nearest_index, nearest_index, one, zero, zero, zero)
    frac = coord - low  # [Kc, S]
    mask = valid.to(coord.dtype)
    return _Axis(
        low.long(), coord.ceil().long(), (1 - frac) * mask, frac * mask, d_start * mask, d_end * mask
    )


def _crop_geometry(boxes, box_index, crop_height, crop_width, H, W, method):
    b = boxes.to(_compute_dtype(boxes.dtype))  # [Kc, 4]
    nearest = method == "nearest"
    ay = _crop_axis(b[:, 0], b[:, 2], crop_height, H, nearest)  # [Kc, ch]
    ax = _crop_axis(b[:, 1], b[:, 3], crop_width, W, nearest)  # [Kc, cw]
    return box_index, ay, ax


def crop_and_resize_forward(image, boxes, box_index, crop_height, crop_width, method, extrapolation_value):
    N, C, H, W = image.shape
    K = boxes.shape[0]
    rows = _rows(image)  # [N*H*W, C]
    out = torch.empty((K, crop_height, crop_width, C), dtype=rows.dtype, device=image.device)
    for idx in _chunks(torch.arange(K, device=image.device), crop_height * crop_width * C):
        n, ay, ax = _crop_geometry(boxes[idx], box_index[idx], crop_height, crop_width, H, W, method)
        values = _sample(rows, n, ay, ax, H, W)  # [Kc, ch, cw, C]
        inside = ((ay.w_lo + ay.w_hi)[:, :, None] * (ax.w_lo + ax.w_hi)[:, None, :]) > 0  # [Kc, ch, cw]
        out[idx] = torch.where(inside[..., None], values, values.new_tensor(extrapolation_value))
    return out.permute(0, 3, 1, 2).to(image.dtype)  # [K, C, ch, cw]


def crop_and_resize_backward_input(
    grad, boxes, box_index, crop_height, crop_width, batch_size, channels, height, width, method
):
    N, C, H, W = batch_size, channels, height, width
    K = boxes.shape[0]
    g_all = grad.permute(0, 2, 3, 1).to(_compute_dtype(grad.dtype))  # [K, ch, cw, C]
    grad_rows = g_all.new_zeros((N * H * W, C))  # [N*H*W, C]
    for idx in _chunks(torch.arange(K, device=grad.device), crop_height * crop_width * C):
        n, ay, ax = _crop_geometry(boxes[idx], box_index[idx], crop_height, crop_width, H, W, method)
        _scatter_image_grad(grad_rows, g_all[idx], n, ay, ax, H, W)
    return grad_rows.view(N, H, W, C).permute(0, 3, 1, 2).to(grad.dtype)  # [N, C, H, W]


def crop_and_resize_backward_boxes(grad, image, boxes, box_index, crop_height, crop_width, method):
    N, C, H, W = image.shape
    K = boxes.shape[0]
    rows = _rows(image)  # [N*H*W, C]
    g_all = grad.permute(0, 2, 3, 1).to(rows.dtype)  # [K, ch, cw, C]
    grad_boxes = boxes.new_zeros((K, 4), dtype=rows.dtype)  # (y1, x1, y2, x2) order
    for idx in _chunks(torch.arange(K, device=image.device), crop_height * crop_width * C):
        n, ay, ax = _crop_geometry(boxes[idx], box_index[idx], crop_height, crop_width, H, W, method)
        grad_boxes[idx] = _box_grads(rows, g_all[idx], n, ay, ax, H, W)  # nearest: d_start = d_end = 0
    return grad_boxes.to(boxes.dtype)


# ------------------------------------------------------------------------------------------------ roi_align


def _roi_sizes(rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    """Per box [K]: batch index, starts, sizes, clamp flags and sample grid (torchvision's geometry)."""
    r = rois.to(_compute_dtype(rois.dtype))  # [K, 5]
    offset = 0.5 if aligned else 0.0
    x_start = r[:, 1] * spatial_scale - offset  # [K]
    y_start = r[:, 2] * spatial_scale - offset
    roi_w = r[:, 3] * spatial_scale - offset - x_start  # [K]
    roi_h = r[:, 4] * spatial_scale - offset - y_start
    if aligned:
        w_clamped = h_clamped = torch.zeros_like(roi_w, dtype=torch.bool)
    else:
        w_clamped, h_clamped = roi_w < 1, roi_h < 1  # malformed boxes are forced to 1x1
        roi_w = torch.where(w_clamped, torch.ones_like(roi_w), roi_w)
        roi_h = torch.where(h_clamped, torch.ones_like(roi_h), roi_h)
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full_like(roi_w, sampling_ratio, dtype=torch.int64)
    else:
        grid_h = torch.ceil(roi_h / pooled_height).long()  # [K] adaptive
        grid_w = torch.ceil(roi_w / pooled_width).long()
    return r[:, 0].long(), y_start, x_start, roi_h, roi_w, h_clamped, w_clamped, grid_h, grid_w


def _roi_axis(start, size_, clamped, pooled: int, grid: int, extent: int, spatial_scale: float) -> _Axis:
    """roi_align's samples along one side for Kc boxes with the same ``grid``: [Kc, pooled*grid]."""
    dt = start.dtype
    p = torch.arange(pooled, device=start.device, dtype=dt)[:, None]  # [P, 1]
    i = torch.arange(grid, device=start.device, dtype=dt)[None, :]  # [1, g]
    position = ((p + (i + 0.5) / grid) / pooled).reshape(-1)  # [P*g]: 0 at the box start, 1 at its end
    bin_size = (size_ / pooled)[:, None]  # [Kc, 1]
    coord = start[:, None] + position * pooled * bin_size  # [Kc, S]
    in_range = (coord >= -1) & (coord <= extent)  # [Kc, S]; NaN compares False
    c = coord.clamp(min=0)
    low = c.floor()
    at_end = low >= extent - 1
    low = torch.where(at_end, torch.full_like(low, extent - 1), low)
    high = torch.where(at_end, low, low + 1)
    frac = torch.where(at_end, torch.zeros_like(c), c - low)  # [Kc, S]
    mask = in_range.to(dt)
    moves = (mask * ((coord > 0) & ~at_end).to(dt)) * spatial_scale  # [Kc, S]
    along = position * (~clamped).to(dt)[:, None]  # [Kc, S]; a clamped side does not grow with the box
    return _Axis(low.long(), high.long(), (1 - frac) * mask, frac * mask, moves * (1 - along), moves * along)


def _roi_chunks(rois, C, H, W, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    """Boxes grouped by sample grid (gh, gw), each group cut into bounded chunks, with their two axes."""
    n, ys, xs, hs, ws, hc, wc, grid_h, grid_w = _roi_sizes(
        rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned
    )
    grids = torch.stack([grid_h, grid_w], dim=1)  # [K, 2]
    for gh, gw in torch.unique(grids, dim=0).tolist():
        if gh <= 0 or gw <= 0:
            continue  # an empty grid averages nothing: those outputs stay 0
        members = ((grid_h == gh) & (grid_w == gw)).nonzero().flatten()  # [Kg]
        for idx in _chunks(members, pooled_height * gh * pooled_width * gw * C):
            ay = _roi_axis(ys[idx], hs[idx], hc[idx], pooled_height, gh, H, spatial_scale)  # [Kc, PH*gh]
            ax = _roi_axis(xs[idx], ws[idx], wc[idx], pooled_width, gw, W, spatial_scale)  # [Kc, PW*gw]
            yield idx, n[idx], gh, gw, ay, ax


def roi_align_forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    N, C, H, W = input.shape
    K = rois.shape[0]
    rows = _rows(input)  # [N*H*W, C]
    out = torch.zeros((K, pooled_height, pooled_width, C), dtype=rows.dtype, device=input.device)
    for idx, n, gh, gw, ay, ax in _roi_chunks(
        rois, C, H, W, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned
    ):
        values = _sample(rows, n, ay, ax, H, W)  # [Kc, PH*gh, PW*gw, C]
        values = values.view(len(idx), pooled_height, gh, pooled_width, gw, C)
        out[idx] = values.sum(dim=(2, 4)) / (gh * gw)  # [Kc, PH, PW, C]
    return out.permute(0, 3, 1, 2).to(input.dtype)  # [K, C, PH, PW]


def _bin_share(g_all, idx, gh: int, gw: int, pooled_height: int, pooled_width: int) -> torch.Tensor:
    """Each sample's share of its bin's incoming gradient: [Kc, PH*gh, PW*gw, C] from g_all [K, PH, PW, C]."""
    Kc, C = len(idx), g_all.shape[-1]
    g = g_all[idx][:, :, None, :, None, :] / (gh * gw)  # [Kc, PH, 1, PW, 1, C]: the mean's share
    return g.expand(Kc, pooled_height, gh, pooled_width, gw, C).reshape(
        Kc, pooled_height * gh, pooled_width * gw, C
    )  # [Kc, PH*gh, PW*gw, C]


def roi_align_backward_input(
    grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width, sampling_ratio,
    aligned,
):
    N, C, H, W = batch_size, channels, height, width
    g_all = grad.permute(0, 2, 3, 1).to(_compute_dtype(grad.dtype))  # [K, PH, PW, C]
    grad_rows = g_all.new_zeros((N * H * W, C))  # [N*H*W, C]
    for idx, n, gh, gw, ay, ax in _roi_chunks(
        rois, C, H, W, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned
    ):
        g = _bin_share(g_all, idx, gh, gw, pooled_height, pooled_width)  # [Kc, PH*gh, PW*gw, C]
        _scatter_image_grad(grad_rows, g, n, ay, ax, H, W)
    return grad_rows.view(N, H, W, C).permute(0, 3, 1, 2).to(grad.dtype)  # [N, C, H, W]


def roi_align_backward_boxes(grad, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    N, C, H, W = input.shape
    K = rois.shape[0]
    rows = _rows(input)  # [N*H*W, C]
    g_all = grad.permute(0, 2, 3, 1).to(rows.dtype)  # [K, PH, PW, C]
    grad_rois = rois.new_zeros((K, 5), dtype=rows.dtype)
    for idx, n, gh, gw, ay, ax in _roi_chunks(
        rois, C, H, W, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned
    ):
        g = _bin_share(g_all, idx, gh, gw, pooled_height, pooled_width)  # [Kc, PH*gh, PW*gw, C]
        y1, x1, y2, x2 = _box_grads(rows, g, n, ay, ax, H, W).unbind(1)  # each [Kc]
        grad_rois[idx, 1:] = torch.stack([x1, y1, x2, y2], dim=1)  # [Kc, 4] in (x1, y1, x2, y2) order
    return grad_rois.to(rois.dtype)


BACKEND = register(
    Backend(
        name="vectorized",
        summary="pure torch gathers and index_add_, chunked over boxes; any torch device",
        devices=("cpu", "cuda"),
        dtypes=FLOAT_DTYPES,
        kernels={
            "crop_and_resize": OpKernels(
                crop_and_resize_forward, crop_and_resize_backward_input, crop_and_resize_backward_boxes
            ),
            "roi_align": OpKernels(roi_align_forward, roi_align_backward_input, roi_align_backward_boxes),
        },
    )
)
