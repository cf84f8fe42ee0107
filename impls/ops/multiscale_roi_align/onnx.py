"""Multi-level roi_align (the ``cpp``/``cuda`` operator and its ``triton_`` twin) as one ``RoiAlign`` per level over
every box and a ``Where`` on each box's level, which the exported graph takes as an input computed by standard ops
(torchvision's level rule; CONVENTIONS.md §7)."""


from __future__ import annotations

from onnxscript import opset18 as op

from ..roi_align.onnx import roi_align


def multiscale_roi_align(features, rois, levels, scales, pooled_height: int, pooled_width: int, sampling_ratio: int,
                         aligned: bool):
    """``impls::multiscale_roi_align_forward`` (``cpp``, ``cuda``; its ``triton_`` twin has the same schema): one
    ``RoiAlign`` per level over every box, each box's row taken from its own level's with ``Where``. The other
    levels' rows are computed and dropped (L times the work of one level), which ONNX's fixed-shape ops make the
    simple exact form."""
    on_level = op.Unsqueeze(levels, [1, 2, 3])  # [K, 1, 1, 1]
    out = None
    for level, (feature, scale) in enumerate(zip(features, scales)):
        pooled = roi_align(feature, rois, scale, pooled_height, pooled_width, sampling_ratio, aligned)
        out = pooled if out is None else op.Where(op.Equal(on_level, op.Constant(value_int=level)), pooled, out)
    return out


TRANSLATIONS = {
    "multiscale_roi_align_forward": multiscale_roi_align,
    "triton_multiscale_roi_align_forward": multiscale_roi_align,
}
