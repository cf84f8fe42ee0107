"""Argument checks, done once in Python before any backend runs.

Every error names the argument, what was expected and what was given. The checks that read tensor values
(box indices in range, finite boxes) are reduced on the tensors' device and brought to the host together: one
device-to-host copy per call, which on CUDA is the call's one synchronization.

Under ``torch.compile`` a value cannot be read while tracing. The graph computes the same statistics (fused by
the compiler into one kernel) and hands them to one opaque custom operator per call (``impls::checked_boxes`` /
``impls::checked_rois``): when the graph runs it reads them, raises the eager exception with the eager message,
on every device, and returns a copy of the boxes (``K`` rows) that the kernels then read, so that no compiler can
drop the check or run a kernel before it. That costs what eager mode costs: one device-to-host copy per call. An
in-graph assertion (``torch._assert_async``) would not: on CUDA it is a device-side assert, which leaves the CUDA
context unusable.
The operators carry the ``cudagraph_unsafe`` tag, so ``mode="reduce-overhead"`` leaves the graph around them out
of its CUDA graphs instead of failing to capture the read. Behind the checks, the ``cuda``, ``vectorized``,
``compiled`` and ``triton`` kernels still never read another image or out of bounds when called directly with a
bad image index (NaN output, no gradient).
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence, Union

import torch

from .core.registry import FLOAT_DTYPES
METHODS = ("bilinear", "nearest")


def _check_feature_map(name: str, x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a Tensor[N, C, H, W], got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be 4-D [N, C, H, W], got shape {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating tensor (float16, bfloat16, float32, float64), got {x.dtype}")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{name} must have H > 0 and W > 0, got shape {tuple(x.shape)}")


def _check_like(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}; move both to one device")
    if t.dtype != ref.dtype:
        if name.startswith("boxes") and ref.dtype in (torch.float16, torch.bfloat16) and t.dtype.itemsize > 2:
            # Casting the boxes down is the worse fix: float16 steps by 0.5 px at 800 px (notebook 04, pitfalls).
            raise TypeError(
                f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}; keep {name} in {t.dtype} and call the op "
                f"under torch.autocast (it computes in float32 and returns {ref.dtype}), or cast {ref_name} to "
                f"{t.dtype}; casting {name} to {ref.dtype} would round the box corners"
            )
        raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}; cast {name} to {ref.dtype}")


def _stats(*values: torch.Tensor) -> torch.Tensor:
    """Scalar tensors (reductions on the tensors' device) as one float64 tensor, still on that device."""
    return torch.stack([v.to(torch.float64) for v in values])


def _read(stats: torch.Tensor) -> list:
    """A call's one device-to-host copy: its value statistics as Python numbers."""
    return stats.tolist()


def pair(name: str, value) -> tuple[int, int]:
    """``int`` or ``(int, int)``, both > 0 -> ``(h, w)``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    if isinstance(value, torch.Size) or (
        isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
    ):
        h, w = value
        if all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (h, w)):
            if h > 0 and w > 0:
                return int(h), int(w)
            raise ValueError(f"{name} must be positive, got ({h}, {w})")
    raise TypeError(f"{name} must be an int or a pair of ints (height, width), got {value!r}")


def crop_and_resize_args(image, boxes, box_index, crop_size, method, extrapolation_value):
    """Validate; returns ``(boxes, box_index as int64, crop_height, crop_width, extrapolation_value as float)``.

    Under ``torch.compile`` the returned boxes are the value check's copy (module docstring); the kernels must
    read those."""
    _check_feature_map("image", image)
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        got = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise ValueError(f"boxes must be a Tensor[K, 4] of normalized (y1, x1, y2, x2), got {got}")
    _check_like("boxes", boxes, "image", image)
    if not isinstance(box_index, torch.Tensor) or box_index.dim() != 1:
        got = tuple(box_index.shape) if isinstance(box_index, torch.Tensor) else type(box_index).__name__
        raise ValueError(f"box_index must be a Tensor[K] of image indices, got {got}")
    if box_index.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"box_index must be int32 or int64, got {box_index.dtype}; use box_index.long()")
    if box_index.device != image.device:
        raise ValueError(f"box_index is on {box_index.device} but image is on {image.device}; move it")
    if box_index.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"box_index has {box_index.shape[0]} entries but boxes has {boxes.shape[0]} rows; give one per box"
        )
    if box_index.numel():
        stats = _box_stats(boxes, box_index)
        if torch.compiler.is_compiling():
            boxes = checked_boxes(boxes, stats, image.shape[0])
        else:
            _raise_for_boxes(_read(stats), image.shape[0])
    crop_height, crop_width = pair("crop_size", crop_size)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(extrapolation_value, numbers.Real):
        raise TypeError(f"extrapolation_value must be a number, got {type(extrapolation_value).__name__}")
    return boxes, box_index.long(), crop_height, crop_width, float(extrapolation_value)


BoxesArg = Union[torch.Tensor, Sequence[torch.Tensor]]


def roi_align_args(input, boxes: BoxesArg, output_size, spatial_scale, sampling_ratio, aligned):
    """Validate; returns ``(rois Tensor[K, 5], pooled_height, pooled_width, spatial_scale, sampling_ratio)``.

    A list of per-image ``Tensor[L_i, 4]`` becomes rows ``(i, x1, y1, x2, y2)`` with ``torch.cat``, so a
    gradient to the list's tensors flows back through the concatenation.
    """
    _check_feature_map("input", input)
    if isinstance(boxes, (list, tuple)):
        for i, b in enumerate(boxes):
            if not isinstance(b, torch.Tensor) or b.dim() != 2 or b.shape[1] != 4:
                got = tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__
                raise ValueError(f"boxes[{i}] must be a Tensor[L, 4] of (x1, y1, x2, y2), got {got}")
            _check_like(f"boxes[{i}]", b, "input", input)
        if len(boxes) > input.shape[0]:
            raise IndexError(f"boxes is a list of {len(boxes)} tensors but input has only {input.shape[0]} images")
        rois = _list_to_rois(boxes, input)
    elif isinstance(boxes, torch.Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise ValueError(
                f"boxes must be a Tensor[K, 5] of (batch_index, x1, y1, x2, y2) or a list of Tensor[L, 4], "
                f"got shape {tuple(boxes.shape)}"
            )
        _check_like("boxes", boxes, "input", input)
        rois = boxes
    else:
        raise TypeError(f"boxes must be a Tensor[K, 5] or a list of Tensor[L, 4], got {type(boxes).__name__}")
    pooled_height, pooled_width = pair("output_size", output_size)
    if (not isinstance(spatial_scale, numbers.Real) or isinstance(spatial_scale, bool)
            or not 0 < spatial_scale < math.inf):
        raise ValueError(
            f"spatial_scale must be a positive number, and finite (e.g. 0.25 for stride 4), got {spatial_scale!r}"
        )
    if rois.numel():
        stats = _roi_stats(rois, float(spatial_scale))
        if torch.compiler.is_compiling():
            rois = checked_rois(rois, stats, input.shape[0], float(spatial_scale))
        else:
            _raise_for_rois(_read(stats), input.shape[0], float(spatial_scale))
    if not isinstance(sampling_ratio, numbers.Integral) or isinstance(sampling_ratio, bool):
        raise TypeError(f"sampling_ratio must be an int (<= 0 for adaptive), got {sampling_ratio!r}")
    if not isinstance(aligned, bool):
        raise TypeError(f"aligned must be a bool, got {aligned!r}")
    return rois, pooled_height, pooled_width, float(spatial_scale), int(sampling_ratio)


def pyramid_args(features, image_shapes) -> list[torch.Tensor]:
    """Validate a feature pyramid (maps finest first) and its images' shapes; returns the maps as a list."""
    if isinstance(features, torch.Tensor) or not isinstance(features, (list, tuple)) or len(features) == 0:
        raise TypeError(
            f"features must be a non-empty list of Tensor[N, C, H_l, W_l], finest first, got "
            f"{type(features).__name__}"
        )
    for level, feature in enumerate(features):
        _check_feature_map(f"features[{level}]", feature)
    first = features[0]
    for level, feature in enumerate(features[1:], start=1):
        if feature.shape[:2] != first.shape[:2]:
            raise ValueError(
                f"features[{level}] has N, C = {tuple(feature.shape[:2])} but features[0] has "
                f"{tuple(first.shape[:2])}: every level must hold the same images and channels"
            )
        _check_like(f"features[{level}]", feature, "features[0]", first)
    if not isinstance(image_shapes, (list, tuple)) or len(image_shapes) != first.shape[0]:
        got = len(image_shapes) if isinstance(image_shapes, (list, tuple)) else type(image_shapes).__name__
        raise ValueError(
            f"image_shapes must list one (height, width) per image, {first.shape[0]} here (the maps' N), got {got}"
        )
    for i, shape in enumerate(image_shapes):
        if len(shape) != 2 or not all(isinstance(v, numbers.Integral) and v > 0 for v in shape):
            raise ValueError(f"image_shapes[{i}] must be a (height, width) of positive ints, got {shape!r}")
    return list(features)


def _box_stats(boxes: torch.Tensor, box_index: torch.Tensor) -> torch.Tensor:
    """[3]: all boxes finite, the smallest and the largest image index."""
    return _stats(torch.isfinite(boxes).all(), box_index.min(), box_index.max())


def _raise_for_boxes(stats: list, n: int) -> None:
    finite, lo, hi = stats
    if lo < 0 or hi >= n:
        raise IndexError(f"box_index must be in [0, {n}) (the image batch size), found values in [{lo:.0f}, {hi:.0f}]")
    if not finite:
        raise ValueError("boxes must be finite; found NaN or inf")


def _roi_stats(rois: torch.Tensor, spatial_scale: float) -> torch.Tensor:
    """[5]: all finite, all batch indices whole, the smallest and the largest, all still finite on the map."""
    batch = rois[:, 0]
    scaled = rois[:, 1:].to(torch.float64) * spatial_scale  # [K, 4] feature-map coordinates
    return _stats(torch.isfinite(rois).all(), (batch == batch.floor()).all(), batch.min(), batch.max(),
                  torch.isfinite(scaled).all())


def _raise_for_rois(stats: list, n: int, spatial_scale: float) -> None:
    finite, whole, lo, hi, finite_scaled = stats
    if not finite:
        raise ValueError("boxes must be finite; found NaN or inf")
    if not whole:
        raise ValueError("boxes[:, 0] (the batch index) must hold whole numbers")
    if lo < 0 or hi >= n:
        raise IndexError(f"boxes[:, 0] (the batch index) must be in [0, {n}), found values in [{lo:.0f}, {hi:.0f}]")
    if not finite_scaled:
        raise ValueError(
            f"boxes * spatial_scale ({spatial_scale!r}) overflows to inf: the boxes are too large for this scale"
        )


# The reads of compiled graphs (module docstring): the graph computes the statistics (fused with the rest), these
# operators read them when it runs and return a copy of the boxes for the kernels; the gradient passes through.


@torch.library.custom_op("impls::checked_boxes", mutates_args=(), tags=(torch.Tag.cudagraph_unsafe,))
def checked_boxes(boxes: torch.Tensor, stats: torch.Tensor, batch_size: int) -> torch.Tensor:
    _raise_for_boxes(_read(stats), batch_size)
    return boxes.clone()


@torch.library.custom_op("impls::checked_rois", mutates_args=(), tags=(torch.Tag.cudagraph_unsafe,))
def checked_rois(rois: torch.Tensor, stats: torch.Tensor, batch_size: int, spatial_scale: float) -> torch.Tensor:
    _raise_for_rois(_read(stats), batch_size, spatial_scale)
    return rois.clone()


@checked_boxes.register_fake
def _(boxes, stats, batch_size):
    return torch.empty_like(boxes)


@checked_rois.register_fake
def _(rois, stats, batch_size, spatial_scale):
    return torch.empty_like(rois)


checked_boxes.register_autograd(lambda ctx, grad: (grad, None, None))
checked_rois.register_autograd(lambda ctx, grad: (grad, None, None, None))


def _list_to_rois(boxes: Sequence[torch.Tensor], input: torch.Tensor) -> torch.Tensor:
    if len(boxes) == 0:
        return input.new_zeros((0, 5))
    index = torch.cat(
        [torch.full((b.shape[0], 1), i, dtype=b.dtype, device=b.device) for i, b in enumerate(boxes)]
    )  # [K, 1]
    return torch.cat([index, torch.cat(list(boxes))], dim=1)  # [K, 5]
