"""Rotated roi_align: detectron2's ``ROIAlignRotated`` (oriented boxes), with gradients to the feature map and to
all five box parameters (CONVENTIONS.md §3b)."""

from .module import RoIAlignRotated
from .op import roi_align_rotated

__all__ = ["RoIAlignRotated", "roi_align_rotated"]
