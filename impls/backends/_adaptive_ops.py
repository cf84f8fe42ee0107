"""``vectorized`` and ``compiled`` roi_align with the adaptive sampling grid (``sampling_ratio <= 0``) as custom
operators, so that ``torch.compile(fullgraph=True)`` of a model that calls them builds one graph.

The adaptive grid has ``ceil(roi side / bins)`` samples per bin, read from each box's values: ``vectorized``
groups the boxes by grid and runs one chunk loop per group (``_chunked._roi_chunks``), Python control flow on
tensor values that Dynamo cannot trace. While ``torch.compile`` traces, ``vectorized`` therefore calls these three
operators instead: the graph holds one opaque call per pass, which at run time executes the same eager code with
the same steps (``steps`` names them: ``"vectorized"``, or ``"compiled"`` for the compiled ones). Eager calls never
come here. Reading the boxes is a device-to-host copy, so the operators carry the ``cudagraph_unsafe`` tag:
``mode="reduce-overhead"`` keeps them out of its CUDA graphs.
"""

from __future__ import annotations

import torch

from ..ops.roi_align import spec as _roi_spec
from . import _chunked

# Each operator reads box values on the host (module docstring).
_READS_HOST = (torch.Tag.cudagraph_unsafe,)


@torch.library.custom_op("impls::adaptive_roi_align_forward", mutates_args=(), tags=_READS_HOST)
def forward(input: torch.Tensor, rois: torch.Tensor, spatial_scale: float, pooled_height: int, pooled_width: int,
            sampling_ratio: int, aligned: bool, steps: str) -> torch.Tensor:
    return _chunked.roi_align_forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio,
                                      aligned, steps=_chunked.STEPS[steps])


@torch.library.custom_op("impls::adaptive_roi_align_backward_input", mutates_args=(), tags=_READS_HOST)
def backward_input(grad: torch.Tensor, rois: torch.Tensor, spatial_scale: float, pooled_height: int,
                   pooled_width: int, batch_size: int, channels: int, height: int, width: int, sampling_ratio: int,
                   aligned: bool, steps: str) -> torch.Tensor:
    return _chunked.roi_align_backward_input(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size,
                                             channels, height, width, sampling_ratio, aligned,
                                             steps=_chunked.STEPS[steps])


@torch.library.custom_op("impls::adaptive_roi_align_backward_boxes", mutates_args=(), tags=_READS_HOST)
def backward_boxes(grad: torch.Tensor, input: torch.Tensor, rois: torch.Tensor, spatial_scale: float,
                   pooled_height: int, pooled_width: int, sampling_ratio: int, aligned: bool,
                   steps: str) -> torch.Tensor:
    return _chunked.roi_align_backward_boxes(grad, input, rois, spatial_scale, pooled_height, pooled_width,
                                             sampling_ratio, aligned, steps=_chunked.STEPS[steps])


# The fakes are roi_align's (impls/ops/roi_align/spec.py), less the last argument, ``steps``.
forward.register_fake(lambda *args: _roi_spec.fake_forward(*args[:-1]))
backward_input.register_fake(lambda *args: _roi_spec.fake_backward_input(*args[:-1]))
backward_boxes.register_fake(lambda *args: _roi_spec.fake_backward_boxes(*args[:-1]))
