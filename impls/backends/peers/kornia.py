"""``kornia``: ``kornia.geometry.transform.crop_and_resize``, one box per image given by its four corner points in
pixels (CONVENTIONS.md §8.4). Both gradients come from torch autograd through kornia's code (a homography solved
from the corners, then ``grid_sample``); float32 and float64, CPU and CUDA; bilinear, extrapolation value 0 only.

Its corners ``(x, y)`` are the centres of the first and last samples, as TensorFlow's normalized box corners are,
but in pixels: our box ``(y1, x1, y2, x2)`` is kornia's ``x1*(W-1), y1*(H-1)`` to ``x2*(W-1), y2*(H-1)``
(``corner_points``). At the border it blends partial taps, as ``grid_sample`` does (§8.3). Outside what kornia's
API takes, the forward raises, naming the argument: more than one box per image (box k must be on image k), a crop
side of 1 or a box of zero height or width (kornia's homography is then singular and its crop NaN).
"""

from __future__ import annotations

import torch

from ...core.registry import Backend, OpKernels, register
from ._autograd_peer import autograd_kernels
from ._installed import missing
from .grid_sample import check_supported


def corner_points(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Normalized ``(y1, x1, y2, x2)`` boxes [K, 4] -> kornia's corners [K, 4, 2]: ``(x, y)`` pixel positions of
    the top-left, top-right, bottom-right and bottom-left first/last samples (differentiable)."""
    y1, x1, y2, x2 = (boxes * boxes.new_tensor([height - 1, width - 1, height - 1, width - 1])).unbind(1)  # [K]
    return torch.stack([torch.stack([x1, y1], 1), torch.stack([x2, y1], 1),
                        torch.stack([x2, y2], 1), torch.stack([x1, y2], 1)], 1)  # [K, 4, 2]


def _check_boxes(image, boxes, box_index, crop_height, crop_width):
    n, _, height, width = image.shape
    if box_index.shape[0] != n or not torch.equal(box_index.cpu(), torch.arange(n)):
        raise ValueError(f"backend 'kornia' crops one box per image: box_index must be [0, 1, ..., N-1] with "
                         f"N = {n} images, got {box_index.tolist()}")
    if crop_height == 1 or crop_width == 1:
        raise ValueError(f"backend 'kornia' needs crop_size >= 2 on both sides (its homography maps the box corners "
                         f"to the crop's), got crop_size=({crop_height}, {crop_width})")
    corners = corner_points(boxes.detach(), height, width)  # [K, 4, 2]
    if bool(((corners[:, 0] == corners[:, 2]).any(1)).any()):
        raise ValueError("backend 'kornia' needs boxes of nonzero height and width in pixels (y1 != y2, x1 != x2, "
                         "H > 1, W > 1): its homography is singular otherwise")


def _kornia_forward(image, boxes, box_index, crop_height, crop_width, method, extrapolation_value):
    from kornia.geometry.transform import crop_and_resize

    check_supported(method, extrapolation_value, "kornia")
    _check_boxes(image, boxes, box_index, crop_height, crop_width)
    corners = corner_points(boxes, image.shape[2], image.shape[3])
    return crop_and_resize(image, corners, (crop_height, crop_width), mode="bilinear", padding_mode="zeros",
                           align_corners=True)


register(
    Backend(
        name="kornia",
        peer=True,
        summary="peer: kornia.geometry.transform.crop_and_resize (one box per image, corner points)",
        devices=("cpu", "cuda"),
        dtypes=(torch.float32, torch.float64),
        kernels={"crop_and_resize": OpKernels(_kornia_forward, *autograd_kernels(_kornia_forward),
                                              differs="CONVENTIONS.md §8.4", one_box_per_image=True)},
        unavailable_reason=missing("kornia", "test"),
    )
)
