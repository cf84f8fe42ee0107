"""roi_align's contract with the dispatcher and autograd: the schemas of its three operators
(``impls::roi_align_{forward,backward_input,backward_boxes}``) and their fake kernels, defined once here
(``core/operators.py``), and the one autograd Function that calls whichever backend's kernels the public op picked.

The Function saves the feature map for the backward only when the boxes need a gradient: the input gradient needs
its sizes, not its values."""


from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from ...core import layout as _layout
from ...core import operators

NAME = "roi_align"
# One operator per pass, as torchvision (its _roi_align_backward): the input gradient takes the input's sizes, not
# its values; only the box gradient reads the feature map.
SCHEMAS = {
    "forward": (
        "(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, int "
        "sampling_ratio, bool aligned) -> Tensor"
    ),
    "backward_input": (
        "(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, SymInt "
        "batch_size, SymInt channels, SymInt height, SymInt width, int sampling_ratio, bool aligned) -> "
        "Tensor"
    ),
    "backward_boxes": (
        "(Tensor grad, Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt "
        "pooled_width, int sampling_ratio, bool aligned) -> Tensor"
    ),
}


def fake_forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    torch._check(input.dim() == 4, lambda: f"input must be [N, C, H, W], got {tuple(input.shape)}")
    torch._check(rois.dim() == 2 and rois.shape[1] == 5, lambda: f"rois must be [K, 5], got {tuple(rois.shape)}")
    out = input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))
    return out.contiguous(memory_format=_layout.memory_format(input))


def fake_backward_input(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height,
                       width, sampling_ratio, aligned):
    operators.check_grad(grad, rois.shape[0], channels, pooled_height, pooled_width)
    return operators.input_grad_like(grad, batch_size, channels, height, width)


def fake_backward_boxes(grad, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    operators.check_grad(grad, rois.shape[0], input.shape[1], pooled_height, pooled_width)
    return rois.new_empty(rois.shape)


operators.define(NAME, SCHEMAS, {
    "forward": fake_forward,
    "backward_input": fake_backward_input,
    "backward_boxes": fake_backward_boxes,
})


class Function(torch.autograd.Function):
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
