"""The kernels as operators: one schema and one fake kernel each (roi_align, crop_and_resize and the multi-level
roi_align, three each).

A fake kernel gives an operator's output shape, dtype and layout (``impls/_layout.py``) without computing it, and
checks the shape contract of its arguments: it is what ``torch.compile`` runs while tracing. Two backends are
reached through such operators. The C++ extension defines ``impls::<name>`` with these schemas in
``csrc/ops.cpp`` (``tests/backends/test_extension.py`` checks that the two texts agree) and
``impls/backends/extension.py`` gives them these fakes. The ``triton`` backend defines ``impls::triton_<name>`` from them, so that a compiled graph
calls its launch code as one opaque operator instead of tracing it.
"""

from __future__ import annotations

import torch

from .core import layout as _layout

SCHEMAS = {
    "crop_and_resize_forward": (
        "(Tensor image, Tensor boxes, Tensor box_index, SymInt crop_height, SymInt crop_width, str method, "
        "float extrapolation_value) -> Tensor"
    ),
    "crop_and_resize_backward_input": (
        "(Tensor grad, Tensor boxes, Tensor box_index, SymInt crop_height, SymInt crop_width, SymInt batch_size, "
        "SymInt channels, SymInt height, SymInt width, str method) -> Tensor"
    ),
    "crop_and_resize_backward_boxes": (
        "(Tensor grad, Tensor image, Tensor boxes, Tensor box_index, SymInt crop_height, SymInt crop_width, "
        "str method) -> Tensor"
    ),
    "roi_align_forward": (
        "(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
        "int sampling_ratio, bool aligned) -> Tensor"
    ),
    "roi_align_backward_input": (
        "(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
        "SymInt batch_size, SymInt channels, SymInt height, SymInt width, int sampling_ratio, bool aligned) -> Tensor"
    ),
    "roi_align_backward_boxes": (
        "(Tensor grad, Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
        "int sampling_ratio, bool aligned) -> Tensor"
    ),
}

# Multi-level roi_align (cpp, cuda and triton), apart from SCHEMAS: the six single-map operators.
MULTISCALE_SCHEMAS = {
    "multiscale_roi_align_forward": (
        "(Tensor[] features, Tensor rois, Tensor levels, float[] scales, SymInt pooled_height, SymInt pooled_width, "
        "int sampling_ratio, bool aligned) -> Tensor"
    ),
    "multiscale_roi_align_backward_input": (
        "(Tensor grad, Tensor rois, Tensor levels, float[] scales, SymInt pooled_height, SymInt pooled_width, "
        "SymInt batch_size, SymInt channels, int[] heights, int[] widths, int sampling_ratio, bool aligned) "
        "-> Tensor[]"
    ),
    "multiscale_roi_align_backward_boxes": (
        "(Tensor grad, Tensor[] features, Tensor rois, Tensor levels, float[] scales, SymInt pooled_height, "
        "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor"
    ),
}


def _check_grad(grad, k, channels, out_height, out_width):
    """The contract on an incoming gradient: [K, C, out_height, out_width]."""
    torch._check(
        grad.shape == (k, channels, out_height, out_width),
        lambda: f"grad must be [{k}, {channels}, {out_height}, {out_width}], got {tuple(grad.shape)}",
    )


def _input_grad_like(grad, batch_size, channels, height, width):
    """An input gradient: [N, C, H, W] in the incoming gradient's layout."""
    out = grad.new_empty((batch_size, channels, height, width))
    return out.contiguous(memory_format=_layout.memory_format(grad))


def crop_and_resize_forward(image, boxes, box_index, crop_height, crop_width, method, extrapolation_value):
    torch._check(image.dim() == 4, lambda: f"image must be [N, C, H, W], got {tuple(image.shape)}")
    torch._check(boxes.dim() == 2 and boxes.shape[1] == 4, lambda: f"boxes must be [K, 4], got {tuple(boxes.shape)}")
    torch._check(box_index.shape == (boxes.shape[0],), lambda: "box_index must be [K]")
    out = image.new_empty((boxes.shape[0], image.shape[1], crop_height, crop_width))
    return out.contiguous(memory_format=_layout.memory_format(image))


def crop_and_resize_backward_input(grad, boxes, box_index, crop_height, crop_width, batch_size, channels, height,
                                   width, method):
    _check_grad(grad, boxes.shape[0], channels, crop_height, crop_width)
    return _input_grad_like(grad, batch_size, channels, height, width)


def crop_and_resize_backward_boxes(grad, image, boxes, box_index, crop_height, crop_width, method):
    _check_grad(grad, boxes.shape[0], image.shape[1], crop_height, crop_width)
    return boxes.new_empty(boxes.shape)


def roi_align_forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    torch._check(input.dim() == 4, lambda: f"input must be [N, C, H, W], got {tuple(input.shape)}")
    torch._check(rois.dim() == 2 and rois.shape[1] == 5, lambda: f"rois must be [K, 5], got {tuple(rois.shape)}")
    out = input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))
    return out.contiguous(memory_format=_layout.memory_format(input))


def roi_align_backward_input(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height,
                             width, sampling_ratio, aligned):
    _check_grad(grad, rois.shape[0], channels, pooled_height, pooled_width)
    return _input_grad_like(grad, batch_size, channels, height, width)


def roi_align_backward_boxes(grad, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    _check_grad(grad, rois.shape[0], input.shape[1], pooled_height, pooled_width)
    return rois.new_empty(rois.shape)


def multiscale_roi_align_forward(features, rois, levels, scales, pooled_height, pooled_width, sampling_ratio,
                                 aligned):
    torch._check(rois.dim() == 2 and rois.shape[1] == 5, lambda: f"rois must be [K, 5], got {tuple(rois.shape)}")
    torch._check(levels.shape == (rois.shape[0],), lambda: "levels must be [K]")
    first = features[0]
    out = first.new_empty((rois.shape[0], first.shape[1], pooled_height, pooled_width))
    return out.contiguous(memory_format=_layout.memory_format(first))


def multiscale_roi_align_backward_input(grad, rois, levels, scales, pooled_height, pooled_width, batch_size,
                                        channels, heights, widths, sampling_ratio, aligned):
    _check_grad(grad, rois.shape[0], channels, pooled_height, pooled_width)
    return [_input_grad_like(grad, batch_size, channels, h, w) for h, w in zip(heights, widths)]


def multiscale_roi_align_backward_boxes(grad, features, rois, levels, scales, pooled_height, pooled_width,
                                        sampling_ratio, aligned):
    _check_grad(grad, rois.shape[0], features[0].shape[1], pooled_height, pooled_width)
    return rois.new_empty(rois.shape)


FAKES = {name: globals()[name] for name in {**SCHEMAS, **MULTISCALE_SCHEMAS}}
