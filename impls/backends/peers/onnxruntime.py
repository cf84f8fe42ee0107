"""``onnxruntime``: ONNX's ``RoiAlign`` (opset 16) run by an onnxruntime ``InferenceSession`` on the CPU, as a model
exported with roi_align runs once deployed. roi_align forward only (an inference runtime: no gradient); float32 and
float64; ``coordinate_transformation_mode="half_pixel"`` is ``aligned=True`` and ``"output_half_pixel"`` is
``aligned=False`` (CONVENTIONS.md §8.1).

A session is built once per set of attributes (``session``: a one-node model serialized in memory) and kept; each
call copies the tensors to contiguous numpy arrays and the output back, which the benchmark's native row leaves
out of its timer (bench/calls.py).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ...core.registry import Backend, OpKernels, register
from ._installed import missing

OPSET = 16  # the first opset whose RoiAlign has coordinate_transformation_mode (half_pixel = aligned=True)
_ELEMENT_TYPE = {torch.float32: "FLOAT", torch.float64: "DOUBLE"}


def model_bytes(dtype: torch.dtype, spatial_scale: float, pooled_height: int, pooled_width: int, sampling_ratio: int,
                aligned: bool) -> bytes:
    """A serialized one-node ONNX model: ``y = RoiAlign(x, rois, batch_indices)`` with our op's arguments, inputs
    ``x`` [N, C, H, W], ``rois`` [K, 4] (x1, y1, x2, y2) and int64 ``batch_indices`` [K]."""
    from onnx import TensorProto, helper

    element = getattr(TensorProto, _ELEMENT_TYPE[dtype])
    node = helper.make_node(
        "RoiAlign", ["x", "rois", "batch_indices"], ["y"],
        coordinate_transformation_mode="half_pixel" if aligned else "output_half_pixel", mode="avg",
        output_height=pooled_height, output_width=pooled_width,
        sampling_ratio=max(sampling_ratio, 0),  # ONNX's adaptive grid is 0; ours is any value <= 0
        spatial_scale=spatial_scale,
    )
    graph = helper.make_graph(
        [node], "roi_align",
        [helper.make_tensor_value_info("x", element, ["N", "C", "H", "W"]),
         helper.make_tensor_value_info("rois", element, ["K", 4]),
         helper.make_tensor_value_info("batch_indices", TensorProto.INT64, ["K"])],
        [helper.make_tensor_value_info("y", element, ["K", "C", pooled_height, pooled_width])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]).SerializeToString()


@functools.lru_cache(maxsize=16)
def session(dtype: torch.dtype, spatial_scale: float, pooled_height: int, pooled_width: int, sampling_ratio: int,
            aligned: bool):
    """The ``InferenceSession`` (CPU, default options) of ``model_bytes(...)``, built once per arguments."""
    import onnxruntime

    model = model_bytes(dtype, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)
    return onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])


def feeds(input: torch.Tensor, rois: torch.Tensor) -> dict[str, np.ndarray]:
    """The session's inputs from our ``input`` [N, C, H, W] and ``rois`` [K, 5] (batch, x1, y1, x2, y2)."""
    return {
        "x": input.detach().contiguous().numpy(),
        "rois": rois.detach()[:, 1:].contiguous().numpy(),
        "batch_indices": rois.detach()[:, 0].to(torch.int64).numpy(),
    }


def _onnxruntime_forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    run = session(input.dtype, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)
    return torch.from_numpy(run.run(None, feeds(input, rois))[0])


register(
    Backend(
        name="onnxruntime",
        peer=True,
        summary="peer: onnxruntime's RoiAlign-16 in an InferenceSession (CPU, forward only)",
        devices=("cpu",),
        dtypes=(torch.float32, torch.float64),
        kernels={"roi_align": OpKernels(_onnxruntime_forward)},
        unavailable_reason=missing("onnxruntime", "test"),
    )
)
