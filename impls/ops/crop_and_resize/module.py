"""The original PyTorch port's modules, both built on crop_and_resize: ``CropAndResize`` (TensorFlow's operator as a
module) and ``RoIAlign`` (pixel boxes normalized, then cropped; CONVENTIONS.md §2)."""

from __future__ import annotations

import torch
from torch import nn

from ...core import checks
from .op import crop_and_resize

# torch.fx leaves (as torchvision's ops): a symbolic trace of a model records each module's call as one node of the
# function below, instead of tracing into validation that needs real tensors. A name is patched in this module's
# namespace while tracing; the public ops are patched in the package's namespace (impls/__init__.py).
torch.fx.wrap("crop_and_resize")


class CropAndResize(nn.Module):
    """``module(image [N, C, H, W], boxes [K, 4] normalized (y1, x1, y2, x2), box_index [K]) -> [K, C, ch, cw]``."""

    def __init__(self, crop_height: int, crop_width: int, extrapolation_value: float = 0, backend: str = "auto"):
        super().__init__()
        self.crop_height, self.crop_width = checks.pair("(crop_height, crop_width)", (crop_height, crop_width))
        self.extrapolation_value = extrapolation_value
        self.backend = backend

    def forward(self, image, boxes, box_index):
        return crop_and_resize(
            image, boxes, box_index, (self.crop_height, self.crop_width),
            extrapolation_value=self.extrapolation_value, backend=self.backend,
        )

    def extra_repr(self) -> str:
        return (f"crop_height={self.crop_height}, crop_width={self.crop_width}, "
                f"extrapolation_value={self.extrapolation_value}, backend={self.backend!r}")


def _span(size: int) -> int:
    """The normalizer ``size - 1``. A side of 1 pixel has one sample position whatever the box (crop_and_resize
    multiplies the normalized box by ``size - 1 = 0``), so any finite normalizer is right; 1 avoids 0/0."""
    return max(size - 1, 1)


def normalize_boxes(boxes: torch.Tensor, height: int, width: int, crop_height: int, crop_width: int,
                    transform_fpcoor: bool) -> torch.Tensor:
    """Pixel ``(x1, y1, x2, y2)`` boxes [K, 4] -> the normalized ``(y1, x1, y2, x2)`` crop_and_resize takes.

    ``transform_fpcoor=True`` (tensorpack's floating-point coordinates) places sample j at
    ``x1 - 0.5 + (j + 0.5) * (x2 - x1) / crop_width``: the samples of ``roi_align(aligned=True, sampling_ratio=1)``.
    ``False`` maps the box corners onto the first and last samples.
    """
    x1, y1, x2, y2 = boxes.unbind(dim=1)  # each [K]
    span_h, span_w = _span(height), _span(width)
    if transform_fpcoor:
        sample_w = (x2 - x1) / crop_width  # [K] spacing of samples in pixels
        sample_h = (y2 - y1) / crop_height
        nx0 = (x1 + sample_w / 2 - 0.5) / span_w
        ny0 = (y1 + sample_h / 2 - 0.5) / span_h
        nw = sample_w * (crop_width - 1) / span_w
        nh = sample_h * (crop_height - 1) / span_h
        return torch.stack([ny0, nx0, ny0 + nh, nx0 + nw], dim=1)  # [K, 4]
    return torch.stack([y1 / span_h, x1 / span_w, y2 / span_h, x2 / span_w], dim=1)  # [K, 4]


def port_roi_align(featuremap, boxes, box_index, crop_height: int, crop_width: int, extrapolation_value: float,
                   transform_fpcoor: bool, backend: str):
    """What ``RoIAlign(crop_height, crop_width, extrapolation_value, transform_fpcoor, backend)(featuremap, boxes,
    box_index)`` computes: ``boxes`` [K, 4] pixel ``(x1, y1, x2, y2)`` on the map, normalized, then cropped."""
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        got = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise ValueError(f"boxes must be a Tensor[K, 4] of pixel (x1, y1, x2, y2), got {got}")
    if not isinstance(featuremap, torch.Tensor) or featuremap.dim() != 4:
        got = tuple(featuremap.shape) if isinstance(featuremap, torch.Tensor) else type(featuremap).__name__
        raise ValueError(f"featuremap must be a Tensor[N, C, H, W], got {got}")
    height, width = featuremap.shape[2], featuremap.shape[3]
    normalized = normalize_boxes(boxes, height, width, crop_height, crop_width, transform_fpcoor)
    return crop_and_resize(featuremap, normalized, box_index, (crop_height, crop_width),
                           extrapolation_value=extrapolation_value, backend=backend)


torch.fx.wrap("port_roi_align")


class RoIAlign(nn.Module):
    """The original port's RoIAlign: ``module(featuremap [N, C, H, W], boxes [K, 4], box_index [K])``.

    ``boxes`` are unnormalized ``(x1, y1, x2, y2)`` in feature-map pixels. Output ``[K, C, crop_height, crop_width]``.
    """

    def __init__(self, crop_height: int, crop_width: int, extrapolation_value: float = 0,
                 transform_fpcoor: bool = True, backend: str = "auto"):
        super().__init__()
        self.crop_height, self.crop_width = checks.pair("(crop_height, crop_width)", (crop_height, crop_width))
        self.extrapolation_value = extrapolation_value
        self.transform_fpcoor = transform_fpcoor
        self.backend = backend

    def forward(self, featuremap, boxes, box_index):
        return port_roi_align(featuremap, boxes, box_index, self.crop_height, self.crop_width,
                              self.extrapolation_value, self.transform_fpcoor, self.backend)

    def extra_repr(self) -> str:
        return (f"crop_height={self.crop_height}, crop_width={self.crop_width}, "
                f"extrapolation_value={self.extrapolation_value}, transform_fpcoor={self.transform_fpcoor}, "
                f"backend={self.backend!r}")
