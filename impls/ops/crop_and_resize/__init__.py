"""crop_and_resize: TensorFlow's ``tf.image.crop_and_resize`` in NCHW (CONVENTIONS.md §1), and the original PyTorch
port's ``CropAndResize`` and ``RoIAlign`` modules built on it (§2)."""

from .module import CropAndResize, RoIAlign
from .op import crop_and_resize

__all__ = ["CropAndResize", "RoIAlign", "crop_and_resize"]
