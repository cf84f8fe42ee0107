"""roi_align as one standard ONNX ``RoiAlign`` (opset 16+), ``mode="avg"``, ``coordinate_transformation_mode``
``half_pixel`` for ``aligned=True`` and ``output_half_pixel`` for ``False``, adaptive sampling (``<= 0``) as 0, the
boxes' batch column as int64 ``batch_indices`` (CONVENTIONS.md §7)."""


from __future__ import annotations

from onnxscript import ir
from onnxscript import opset18 as op

from ...core.onnx_export import in_opmath


def roi_align(input, rois, spatial_scale: float, pooled_height: int, pooled_width: int, sampling_ratio: int,
              aligned: bool):
    """``impls::roi_align_forward`` (and its ``triton_`` twin, same schema) as one ONNX ``RoiAlign``."""

    def pool(x, r):
        batch_indices = op.Cast(op.Squeeze(op.Slice(r, [0], [1], [1]), [1]), to=ir.DataType.INT64)  # [K]
        boxes = op.Slice(r, [1], [5], [1])  # [K, 4] (x1, y1, x2, y2)
        return op.RoiAlign(
            x, boxes, batch_indices,
            coordinate_transformation_mode="half_pixel" if aligned else "output_half_pixel",
            mode="avg",
            output_height=pooled_height,
            output_width=pooled_width,
            sampling_ratio=max(sampling_ratio, 0),
            spatial_scale=spatial_scale,
        )

    return in_opmath(pool, input, rois)


def adaptive_roi_align(input, rois, spatial_scale: float, pooled_height: int, pooled_width: int,
                       sampling_ratio: int, aligned: bool, steps: str):
    """``impls::adaptive_roi_align_forward`` (``vectorized``/``compiled``, adaptive grid): the same ``RoiAlign``."""
    return roi_align(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)


def checked_rois(rois, stats, batch_size: int, spatial_scale: float):
    """The compiled-graph value check (``impls::checked_rois``): ONNX cannot raise, so the boxes pass unchecked."""
    return op.Identity(rois)


TRANSLATIONS = {
    "roi_align_forward": roi_align,
    "triton_roi_align_forward": roi_align,
    "adaptive_roi_align_forward": adaptive_roi_align,
    "checked_rois": checked_rois,
}
