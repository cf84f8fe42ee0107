"""FPN level assignment and scale inference for multi-level RoIAlign: torchvision's ``MultiScaleRoIAlign`` rules.

Scale inference. A feature map of height ``h`` pooled from images at most ``H`` tall (the largest of
``image_shapes``) has scale ``2 ** round(log2(h / H))``, evaluated as torchvision does (a float32 ``log2``). The maps
are given finest first and must be consecutive levels, each half the previous one's scale: torchvision assumes it
and, when a level is skipped, pools the boxes that map past the last given map from no map at all (their output
stays zero). Here that is an error naming the maps.

Level assignment (the FPN paper's equation 1): a box of area ``A`` goes to level
``floor(canonical_level + log2(sqrt(A) / canonical_scale) + 1e-6)``, clamped to the levels present, counted from
the finest map. The expression is evaluated with the same torch operations, in the same order and in the boxes'
dtype, as torchvision's ``LevelMapper``, so each box lands on the level torchvision picks.
"""

from __future__ import annotations

import math
import struct
from typing import Sequence

import torch

# torchvision's LevelMapper eps: a box exactly canonical_scale * 2**j on a side lands on level canonical_level + j.
_EPS = 1e-6


def infer_scale(size: int, original: int) -> float:
    """The power of two nearest to ``size / original`` (torchvision's ``_infer_scale``, height first): the ratio
    rounded to float32, its ``log2`` rounded half to even, as torchvision's float32 tensor expression does. Plain
    Python on sizes, so ``torch.compile`` takes it as a constant of the graph."""
    approx = struct.unpack("f", struct.pack("f", float(size) / float(original)))[0]
    return 2.0 ** round(math.log2(approx))


def infer_scales(heights: Sequence[int], image_shapes: Sequence[tuple[int, int]]) -> list[float]:
    """Each map's scale from its height and the tallest image; raises unless they are consecutive powers of two."""
    tallest = max(int(h) for h, _ in image_shapes)
    scales = [infer_scale(h, tallest) for h in heights]
    expected = [scales[0] / 2**level for level in range(len(scales))]
    if scales != expected:
        raise ValueError(
            f"features must be consecutive FPN levels, finest first, each half the size of the previous one; "
            f"their heights {list(heights)} for images up to {tallest} px tall give scales {scales} (expected "
            f"{expected}): pass the maps in order, without skipping a level"
        )
    return scales


def level_range(scales: Sequence[float]) -> tuple[int, int]:
    """``(k_min, k_max)``: the FPN levels of the finest and the coarsest map (2 and 5 for strides 4 to 32); exact,
    the scales being powers of two (``infer_scales``)."""
    return int(-math.log2(scales[0])), int(-math.log2(scales[-1]))


def map_levels(boxes: torch.Tensor, scales: Sequence[float], canonical_scale: float,
               canonical_level: int) -> torch.Tensor:
    """Each box's map [K], int64, 0 for the finest: ``boxes`` [K, 4] are ``(x1, y1, x2, y2)`` in image pixels.

    Device-side torch operations only: no value is read on the host."""
    k_min, k_max = level_range(scales)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # [K]: torchvision's box_area
    s = torch.sqrt(area)
    target = torch.floor(canonical_level + torch.log2(s / canonical_scale) + torch.tensor(_EPS, dtype=s.dtype))
    target = torch.clamp(target, min=k_min, max=k_max)
    return (target.to(torch.int64) - k_min).to(torch.int64)
