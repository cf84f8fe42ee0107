"""roi_align_rotated's ``vectorized`` and ``compiled`` kernels with the adaptive sampling grid
(``sampling_ratio <= 0``) as custom operators, so that ``torch.compile(fullgraph=True)`` of a model that calls them
builds one graph, as ``impls/backends/_adaptive_ops.py`` does for roi_align.

The adaptive grid has ``ceil(box side / bins)`` samples per bin, read from each box's values: the kernels' chunk
plan (``vectorized._plan``) is Python control flow on tensor values, which Dynamo cannot trace. While tracing, the
kernels therefore call these three operators: the graph holds one opaque call per pass, which at run time executes
the same eager kernel with the same steps (``steps`` names them: ``"vectorized"``, or ``"compiled"``). Eager calls
never come here. Reading the boxes is a device-to-host copy, so the operators carry the ``cudagraph_unsafe`` tag.
"""

from __future__ import annotations

import torch

from . import spec, vectorized

# Each operator reads box values on the host (module docstring).
_READS_HOST = (torch.Tag.cudagraph_unsafe,)


@torch.library.custom_op("impls::adaptive_roi_align_rotated_forward", mutates_args=(), tags=_READS_HOST)
def forward(input: torch.Tensor, rois: torch.Tensor, spatial_scale: float, pooled_height: int, pooled_width: int,
            sampling_ratio: int, clockwise: bool, steps: str) -> torch.Tensor:
    return vectorized.forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise,
                              steps=vectorized.STEPS[steps])


@torch.library.custom_op("impls::adaptive_roi_align_rotated_backward_input", mutates_args=(), tags=_READS_HOST)
def backward_input(grad: torch.Tensor, rois: torch.Tensor, spatial_scale: float, pooled_height: int,
                   pooled_width: int, batch_size: int, channels: int, height: int, width: int, sampling_ratio: int,
                   clockwise: bool, steps: str) -> torch.Tensor:
    return vectorized.backward_input(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels,
                                     height, width, sampling_ratio, clockwise, steps=vectorized.STEPS[steps])


@torch.library.custom_op("impls::adaptive_roi_align_rotated_backward_boxes", mutates_args=(), tags=_READS_HOST)
def backward_boxes(grad: torch.Tensor, input: torch.Tensor, rois: torch.Tensor, spatial_scale: float,
                   pooled_height: int, pooled_width: int, sampling_ratio: int, clockwise: bool,
                   steps: str) -> torch.Tensor:
    return vectorized.backward_boxes(grad, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio,
                                     clockwise, steps=vectorized.STEPS[steps])


# The fakes are the operator's own (spec.py), less the last argument, ``steps``.
forward.register_fake(lambda *args: spec.fake_forward(*args[:-1]))
backward_input.register_fake(lambda *args: spec.fake_backward_input(*args[:-1]))
backward_boxes.register_fake(lambda *args: spec.fake_backward_boxes(*args[:-1]))
