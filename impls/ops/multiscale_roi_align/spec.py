"""Multi-level roi_align's contract with the dispatcher and autograd: the schemas of its three operators
(``impls::multiscale_roi_align_{forward,backward_input,backward_boxes}``: box k pooled from ``features[levels[k]]``
at ``scales[levels[k]]``, the input gradient one tensor per map) and their fake kernels, defined once here
(``core/operators.py``), and the autograd Function for backends with a multi-level kernel (``cpp``, ``cuda``,
``triton``; the others pool level by level through roi_align's)."""


from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from ...core import layout as _layout
from ...core import operators

NAME = "multiscale_roi_align"
# One operator per pass, as torchvision (its _roi_align_backward): the input gradient takes the input's sizes, not
# its values; only the box gradient reads the feature map.
SCHEMAS = {
    "forward": (
        "(Tensor[] features, Tensor rois, Tensor levels, float[] scales, SymInt pooled_height, SymInt "
        "pooled_width, int sampling_ratio, bool aligned) -> Tensor"
    ),
    "backward_input": (
        "(Tensor grad, Tensor rois, Tensor levels, float[] scales, SymInt pooled_height, SymInt pooled_width, "
        "SymInt batch_size, SymInt channels, int[] heights, int[] widths, int sampling_ratio, bool aligned) "
        "-> Tensor[]"
    ),
    "backward_boxes": (
        "(Tensor grad, Tensor[] features, Tensor rois, Tensor levels, float[] scales, SymInt pooled_height, "
        "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor"
    ),
}


def fake_forward(features, rois, levels, scales, pooled_height, pooled_width, sampling_ratio,
                                 aligned):
    torch._check(rois.dim() == 2 and rois.shape[1] == 5, lambda: f"rois must be [K, 5], got {tuple(rois.shape)}")
    torch._check(levels.shape == (rois.shape[0],), lambda: "levels must be [K]")
    first = features[0]
    out = first.new_empty((rois.shape[0], first.shape[1], pooled_height, pooled_width))
    return out.contiguous(memory_format=_layout.memory_format(first))


def fake_backward_input(grad, rois, levels, scales, pooled_height, pooled_width, batch_size,
                            channels, heights, widths, sampling_ratio, aligned):
    operators.check_grad(grad, rois.shape[0], channels, pooled_height, pooled_width)
    return [operators.input_grad_like(grad, batch_size, channels, h, w) for h, w in zip(heights, widths)]


def fake_backward_boxes(grad, features, rois, levels, scales, pooled_height, pooled_width,
                                        sampling_ratio, aligned):
    operators.check_grad(grad, rois.shape[0], features[0].shape[1], pooled_height, pooled_width)
    return rois.new_empty(rois.shape)


operators.define(NAME, SCHEMAS, {
    "forward": fake_forward,
    "backward_input": fake_backward_input,
    "backward_boxes": fake_backward_boxes,
})


class Function(torch.autograd.Function):
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
