"""Multi-level roi_align's own arguments: the pyramid and its images' shapes (the boxes are checked by
``roi_align/arguments.py``)."""

from __future__ import annotations

import numbers

import torch

from ...core import checks


def pyramid_arguments(features, image_shapes) -> list[torch.Tensor]:
    """Validate a feature pyramid (maps finest first) and its images' shapes; returns the maps as a list."""
    if isinstance(features, torch.Tensor) or not isinstance(features, (list, tuple)) or len(features) == 0:
        raise TypeError(
            f"features must be a non-empty list of Tensor[N, C, H_l, W_l], finest first, got "
            f"{type(features).__name__}"
        )
    for level, feature in enumerate(features):
        checks.feature_map(f"features[{level}]", feature)
    first = features[0]
    for level, feature in enumerate(features[1:], start=1):
        if feature.shape[:2] != first.shape[:2]:
            raise ValueError(
                f"features[{level}] has N, C = {tuple(feature.shape[:2])} but features[0] has "
                f"{tuple(first.shape[:2])}: every level must hold the same images and channels"
            )
        checks.like(f"features[{level}]", feature, "features[0]", first)
    if not isinstance(image_shapes, (list, tuple)) or len(image_shapes) != first.shape[0]:
        got = len(image_shapes) if isinstance(image_shapes, (list, tuple)) else type(image_shapes).__name__
        raise ValueError(
            f"image_shapes must list one (height, width) per image, {first.shape[0]} here (the maps' N), got {got}"
        )
    for i, shape in enumerate(image_shapes):
        if len(shape) != 2 or not all(isinstance(v, numbers.Integral) and v > 0 for v in shape):
            raise ValueError(f"image_shapes[{i}] must be a (height, width) of positive ints, got {shape!r}")
    return list(features)
