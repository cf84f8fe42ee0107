"""roi_align: torchvision's ``roi_align`` (Mask R-CNN's RoIAlign), with gradients to the boxes (CONVENTIONS.md §3)."""

from .op import roi_align

__all__ = ["roi_align"]
