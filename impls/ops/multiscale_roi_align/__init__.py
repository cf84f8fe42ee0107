"""Multi-level roi_align: torchvision's ``MultiScaleRoIAlign`` pooling over an FPN pyramid, as a function and as the
module (CONVENTIONS.md §3a); ``levels.py`` holds torchvision's level and scale rules."""

from .module import MultiScaleRoIAlign
from .op import multiscale_roi_align

__all__ = ["MultiScaleRoIAlign", "multiscale_roi_align"]
