"""``openvino``: OpenVINO's ``ROIAlign`` (opset 9) in a model compiled for its CPU plugin, as a model exported with
roi_align runs once deployed with OpenVINO. roi_align forward only (an inference runtime: no gradient); float32.
Its ``aligned_mode="half_pixel_for_nn"`` is our ``aligned=True`` and ``"asymmetric"`` our ``aligned=False``; its
``"half_pixel"`` is neither (CONVENTIONS.md §8.2).

A compiled model and its infer request are made once per set of attributes (``infer_request``) and kept; each call
copies the tensors to contiguous numpy arrays and the output back, which the benchmark's native row leaves out of
its timer (bench/calls.py).
"""

from __future__ import annotations

import functools

import torch

from ...core.registry import Backend, OpKernels, register
from ._installed import missing
from .onnxruntime import feeds

# aligned -> OpenVINO's aligned_mode (the ROIAlign-9 specification's names).
ALIGNED_MODE = {True: "half_pixel_for_nn", False: "asymmetric"}


def compiled_model(spatial_scale: float, pooled_height: int, pooled_width: int, sampling_ratio: int,
                   aligned_mode: str):
    """A one-node float32 model ``ROIAlign(x, rois, batch_indices)`` compiled for the CPU, with the inputs of
    ``onnxruntime.feeds``; ``aligned_mode`` is OpenVINO's own (``ALIGNED_MODE``)."""
    import numpy as np
    import openvino
    import openvino.opset9 as ops

    x = ops.parameter([-1, -1, -1, -1], np.float32, name="x")
    rois = ops.parameter([-1, 4], np.float32, name="rois")
    batch_indices = ops.parameter([-1], np.int64, name="batch_indices")
    node = ops.roi_align(x, rois, batch_indices, pooled_height, pooled_width, max(sampling_ratio, 0), spatial_scale,
                         "avg", aligned_mode)
    model = openvino.Model([node], [x, rois, batch_indices], "roi_align")
    return openvino.Core().compile_model(model, "CPU")


@functools.lru_cache(maxsize=16)
def infer_request(spatial_scale: float, pooled_height: int, pooled_width: int, sampling_ratio: int, aligned: bool):
    """An infer request of ``compiled_model`` for our ``aligned``, made once per arguments."""
    model = compiled_model(spatial_scale, pooled_height, pooled_width, sampling_ratio, ALIGNED_MODE[aligned])
    return model.create_infer_request()


def _openvino_forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    request = infer_request(spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)
    result = request.infer(feeds(input, rois))
    return torch.from_numpy(result[0])


register(
    Backend(
        name="openvino",
        peer=True,
        summary="peer: OpenVINO's own operators compiled for its CPU plugin (forward only, float32)",
        devices=("cpu",),
        dtypes=(torch.float32,),
        kernels={"roi_align": OpKernels(_openvino_forward)},
        unavailable_reason=missing("openvino", "test"),
    )
)
