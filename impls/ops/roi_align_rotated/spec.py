"""Rotated roi_align's contract with the dispatcher and autograd: the schemas of its three operators
(``impls::roi_align_rotated_{forward,backward_input,backward_boxes}``) and their fake kernels, defined once here
(``core/operators.py``). Its autograd Function is roi_align's (``roi_align/spec.py``): the kernels take the same
arguments in the same places, ``clockwise`` where roi_align has ``aligned``, and its box gradient has the rois'
shape, [K, 6] here."""

from __future__ import annotations

import torch

from ...core import layout as _layout
from ...core import operators
from ..roi_align.spec import Function  # noqa: F401  (this operator's Function: see the module docstring)

NAME = "roi_align_rotated"
SCHEMAS = {
    "forward": (
        "(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
        "int sampling_ratio, bool clockwise) -> Tensor"
    ),
    "backward_input": (
        "(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
        "SymInt batch_size, SymInt channels, SymInt height, SymInt width, int sampling_ratio, bool clockwise) -> Tensor"
    ),
    "backward_boxes": (
        "(Tensor grad, Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
        "int sampling_ratio, bool clockwise) -> Tensor"
    ),
}


def fake_forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise):
    torch._check(input.dim() == 4, lambda: f"input must be [N, C, H, W], got {tuple(input.shape)}")
    torch._check(rois.dim() == 2 and rois.shape[1] == 6, lambda: f"rois must be [K, 6], got {tuple(rois.shape)}")
    out = input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))
    return out.contiguous(memory_format=_layout.memory_format(input))


def fake_backward_input(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width,
                        sampling_ratio, clockwise):
    operators.check_grad(grad, rois.shape[0], channels, pooled_height, pooled_width)
    return operators.input_grad_like(grad, batch_size, channels, height, width)


def fake_backward_boxes(grad, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise):
    operators.check_grad(grad, rois.shape[0], input.shape[1], pooled_height, pooled_width)
    return rois.new_empty(rois.shape)


operators.define(NAME, SCHEMAS, {
    "forward": fake_forward,
    "backward_input": fake_backward_input,
    "backward_boxes": fake_backward_boxes,
})
