"""``openvino`` for roi_align_rotated: OpenVINO's ``ROIAlignRotated`` (opset 15) in a model compiled for its CPU
plugin, as a detector exported with rotated boxes runs once deployed with OpenVINO. Forward only (an inference
runtime: no gradient); float32 (a float64 model is computed in float32 by the CPU plugin: no more exact).

Its semantics are ours (CONVENTIONS.md §3b): the centre moved by -0.5 map pixel after scaling, the size never
clamped, ``clockwise_mode=False`` counter-clockwise as our ``clockwise=False``, its adaptive grid (``sampling_ratio
= 0``) ``ceil(side / pooled)`` per box, a zero-size box 0 (not NaN), and roi_align's border (clamp within one pixel,
0 beyond). Only its inputs differ: ``rois [K, 5]`` ``(cx, cy, w, h, angle)`` with the angle in **radians**, the
batch indices apart as integers, and ``sampling_ratio`` non-negative (a negative one fails in its kernel; ours means
adaptive, passed as 0). It computes positions and ``cos``/``sin`` in float32, where our kernels use float64: a few
1e-6 px on a small map (tests/ops/roi_align_rotated/test_rotated_peers.py).

A compiled model and its infer request are made once per set of attributes (``infer_request``) and kept; ``feeds``
converts our ``rois`` to its inputs. A benchmark makes both before its timer and times
``request.infer(feeds, share_inputs=True, share_outputs=True)`` only, as it does for the roi_align peer.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ...core.layout import like

# degrees -> radians, in float64 before the one rounding to float32.
_RADIANS_PER_DEGREE = math.pi / 180.0


def compiled_model(spatial_scale: float, pooled_height: int, pooled_width: int, sampling_ratio: int,
                   clockwise_mode: bool):
    """A one-node float32 model ``ROIAlignRotated(x, rois, batch_indices)`` compiled for the CPU, inputs ``x``
    [N, C, H, W], ``rois`` [K, 5] ``(cx, cy, w, h, angle_radians)`` and int64 ``batch_indices`` [K] (``feeds``);
    ``sampling_ratio`` is OpenVINO's own (0 adaptive, never negative)."""
    import openvino
    import openvino.opset15 as ops

    x = ops.parameter([-1, -1, -1, -1], np.float32, name="x")
    rois = ops.parameter([-1, 5], np.float32, name="rois")
    batch_indices = ops.parameter([-1], np.int64, name="batch_indices")
    node = ops.roi_align_rotated(x, rois, batch_indices, pooled_height, pooled_width, sampling_ratio, spatial_scale,
                                 clockwise_mode)
    model = openvino.Model([node], [x, rois, batch_indices], "roi_align_rotated")
    return openvino.Core().compile_model(model, "CPU")


@functools.lru_cache(maxsize=16)
def infer_request(spatial_scale: float, pooled_height: int, pooled_width: int, sampling_ratio: int, clockwise: bool):
    """An infer request of ``compiled_model`` for our arguments (``sampling_ratio <= 0``, our adaptive grid, is
    OpenVINO's 0), made once per arguments."""
    model = compiled_model(spatial_scale, pooled_height, pooled_width, max(sampling_ratio, 0), clockwise)
    return model.create_infer_request()


def feeds(input: torch.Tensor, rois: torch.Tensor) -> dict[str, np.ndarray]:
    """The model's inputs from our ``input`` [N, C, H, W] and ``rois`` [K, 6] ``(batch, cx, cy, w, h, degrees)``:
    contiguous float32 arrays, the angle in radians, the batch column truncated to int64 (as C++ converts it)."""
    rois = rois.detach()
    boxes = torch.cat([rois[:, 1:5], (rois[:, 5:].double() * _RADIANS_PER_DEGREE).to(rois.dtype)], 1)  # [K, 5]
    return {
        "x": input.detach().contiguous().numpy(),
        "rois": boxes.contiguous().numpy(),
        "batch_indices": rois[:, 0].to(torch.int64).numpy(),
    }


def check_supported(input: torch.Tensor) -> None:
    """Raises for what this peer does not take: another dtype than float32 (the record's), a tensor off the CPU."""
    if input.dtype != torch.float32 or input.device.type != "cpu":
        raise ValueError(f"backend 'openvino' computes roi_align_rotated on CPU float32 tensors only, got input of "
                         f"dtype {input.dtype} on {input.device}")


def forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise):
    """``input (Tensor[N, C, H, W])`` float32, ``rois (Tensor[K, 6])`` -> ``Tensor[K, C, PH, PW]`` in the input's
    memory format, from OpenVINO's ROIAlignRotated-15."""
    check_supported(input)
    request = infer_request(spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise)
    result = request.infer(feeds(input, rois))
    return like(torch.from_numpy(result[0]), input)
