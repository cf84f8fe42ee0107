"""The public ``roi_align_rotated``: detectron2's ROIAlignRotated, with gradients to the boxes, on any backend."""

from __future__ import annotations

import torch

from ...core import autocast as _autocast
from ...core import dispatch
from ...core import registry as _registry
from ...core.function_call import apply_function
from .arguments import arguments
from .spec import Function


def roi_align_rotated(
    input: torch.Tensor,
    rois: torch.Tensor,
    output_size,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    *,
    clockwise: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """RoIAlign over rotated boxes (CONVENTIONS.md §3b): detectron2's ``ROIAlignRotated``.

    Args:
        input (Tensor[N, C, H, W]): the feature map.
        rois (Tensor[K, 6]): rows ``(batch_index, cx, cy, w, h, angle)`` in the coordinates of the original image
            (multiplied by ``spatial_scale`` to reach the map); the angle in degrees, counter-clockwise as seen in
            the image (y pointing down), about the box centre. The centre is shifted by -0.5 pixel after scaling
            (pixel i covers ``[i, i + 1)``), the size is never clamped; ``w, h >= 0``.
        output_size (int or (int, int)): ``(PH, PW)``: PH bins along the box's height axis, PW along its width.
        spatial_scale (float): feature map size over image size, e.g. 0.25 for a stride-4 map.
        sampling_ratio (int): samples per bin along each side; ``<= 0`` means adaptive, ``ceil(side / bins)``.
        clockwise (bool, keyword-only): the angle turns clockwise instead (mmcv's flag): the angle is negated.
        backend (str, keyword-only): ``"auto"`` or a name from :func:`impls.backends`.

    Returns:
        Tensor[K, C, PH, PW]. Differentiable with respect to ``input`` and the five box parameters (centre, size,
        angle per degree), with the sampling grid held fixed; samples outside ``[-1, H] x [-1, W]`` read 0, others
        are clamped into the map, and a clamped coordinate does not move with the box. The batch-index column gets
        0. Under ``torch.autocast`` it computes in float32 and returns ``input``'s dtype, as roi_align does.
    """
    _registry.check_name(backend, "roi_align_rotated")
    device_type = _autocast.active_device_type(input) if isinstance(input, torch.Tensor) else None
    if device_type is not None:
        with torch.autocast(device_type, enabled=False):
            out = roi_align_rotated(
                _autocast.to_float32(input), _autocast.to_float32(rois), output_size, spatial_scale,
                sampling_ratio, clockwise=clockwise, backend=backend,
            )
        return out.to(input.dtype)
    rois, pooled_height, pooled_width, spatial_scale, sampling_ratio = arguments(
        input, rois, output_size, spatial_scale, sampling_ratio, clockwise
    )
    kernels = dispatch.kernels(backend, "roi_align_rotated", input, rois)
    return apply_function(
        Function, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise, kernels
    )
