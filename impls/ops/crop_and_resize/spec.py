"""crop_and_resize's contract with the dispatcher and autograd: the schemas of its three operators
(``impls::crop_and_resize_{forward,backward_input,backward_boxes}``) and their fake kernels, defined once here
(``core/operators.py``), and the one autograd Function that calls whichever backend's kernels the public op picked.

The Function saves the image for the backward only when the boxes need a gradient: the image gradient needs its
sizes, not its values."""


from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from ...core import layout as _layout
from ...core import operators

NAME = "crop_and_resize"
# One operator per pass, as torchvision (its _roi_align_backward): the input gradient takes the input's sizes, not
# its values; only the box gradient reads the feature map.
SCHEMAS = {
    "forward": (
        "(Tensor image, Tensor boxes, Tensor box_index, SymInt crop_height, SymInt crop_width, str method, "
        "float extrapolation_value) -> Tensor"
    ),
    "backward_input": (
        "(Tensor grad, Tensor boxes, Tensor box_index, SymInt crop_height, SymInt crop_width, SymInt "
        "batch_size, SymInt channels, SymInt height, SymInt width, str method) -> Tensor"
    ),
    "backward_boxes": (
        "(Tensor grad, Tensor image, Tensor boxes, Tensor box_index, SymInt crop_height, SymInt crop_width, "
        "str method) -> Tensor"
    ),
}


def fake_forward(image, boxes, box_index, crop_height, crop_width, method, extrapolation_value):
    torch._check(image.dim() == 4, lambda: f"image must be [N, C, H, W], got {tuple(image.shape)}")
    torch._check(boxes.dim() == 2 and boxes.shape[1] == 4, lambda: f"boxes must be [K, 4], got {tuple(boxes.shape)}")
    torch._check(box_index.shape == (boxes.shape[0],), lambda: "box_index must be [K]")
    out = image.new_empty((boxes.shape[0], image.shape[1], crop_height, crop_width))
    return out.contiguous(memory_format=_layout.memory_format(image))


def fake_backward_input(grad, boxes, box_index, crop_height, crop_width, batch_size, channels, height, width,
                        method):
    operators.check_grad(grad, boxes.shape[0], channels, crop_height, crop_width)
    return operators.input_grad_like(grad, batch_size, channels, height, width)


def fake_backward_boxes(grad, image, boxes, box_index, crop_height, crop_width, method):
    operators.check_grad(grad, boxes.shape[0], image.shape[1], crop_height, crop_width)
    return boxes.new_empty(boxes.shape)


operators.define(NAME, SCHEMAS, {
    "forward": fake_forward,
    "backward_input": fake_backward_input,
    "backward_boxes": fake_backward_boxes,
})


class Function(torch.autograd.Function):
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
