"""The public ``multiscale_roi_align``: torchvision's ``MultiScaleRoIAlign`` pooling as a function, on any backend."""

from __future__ import annotations

import torch

from ...core import autocast as _autocast
from ...core import dispatch
from ...core import registry as _registry
from ..roi_align.arguments import arguments
from ..roi_align.op import roi_align
from . import levels as _levels
from .arguments import pyramid_arguments
from .spec import Function


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

    Each box is pooled from the one level its size picks (``levels.py``: the FPN paper's equation, evaluated as
    torchvision evaluates it), at that level's scale, inferred from the maps' and the images' sizes.

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
    features = pyramid_arguments(features, image_shapes)
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
    rois, pooled_height, pooled_width, _, sampling_ratio = arguments(
        features[0], boxes, output_size, scales[0], sampling_ratio, aligned
    )
    size = (pooled_height, pooled_width)
    if len(features) == 1:  # torchvision's pooler maps no level then, whatever the boxes' sizes
        return roi_align(features[0], rois, size, scales[0], sampling_ratio, aligned, backend=backend)
    levels = _levels.map_levels(rois[:, 1:].detach(), scales, canonical_scale, canonical_level)  # [K]
    name = _registry.resolve(backend, "roi_align", features[0].device)
    if "multiscale_roi_align" in _registry.registered()[name].kernels:
        kernels = dispatch.kernels(name, "multiscale_roi_align", features[0], rois)
        return Function.apply(
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
