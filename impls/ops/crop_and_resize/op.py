"""The public ``crop_and_resize``: TensorFlow's operator in NCHW, on any backend."""

from __future__ import annotations

import torch

from ...core import autocast as _autocast
from ...core import dispatch
from ...core import registry as _registry
from ...core.function_call import apply_function
from .arguments import arguments
from .spec import Function


def crop_and_resize(
    image: torch.Tensor,
    boxes: torch.Tensor,
    box_index: torch.Tensor,
    crop_size,
    method: str = "bilinear",
    extrapolation_value: float = 0.0,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """TensorFlow's ``tf.image.crop_and_resize`` in NCHW.

    Args:
        image (Tensor[N, C, H, W]): the feature map or image batch.
        boxes (Tensor[K, 4]): normalized ``(y1, x1, y2, x2)``; ``y = 0`` is the centre of the first pixel row and
            ``y = 1`` the centre of the last ("corner aligned"). ``y1 > y2`` flips the crop; values outside
            ``[0, 1]`` are allowed and sample ``extrapolation_value`` beyond the image.
        box_index (Tensor[K], int32 or int64): the image each box belongs to, in ``[0, N)``.
        crop_size (int or (int, int)): ``(crop_height, crop_width)``, both > 0.
        method (str): ``"bilinear"`` or ``"nearest"`` (round half away from zero).
        extrapolation_value (float): the value of samples outside the image.
        backend (str, keyword-only): ``"auto"`` or a name from :func:`impls.backends`.

    Returns:
        Tensor[K, C, crop_height, crop_width]. Differentiable with respect to ``image`` (both methods) and
        ``boxes`` (bilinear; nearest has zero box gradient, unlike TensorFlow, which returns the bilinear one).
        Under ``torch.autocast`` it computes in float32 and returns ``image``'s dtype (see ``impls.core.autocast``).
    """
    _registry.check_name(backend, "crop_and_resize")
    device_type = _autocast.active_device_type(image) if isinstance(image, torch.Tensor) else None
    if device_type is not None:
        with torch.autocast(device_type, enabled=False):
            out = crop_and_resize(
                _autocast.to_float32(image), _autocast.to_float32(boxes), box_index, crop_size, method,
                extrapolation_value, backend=backend,
            )
        return out.to(image.dtype)
    boxes, box_index, crop_height, crop_width, extrapolation_value = arguments(
        image, boxes, box_index, crop_size, method, extrapolation_value
    )
    kernels = dispatch.kernels(backend, "crop_and_resize", image, boxes)
    return apply_function(
        Function, image, boxes, box_index, crop_height, crop_width, method, extrapolation_value, kernels
    )
