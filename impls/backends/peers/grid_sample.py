"""``grid_sample``: crop_and_resize as a user writes it in pure PyTorch, ``F.affine_grid`` + ``F.grid_sample`` with
``align_corners=True`` and a per-box ``theta`` from the normalized box (``crop_and_resize`` below). Both gradients
come from torch autograd through it; float32 and float64, CPU and CUDA; bilinear, extrapolation value 0 only.

Inside the image it is TensorFlow's op (CONVENTIONS.md §1). At the border it is not (§8.3): ``grid_sample`` reads
the taps of a sample that lie outside as 0 and blends the others, where TensorFlow writes the extrapolation value
for any sample outside ``[0, H-1] x [0, W-1]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...core.registry import Backend, OpKernels, register
from ._autograd_peer import autograd_kernels


def crop_and_resize(image: torch.Tensor, boxes: torch.Tensor, box_index: torch.Tensor,
                    crop_size: tuple[int, int]) -> torch.Tensor:
    """``image (Tensor[N, C, H, W])``, normalized ``boxes (Tensor[K, 4])`` ``(y1, x1, y2, x2)``, ``box_index
    (Tensor[K])`` -> ``Tensor[K, C, ch, cw]`` by ``affine_grid`` + ``grid_sample`` (differentiable in both).

    With ``align_corners=True`` the grid's -1 and 1 are the centres of the first and last pixels, and
    ``affine_grid`` spreads ``cw`` columns over ``[-1, 1]`` (one column: 0). Column ``t = j/(cw-1)`` must sample
    ``x = 2*x1 - 1 + 2*t*(x2 - x1)`` in grid units, i.e. TensorFlow's ``x1*(W-1) + j*(x2-x1)*(W-1)/(cw-1)``: so
    ``theta`` scales by ``x2 - x1`` and shifts by ``x1 + x2 - 1`` (rows alike). Boxes grouped by image, the same
    number on each (a detector's one image, a batch with one crop per image): one ``grid_sample`` over the batch,
    each image's grids stacked along the rows. Otherwise one call per image, the crops put back in box order.
    """
    crop_height, crop_width = crop_size
    n, c = image.shape[:2]
    k = boxes.shape[0]
    y1, x1, y2, x2 = boxes.unbind(1)  # [K] each
    zero = torch.zeros_like(y1)
    theta = torch.stack([torch.stack([x2 - x1, zero, x1 + x2 - 1], 1),
                         torch.stack([zero, y2 - y1, y1 + y2 - 1], 1)], 1)  # [K, 2, 3]
    grid = F.affine_grid(theta, [k, c, crop_height, crop_width], align_corners=True)  # [K, ch, cw, 2]
    per_image = k // max(n, 1)
    grouped = torch.arange(n, device=box_index.device).repeat_interleave(per_image)  # [K] when grouped
    if k == per_image * n and torch.equal(box_index, grouped):
        out = F.grid_sample(image, grid.reshape(n, per_image * crop_height, crop_width, 2), align_corners=True)
        # [N, C, K/N * ch, cw] -> [K, C, ch, cw], a view
        return out.view(n, c, per_image, crop_height, crop_width).transpose(1, 2).reshape(k, c, crop_height,
                                                                                          crop_width)
    mine = [torch.nonzero(box_index == i).squeeze(1) for i in range(n)]  # each image's boxes
    crops = torch.cat([
        F.grid_sample(image[i:i + 1], grid[m].reshape(1, -1, crop_width, 2), align_corners=True)
        .view(c, -1, crop_height, crop_width).transpose(0, 1)
        for i, m in enumerate(mine)
    ])  # [K, C, ch, cw], grouped by image
    return crops[torch.argsort(torch.cat(mine))]


def check_supported(method: str, extrapolation_value: float, backend: str = "grid_sample") -> None:
    """Raises for what ``grid_sample`` cannot express: it rounds ``nearest`` half to even (TensorFlow: half away
    from zero) and pads with zeros, not a chosen value."""
    if method != "bilinear":
        raise ValueError(f"backend {backend!r} implements method='bilinear' only, got method={method!r}")
    if extrapolation_value != 0:
        raise ValueError(f"backend {backend!r} pads with zeros: extrapolation_value must be 0, "
                         f"got {extrapolation_value!r}")


def _grid_sample_forward(image, boxes, box_index, crop_height, crop_width, method, extrapolation_value):
    check_supported(method, extrapolation_value)
    return crop_and_resize(image, boxes, box_index, (crop_height, crop_width))


register(
    Backend(
        name="grid_sample",
        peer=True,
        summary="peer: pure PyTorch as users write it: F.affine_grid + F.grid_sample(align_corners=True)",
        devices=("cpu", "cuda"),
        dtypes=(torch.float32, torch.float64),
        kernels={"crop_and_resize": OpKernels(_grid_sample_forward, *autograd_kernels(_grid_sample_forward),
                                              differs="CONVENTIONS.md §8.3")},
    )
)
