"""roi_align's per-box geometry for every box at once, in float64 torch ops: what ``vectorized``, ``compiled``
(``_chunked.py``) and ``triton`` (``triton/geometry_table.py``) compute before sampling.

The expressions are ``reference._roi_geometry``'s, in the same order and in float64 whatever the feature map's
dtype (CONVENTIONS.md §6), so that every backend puts a box's samples where the reference does. No control flow on
values: ``torch.compile(fullgraph=True)`` traces it (``compiled``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class RoiBoxes(NamedTuple):
    """Per box, each float64 ``[K]`` (the clamp flags bool ``[K]``)."""

    y_start: torch.Tensor  # y1 * spatial_scale - offset
    x_start: torch.Tensor  # x1 * spatial_scale - offset
    roi_h: torch.Tensor  # the box's height on the map; 1 where clamped
    roi_w: torch.Tensor
    bin_h: torch.Tensor  # roi_h / pooled_height
    bin_w: torch.Tensor
    h_clamped: torch.Tensor  # aligned=False forced roi_h to 1 (torchvision's rule): the size ignores the box
    w_clamped: torch.Tensor


def roi_boxes(rois: torch.Tensor, spatial_scale: float, pooled_height: int, pooled_width: int,
              aligned: bool) -> RoiBoxes:
    """Starts, sides, bin sizes and clamp flags of every box of ``rois`` ``[K, 5]``."""
    r = rois.to(torch.float64)  # [K, 5]
    offset = 0.5 if aligned else 0.0
    x_start = r[:, 1] * spatial_scale - offset  # [K]
    y_start = r[:, 2] * spatial_scale - offset
    roi_w = r[:, 3] * spatial_scale - offset - x_start  # [K]
    roi_h = r[:, 4] * spatial_scale - offset - y_start
    if aligned:
        w_clamped = h_clamped = torch.zeros_like(roi_w, dtype=torch.bool)
    else:  # torchvision forces malformed boxes to 1x1
        w_clamped, h_clamped = roi_w < 1.0, roi_h < 1.0
        roi_w = torch.where(w_clamped, torch.ones_like(roi_w), roi_w)
        roi_h = torch.where(h_clamped, torch.ones_like(roi_h), roi_h)
    bin_h, bin_w = roi_h / pooled_height, roi_w / pooled_width  # [K]
    return RoiBoxes(y_start, x_start, roi_h, roi_w, bin_h, bin_w, h_clamped, w_clamped)


def adaptive_grid(boxes: RoiBoxes, pooled_height: int, pooled_width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples per bin of ``sampling_ratio <= 0``, ``ceil(side / bins)`` along each side: float64 ``[K]`` each
    (0 or negative for a flipped aligned box, which then has no samples)."""
    return torch.ceil(boxes.roi_h / pooled_height), torch.ceil(boxes.roi_w / pooled_width)
