"""``MultiScaleRoIAlign``: a drop-in for torchvision's pooler module, over :func:`impls.multiscale_roi_align`."""

from __future__ import annotations

import torch
from torch import nn

from ...core import checks
from .op import multiscale_roi_align


def pool_pyramid(x: dict, boxes, image_shapes, featmap_names: list[str], output_size, sampling_ratio: int,
                 aligned: bool, canonical_scale: float, canonical_level: int, backend: str):
    """What ``MultiScaleRoIAlign(...)(x, boxes, image_shapes)`` computes: the maps of ``x`` named in
    ``featmap_names``, in ``x``'s order (as torchvision), pooled by :func:`impls.multiscale_roi_align`."""
    missing = [name for name in featmap_names if name not in x]
    if missing:
        raise KeyError(f"featmap_names {missing} are not in x, whose maps are {list(x)}; name maps that x holds")
    features = [v for k, v in x.items() if k in featmap_names]
    return multiscale_roi_align(features, boxes, image_shapes, output_size, sampling_ratio, aligned,
                                canonical_scale=canonical_scale, canonical_level=canonical_level, backend=backend)


torch.fx.wrap("pool_pyramid")


class MultiScaleRoIAlign(nn.Module):
    """A drop-in for ``torchvision.ops.MultiScaleRoIAlign``: ``module(x, boxes, image_shapes)``.

    ``x`` (Dict[str, Tensor[N, C, H_l, W_l]]) holds the FPN maps; those named in ``featmap_names`` are pooled, in
    ``x``'s order (as torchvision), finest first. ``boxes`` (List[Tensor[L_i, 4]]) are each image's
    ``(x1, y1, x2, y2)`` in image pixels, ``image_shapes`` each image's ``(height, width)``. Output
    ``[sum L_i, C, PH, PW]``: :func:`impls.multiscale_roi_align` with the module's settings.
    """

    def __init__(self, featmap_names: list[str], output_size, sampling_ratio: int, *, canonical_scale: float = 224,
                 canonical_level: int = 4, aligned: bool = False, backend: str = "auto"):
        super().__init__()
        self.featmap_names = list(featmap_names)
        self.output_size = checks.pair("output_size", output_size)
        self.sampling_ratio = sampling_ratio
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level
        self.aligned = aligned
        self.backend = backend

    def forward(self, x: dict, boxes, image_shapes):
        return pool_pyramid(x, boxes, image_shapes, self.featmap_names, self.output_size, self.sampling_ratio,
                            self.aligned, self.canonical_scale, self.canonical_level, self.backend)

    def extra_repr(self) -> str:
        return (f"featmap_names={self.featmap_names}, output_size={self.output_size}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}, backend={self.backend!r}")
