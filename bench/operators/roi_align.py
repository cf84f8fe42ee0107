"""roi_align's benchmark facts (``bench/operators/__init__.py``)."""

from __future__ import annotations

from typing import Callable

import torch
from workloads import Workload, roi_align_inputs


def inputs(workload: Workload) -> tuple:
    """The workload's rois [K, 5] (they carry their batch index: no box_index) and keyword arguments."""
    rois, kwargs = roi_align_inputs(workload)
    return rois, None, kwargs


def adaptive_sides(rois: torch.Tensor, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(box height, box width) [K] each, from rois scaled to the map. aligned=True (every workload): the sides are
    not clamped to 1 before the adaptive grid is chosen."""
    assert kwargs["aligned"], "the adaptive grid below assumes aligned=True"
    return rois[:, 4] - rois[:, 2], rois[:, 3] - rois[:, 1]


def openvino_model() -> tuple[Callable, Callable, str]:
    """ROIAlign-9: it takes onnxruntime's three inputs, by the same names."""
    from impls.backends.peers import onnxruntime, openvino

    return openvino.infer_request, onnxruntime.feeds, "aligned"
