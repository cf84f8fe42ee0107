"""The public operators: ``crop_and_resize`` (TensorFlow's), ``roi_align`` (torchvision's) and
``multiscale_roi_align`` (torchvision's ``MultiScaleRoIAlign`` pooling)."""

from __future__ import annotations

import torch

from . import _levels, _validation
from .core import autocast as _autocast, registry as _registry
from ._autograd import CropAndResizeFunction, MultiScaleRoIAlignFunction, RoIAlignFunction


def resolve_backend(backend: str, op: str, device) -> str:
    """The backend name that ``backend`` ("auto" or a name) resolves to for ``op`` on ``device``.

    ``auto``: the first of ``cpp``, ``cuda``, ``vectorized`` that runs on ``device`` and is available here (the
    compiled extension when it is built, else pure torch). Raises for an unknown name, listing every backend and
    why an unavailable one is.
    """
    if op not in _registry.OPS:
        raise ValueError(f"op must be one of {_registry.OPS}, got {op!r}")
    return _registry.resolve(backend, op, torch.device(device))


def _kernels(backend: str, op: str, x: torch.Tensor, boxes: torch.Tensor) -> _registry.OpKernels:
    """The kernels ``backend`` names for ``op`` on ``x``'s device and dtype, checked to give every gradient asked."""
    name = _registry.resolve(backend, op, x.device)
    kernels = _registry.kernels(name, op, x.device, x.dtype)
    if x.requires_grad and torch.is_grad_enabled() and not kernels.input_grad:
        raise ValueError(
            f"backend {name!r} computes the forward only (no gradient), but the feature map requires grad; "
            f"pass it detached, call under torch.no_grad(), or pick a backend with gradients (see impls.backends())"
        )
    if boxes.requires_grad and torch.is_grad_enabled() and not kernels.boxes_grad:
        raise ValueError(
            f"backend {name!r} gives no gradient to the boxes, but boxes.requires_grad is True; "
            f"pass boxes.detach() or pick a backend with box gradients (see impls.backends())"
        )
    return kernels


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
    boxes, box_index, crop_height, crop_width, extrapolation_value = _validation.crop_and_resize_args(
        image, boxes, box_index, crop_size, method, extrapolation_value
    )
    kernels = _kernels(backend, "crop_and_resize", image, boxes)
    return CropAndResizeFunction.apply(
        image, boxes, box_index, crop_height, crop_width, method, extrapolation_value, kernels
    )


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
    rois, pooled_height, pooled_width, spatial_scale, sampling_ratio = _validation.roi_align_args(
        input, boxes, output_size, spatial_scale, sampling_ratio, aligned
    )
    kernels = _kernels(backend, "roi_align", input, rois)
    return RoIAlignFunction.apply(
        input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned, kernels
    )


def multiscale_roi_align(
    features,
    boxes,
    image_shapes,
    output_size,
    sampling_ratio: int = -1,
    aligned: bool = False,
    *,
    canonical_scale: float = 224,
    canonical_level: int = 4,
    backend: str = "auto",
) -> torch.Tensor:
    """Multi-level RoIAlign over an FPN pyramid: torchvision's ``MultiScaleRoIAlign`` pooling as a function.

    Each box is pooled from the one level its size picks (``impls/_levels.py``: the FPN paper's equation, evaluated
    as torchvision evaluates it), at that level's scale, inferred from the maps' and the images' sizes.

    Args:
        features (List[Tensor[N, C, H_l, W_l]]): the pyramid's maps, finest first, consecutive levels (each half the
            previous one's size), same N, C, dtype and device.
        boxes (Tensor[K, 5] or List[Tensor[L, 4]]): as :func:`roi_align`, in image pixels.
        image_shapes (List[Tuple[int, int]]): each image's ``(height, width)`` before padding, one per image.
        output_size (int or (int, int)): ``(PH, PW)``.
        sampling_ratio (int): as :func:`roi_align`; ``<= 0`` is adaptive.
        aligned (bool): as :func:`roi_align`; torchvision's pooler always uses ``False``.
        canonical_scale, canonical_level (keyword-only): a box ``canonical_scale`` pixels on a side goes to level
            ``canonical_level`` (224 and 4, as torchvision).
        backend (str, keyword-only): ``"auto"`` or a name from :func:`impls.backends`: every level is pooled by it.

    Returns:
        Tensor[K, C, PH, PW] in the boxes' order, in the maps' dtype. Differentiable with respect to every level's
        map and the box coordinates; the level assignment, like the adaptive grid, is held fixed.
    """
    _registry.check_name(backend, "roi_align")
    features = _validation.pyramid_args(features, image_shapes)
    device_type = _autocast.active_device_type(features[0])
    if device_type is not None:  # torchvision's rule, as roi_align: float32 inside, the maps' dtype out
        with torch.autocast(device_type, enabled=False):
            out = multiscale_roi_align(
                _autocast.to_float32(features), _autocast.to_float32(boxes), image_shapes, output_size,
                sampling_ratio, aligned, canonical_scale=canonical_scale, canonical_level=canonical_level,
                backend=backend,
            )
        return out.to(features[0].dtype)
    scales = _levels.infer_scales([f.shape[-2] for f in features], image_shapes)
    rois, pooled_height, pooled_width, _, sampling_ratio = _validation.roi_align_args(
        features[0], boxes, output_size, scales[0], sampling_ratio, aligned
    )
    size = (pooled_height, pooled_width)
    if len(features) == 1:  # torchvision's pooler maps no level then, whatever the boxes' sizes
        return roi_align(features[0], rois, size, scales[0], sampling_ratio, aligned, backend=backend)
    levels = _levels.map_levels(rois[:, 1:].detach(), scales, canonical_scale, canonical_level)  # [K]
    name = _registry.resolve(backend, "roi_align", features[0].device)
    if "multiscale_roi_align" in _registry.registered()[name].kernels:
        kernels = _kernels(name, "multiscale_roi_align", features[0], rois)
        return MultiScaleRoIAlignFunction.apply(
            kernels, rois, levels, tuple(scales), pooled_height, pooled_width, sampling_ratio, aligned, *features
        )
    # A backend without a multi-level kernel (reference, the torchvision peer) pools each level with one roi_align
    # call, its boxes gathered and scattered back (each level's index is a host read on CUDA).
    out = features[0].new_zeros((rois.shape[0], features[0].shape[1], pooled_height, pooled_width))
    for level, (feature, scale) in enumerate(zip(features, scales)):
        idx = torch.where(levels == level)[0]  # [K_l]
        pooled = roi_align(feature, rois[idx], size, scale, sampling_ratio, aligned, backend=name)
        out = out.index_put((idx,), pooled.to(out.dtype))
    return out
