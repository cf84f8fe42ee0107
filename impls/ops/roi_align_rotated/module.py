"""``RoIAlignRotated``: :func:`impls.roi_align_rotated` as a module, with detectron2's and mmcv's constructor
arguments (``clockwise`` is mmcv's flag)."""

from __future__ import annotations

import torch
from torch import nn

from ...core import checks
from .op import roi_align_rotated

# torch.fx leaf (as the other modules): a symbolic trace records the module's call as one node of this function.
torch.fx.wrap("roi_align_rotated")


class RoIAlignRotated(nn.Module):
    """``module(input [N, C, H, W], rois [K, 6]) -> [K, C, PH, PW]`` (CONVENTIONS.md §3b)."""

    def __init__(self, output_size, spatial_scale: float, sampling_ratio: int, *, clockwise: bool = False,
                 backend: str = "auto"):
        super().__init__()
        self.output_size = checks.pair("output_size", output_size)
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.clockwise = clockwise
        self.backend = backend

    def forward(self, input, rois):
        return roi_align_rotated(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio,
                                 clockwise=self.clockwise, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, clockwise={self.clockwise}, backend={self.backend!r}")
