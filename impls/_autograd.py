"""The one autograd.Function per operator: each calls one backend's kernels (an ``OpKernels`` record).

Nothing else in the project does autograd. The record is looked up once per call, by the public op, and
travels through ``apply`` to the backward. The feature map is saved for the backward only when the boxes need
a gradient: the input gradient needs its sizes, not its values.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable


class CropAndResizeFunction(torch.autograd.Function):
    @staticmethod
    def forward(image, boxes, box_index, crop_height, crop_width, method, extrapolation_value, kernels):
        return kernels.forward(image, boxes, box_index, crop_height, crop_width, method, extrapolation_value)

    @staticmethod
    def setup_context(ctx, inputs, output):
        image, boxes, box_index, crop_height, crop_width, method, _, kernels = inputs
        ctx.save_for_backward(image if ctx.needs_input_grad[1] else None, boxes, box_index)
        ctx.image_shape = image.shape
        ctx.params = (crop_height, crop_width, method, kernels)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        image, boxes, box_index = ctx.saved_tensors
        crop_height, crop_width, method, kernels = ctx.params
        grad_image = grad_boxes = None
        if ctx.needs_input_grad[0]:
            grad_image = kernels.backward_input(
                grad, boxes, box_index, crop_height, crop_width, *ctx.image_shape, method
            )
        if ctx.needs_input_grad[1]:
            grad_boxes = kernels.backward_boxes(grad, image, boxes, box_index, crop_height, crop_width, method)
        return grad_image, grad_boxes, None, None, None, None, None, None


class RoIAlignFunction(torch.autograd.Function):
    @staticmethod
    def forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned, kernels):
        return kernels.forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, rois, *params = inputs
        ctx.save_for_backward(input if ctx.needs_input_grad[1] else None, rois)
        ctx.input_shape = input.shape
        ctx.params = params

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        input, rois = ctx.saved_tensors
        spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned, kernels = ctx.params
        grad_input = grad_rois = None
        if ctx.needs_input_grad[0]:
            grad_input = kernels.backward_input(
                grad, rois, spatial_scale, pooled_height, pooled_width, *ctx.input_shape, sampling_ratio, aligned
            )
        if ctx.needs_input_grad[1]:
            grad_rois = kernels.backward_boxes(
                grad, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned
            )
        return grad_input, grad_rois, None, None, None, None, None, None


class MultiScaleRoIAlignFunction(torch.autograd.Function):
    """Multi-level roi_align in one kernel call per pass. The maps come last, one argument each, so that each gets
    its own gradient; their number varies, and Dynamo traces a variable-length forward only in the ``forward(ctx,
    ...)`` form (with ``setup_context`` it passes the context as the first argument anyway), so this one Function
    uses that form."""

    @staticmethod
    def forward(ctx, kernels, rois, levels, scales, pooled_height, pooled_width, sampling_ratio, aligned, *features):
        ctx.save_for_backward(rois, levels, *(features if ctx.needs_input_grad[1] else ()))
        ctx.shapes = [f.shape for f in features]
        ctx.params = (scales, pooled_height, pooled_width, sampling_ratio, aligned, kernels)
        return kernels.forward(list(features), rois, levels, scales, pooled_height, pooled_width, sampling_ratio,
                               aligned)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        rois, levels, *features = ctx.saved_tensors
        scales, pooled_height, pooled_width, sampling_ratio, aligned, kernels = ctx.params
        grad_maps = [None] * len(ctx.shapes)
        if any(ctx.needs_input_grad[8:]):
            batch_size, channels = ctx.shapes[0][:2]
            grad_maps = kernels.backward_input(
                grad, rois, levels, scales, pooled_height, pooled_width, batch_size, channels,
                [s[2] for s in ctx.shapes], [s[3] for s in ctx.shapes], sampling_ratio, aligned,
            )
        grad_rois = None
        if ctx.needs_input_grad[1]:
            grad_rois = kernels.backward_boxes(grad, features, rois, levels, scales, pooled_height, pooled_width,
                                               sampling_ratio, aligned)
        return (None, grad_rois, None, None, None, None, None, None, *grad_maps)
