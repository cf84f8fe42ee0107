"""``torchvision``: ``torchvision.ops.roi_align``'s own C++/CUDA kernels, forward and backward called directly (no
autograd of theirs). roi_align only; no gradient to the boxes; no bfloat16."""

from __future__ import annotations

import torch

from ...core.registry import Backend, OpKernels, register
from ._installed import missing


def _torchvision_forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    return torch.ops.torchvision.roi_align(
        input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned
    )


def _torchvision_backward_input(
    grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width, sampling_ratio,
    aligned,
):
    return torch.ops.torchvision._roi_align_backward(
        grad.contiguous(), rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width,
        sampling_ratio, aligned,
    )


# NB: torchvision is imported here, eagerly, so that it is always loaded before tensorflow: loaded after
# tensorflow in the same process, its roi_align kernel crashes the interpreter (SIGSEGV; seen with
# tensorflow-cpu 2.21 and torchvision 0.29.1).
_torchvision_reason = missing("torchvision", "torchvision")
if _torchvision_reason() is None:
    import torchvision  # noqa: F401  (registers torch.ops.torchvision.*)


register(
    Backend(
        name="torchvision",
        peer=True,
        summary="peer: torchvision.ops.roi_align's own C++/CUDA kernels (no box gradient)",
        devices=("cpu", "cuda"),
        dtypes=(torch.float16, torch.float32, torch.float64),
        kernels={"roi_align": OpKernels(_torchvision_forward, _torchvision_backward_input)},
        unavailable_reason=_torchvision_reason,
    )
)
