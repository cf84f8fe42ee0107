"""The public ``roi_align``: torchvision's operator, with gradients to the boxes, on any backend."""

from __future__ import annotations

import torch

from ...core import autocast as _autocast
from ...core import dispatch
from ...core import registry as _registry
from ...core.function_call import apply_function
from .arguments import arguments
from .spec import Function


def roi_align(
    input: torch.Tensor,
    boxes,
    output_size,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """torchvision's ``roi_align`` (Mask R-CNN's RoIAlign), with gradients to the boxes as well.

    Args:
        input (Tensor[N, C, H, W]): the feature map.
        boxes (Tensor[K, 5] or List[Tensor[L, 4]]): rows ``(batch_index, x1, y1, x2, y2)``, or one tensor of
            ``(x1, y1, x2, y2)`` per image; in the coordinates of the original image (multiplied by
            ``spatial_scale`` to reach the feature map).
        output_size (int or (int, int)): ``(PH, PW)``.
        spatial_scale (float): feature map size over image size, e.g. 0.25 for a stride-4 map.
        sampling_ratio (int): samples per bin along each side; ``<= 0`` means adaptive,
            ``ceil(roi_size / output_size)`` per box.
        aligned (bool): shift boxes by -0.5 pixel so that pixel i covers ``[i, i + 1)`` (Detectron2's
            ``ROIAlignV2``); ``False`` reproduces the original Mask R-CNN (and forces boxes to at least 1x1).
        backend (str, keyword-only): ``"auto"`` or a name from :func:`impls.backends`.

    Returns:
        Tensor[K, C, PH, PW]. Differentiable with respect to ``input`` and the box coordinates. The box
        gradient is the derivative of the bilinear sample positions with the sampling grid size held fixed
        (adaptive ``ceil`` is piecewise constant); samples clamped to the border, and box sides clamped to 1
        when ``aligned=False``, do not move with the box and contribute nothing. The batch-index column gets 0.
        Under ``torch.autocast`` it computes in float32 and returns ``input``'s dtype, as torchvision does.
    """
    _registry.check_name(backend, "roi_align")
    device_type = _autocast.active_device_type(input) if isinstance(input, torch.Tensor) else None
    if device_type is not None:
        with torch.autocast(device_type, enabled=False):
            out = roi_align(
                _autocast.to_float32(input), _autocast.to_float32(boxes), output_size, spatial_scale,
                sampling_ratio, aligned, backend=backend,
            )
        return out.to(input.dtype)
    rois, pooled_height, pooled_width, spatial_scale, sampling_ratio = arguments(
        input, boxes, output_size, spatial_scale, sampling_ratio, aligned
    )
    kernels = dispatch.kernels(backend, "roi_align", input, rois)
    return apply_function(
        Function, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned, kernels
    )
