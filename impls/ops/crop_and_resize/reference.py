"""crop_and_resize's ``reference`` kernels: plain Python scalar loops, the oracle every other backend is checked
against (CONVENTIONS.md §1).

Cost: one Python-level multiply per bilinear tap, roughly a microsecond per sample per channel; use it on maps of
tens of pixels, never on a detector workload. All arithmetic is on Python floats (IEEE double), every expression in
the order ``csrc/crop_and_resize/`` evaluates it, so float64 results of ``reference`` and ``cpp`` compare bit for
bit. Loop order: box, channel, output cell, sample. A box's in-range samples (pixels, weights, position
derivatives) do not depend on the channel: they are listed once per box (``_crop_samples``) and every kernel walks
that list. A ``box_index`` outside the batch (the public op rejects it first; a direct caller may not) raises
``IndexError`` with the ``cpp`` kernels' message, as they do: Python's negative indexing would read image N - 1.
"""


from __future__ import annotations

import dataclasses
import math

import torch

from ...core import layout as _layout
from ...core.registry import OpKernels


def _round_half_away(v: float) -> float:
    """std::round for v >= 0 (the only case used): 2.5 -> 3, unlike Python's round (2.5 -> 2)."""
    f = math.floor(v)
    return f + 1.0 if v - f >= 0.5 else f


def _crop_coordinate(lo: float, hi: float, i: int, crop: int, size: int) -> float:
    """crop_and_resize sample coordinate i of ``crop`` for a normalized box side [lo, hi] on a side of ``size``."""
    if crop > 1:
        scale = (hi - lo) * (size - 1) / (crop - 1)
        return lo * (size - 1) + i * scale
    return 0.5 * (lo + hi) * (size - 1)


def _crop_coordinate_grads(i: int, crop: int, size: int) -> tuple[float, float]:
    """d coordinate / d lo and d coordinate / d hi for ``_crop_coordinate``."""
    if crop > 1:
        ratio = (size - 1) / (crop - 1)
        return (size - 1) - i * ratio, i * ratio
    half = 0.5 * (size - 1)
    return half, half


@dataclasses.dataclass(frozen=True)
class _CropSample:
    """One in-range sample of a crop: output cell (py, px), its four pixels and lerps, its nearest pixel and the
    derivatives of its coordinates with respect to the box sides."""

    py: int
    px: int
    top: int
    bottom: int
    y_lerp: float
    left: int
    right: int
    x_lerp: float
    nearest_y: int
    nearest_x: int
    dy_lo: float
    dy_hi: float
    dx_lo: float
    dx_hi: float


def _crop_images(box_index, N: int) -> list[int]:
    """Each box's image as a Python int, after checking that it is one of the ``N`` images."""
    idx = box_index.tolist()
    for k, n in enumerate(idx):
        if not 0 <= n < N:
            raise IndexError(f"box_index[{k}] = {n} is out of range for a batch of {N} images")
    return idx


def _crop_samples(box, crop_height: int, crop_width: int, H: int, W: int) -> list[_CropSample]:
    """The in-range samples of one normalized box (y1, x1, y2, x2), row by row; the others keep the
    extrapolation value and get no gradient."""
    y1, x1, y2, x2 = box
    samples = []
    for py in range(crop_height):
        in_y = _crop_coordinate(y1, y2, py, crop_height, H)
        if not (0 <= in_y <= H - 1):  # NB: written as not(in range) so NaN takes this branch
            continue
        dy_lo, dy_hi = _crop_coordinate_grads(py, crop_height, H)
        for px in range(crop_width):
            in_x = _crop_coordinate(x1, x2, px, crop_width, W)
            if not (0 <= in_x <= W - 1):
                continue
            dx_lo, dx_hi = _crop_coordinate_grads(px, crop_width, W)
            samples.append(_CropSample(
                py, px, math.floor(in_y), math.ceil(in_y), in_y - math.floor(in_y),
                math.floor(in_x), math.ceil(in_x), in_x - math.floor(in_x),
                int(_round_half_away(in_y)), int(_round_half_away(in_x)), dy_lo, dy_hi, dx_lo, dx_hi,
            ))
    return samples


def forward(image, boxes, box_index, crop_height, crop_width, method, extrapolation_value):
    N, C, H, W = image.shape
    K = boxes.shape[0]
    img = image.double().tolist()
    bxs = boxes.double().tolist()
    idx = _crop_images(box_index, N)
    ext = float(extrapolation_value)
    out = [[[[ext] * crop_width for _ in range(crop_height)] for _ in range(C)] for _ in range(K)]
    for k in range(K):
        samples = _crop_samples(bxs[k], crop_height, crop_width, H, W)
        for c in range(C):
            plane = img[idx[k]][c]
            for s in samples:
                if method == "nearest":
                    out[k][c][s.py][s.px] = plane[s.nearest_y][s.nearest_x]
                    continue
                tl, tr = plane[s.top][s.left], plane[s.top][s.right]
                bl, br = plane[s.bottom][s.left], plane[s.bottom][s.right]
                t = tl + (tr - tl) * s.x_lerp
                b = bl + (br - bl) * s.x_lerp
                out[k][c][s.py][s.px] = t + (b - t) * s.y_lerp
    return _layout.like(torch.tensor(out, dtype=image.dtype).reshape(K, C, crop_height, crop_width), image)


def backward_input(
    grad, boxes, box_index, crop_height, crop_width, batch_size, channels, height, width, method
):
    N, C, H, W = batch_size, channels, height, width
    K = boxes.shape[0]
    bxs = boxes.double().tolist()
    idx = _crop_images(box_index, N)
    g_out = grad.double().tolist()
    g_img = [[[[0.0] * W for _ in range(H)] for _ in range(C)] for _ in range(N)]
    for k in range(K):
        samples = _crop_samples(bxs[k], crop_height, crop_width, H, W)
        for c in range(C):
            g_plane = g_img[idx[k]][c]
            for s in samples:
                g = g_out[k][c][s.py][s.px]
                if method == "nearest":
                    g_plane[s.nearest_y][s.nearest_x] += g
                    continue
                d_top = (1 - s.y_lerp) * g
                d_bottom = s.y_lerp * g
                g_plane[s.top][s.left] += (1 - s.x_lerp) * d_top
                g_plane[s.top][s.right] += s.x_lerp * d_top
                g_plane[s.bottom][s.left] += (1 - s.x_lerp) * d_bottom
                g_plane[s.bottom][s.right] += s.x_lerp * d_bottom
    return _layout.like(torch.tensor(g_img, dtype=grad.dtype).reshape(N, C, H, W), grad)


def backward_boxes(grad, image, boxes, box_index, crop_height, crop_width, method):
    N, C, H, W = image.shape
    K = boxes.shape[0]
    idx = _crop_images(box_index, N)
    g_box = [[0.0] * 4 for _ in range(K)]
    if method == "nearest":
        # Rounding has zero derivative almost everywhere: nearest gives no box gradient.
        return torch.tensor(g_box, dtype=boxes.dtype).reshape(K, 4)
    img = image.double().tolist()
    bxs = boxes.double().tolist()
    g_out = grad.double().tolist()
    for k in range(K):
        samples = _crop_samples(bxs[k], crop_height, crop_width, H, W)
        for c in range(C):
            plane = img[idx[k]][c]
            for s in samples:
                g = g_out[k][c][s.py][s.px]
                tl, tr = plane[s.top][s.left], plane[s.top][s.right]
                bl, br = plane[s.bottom][s.left], plane[s.bottom][s.right]
                gy = g * ((1 - s.x_lerp) * (bl - tl) + s.x_lerp * (br - tr))
                gx = g * ((1 - s.y_lerp) * (tr - tl) + s.y_lerp * (br - bl))
                g_box[k][0] += gy * s.dy_lo
                g_box[k][1] += gx * s.dx_lo
                g_box[k][2] += gy * s.dy_hi
                g_box[k][3] += gx * s.dx_hi
    return torch.tensor(g_box, dtype=boxes.dtype).reshape(K, 4)


KERNELS = OpKernels(forward, backward_input, backward_boxes)
