"""The one autograd.Function per operator: each calls the named backend's forward and backward kernels.

Nothing else in the project does autograd. The backend travels as its name (a str), so that
``torch.compile`` sees a constant.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from . import _registry


class CropAndResizeFunction(torch.autograd.Function):
    @staticmethod
    def forward(image, boxes, box_index, crop_height, crop_width, method, extrapolation_value, backend):
        kernels = _registry.registered()[backend].kernels["crop_and_resize"]
        return kernels.forward(image, boxes, box_index, crop_height, crop_width, method, extrapolation_value)

    @staticmethod
    def setup_context(ctx, inputs, output):
        image, boxes, box_index, crop_height, crop_width, method, _, backend = inputs
        ctx.save_for_backward(image, boxes, box_index)
        ctx.params = (crop_height, crop_width, method, backend)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        image, boxes, box_index = ctx.saved_tensors
        crop_height, crop_width, method, backend = ctx.params
        kernels = _registry.registered()[backend].kernels["crop_and_resize"]
        grad_image, grad_boxes = kernels.backward(
            grad, image, boxes, box_index, crop_height, crop_width, method,
            ctx.needs_input_grad[0], ctx.needs_input_grad[1],
        )
        return grad_image, grad_boxes, None, None, None, None, None, None


class RoIAlignFunction(torch.autograd.Function):
    @staticmethod
    def forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned, backend):
        kernels = _registry.registered()[backend].kernels["roi_align"]
        return kernels.forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, rois, *params = inputs
        ctx.save_for_backward(input, rois)
        ctx.params = params

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        input, rois = ctx.saved_tensors
        spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned, backend = ctx.params
        kernels = _registry.registered()[backend].kernels["roi_align"]
        grad_input, grad_rois = kernels.backward(
            grad, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned,
            ctx.needs_input_grad[0], ctx.needs_input_grad[1],
        )
        return grad_input, grad_rois, None, None, None, None, None, None
