"""ONNX export: the translations of our operators for ``torch.onnx.export(..., dynamo=True)``.

A model that calls ``impls.roi_align`` or ``impls.crop_and_resize`` exports (``torch.export``) to one opaque operator
per call (``impls::roi_align_forward`` for ``cpp``/``cuda``, ``impls::triton_roi_align_forward`` for ``triton``,
``impls::adaptive_roi_align_forward`` for ``vectorized``/``compiled`` with adaptive sampling; crop_and_resize
alike), behind the value check ``impls::checked_rois`` / ``impls::checked_boxes`` (``impls/_validation.py``).
:func:`onnx_translation_table` maps each of them to standard-domain ONNX (``CONVENTIONS.md §7``):

* roi_align -> one ``RoiAlign`` (opset 16+), ``mode="avg"``, ``coordinate_transformation_mode`` ``half_pixel``
  for ``aligned=True`` and ``output_half_pixel`` for ``False``, adaptive sampling (``<= 0``) as 0, the boxes'
  batch column as int64 ``batch_indices``;
* crop_and_resize -> the sample positions, the range test, ``Floor``/``Ceil`` (or round half away from zero) and
  ``Gather`` from the image, in the kernels' own float order (``csrc/common/bilinear.h``), since ONNX has no such op;
* the value checks -> ``Identity``: ONNX cannot raise, so the exported model does not check that box indices are
  in range or boxes finite (an out-of-range index is whatever the runtime's ``RoiAlign``/``Gather`` does).

float16 and bfloat16 are computed in float32 and rounded once, as our kernels do (``at::opmath_type``).
* multi-level roi_align (the ``cpp``/``cuda`` operator and its ``triton_`` twin) -> one ``RoiAlign`` per level over
  every box and a ``Where`` on each box's level, which the exported graph takes as an input computed by standard
  ops (torchvision's level rule).
"""

from __future__ import annotations

from typing import Callable

import torch
from onnxscript import ir
from onnxscript import opset18 as op

_HALF_TYPES = (ir.DataType.FLOAT16, ir.DataType.BFLOAT16)


def _in_opmath(fn: Callable, x, *rest):
    """``fn(x, *rest)`` computed in float32 when ``x`` is float16/bfloat16 (one rounding at the end), else in x's
    type; ``rest`` are the float tensors that share x's type."""
    if x.dtype not in _HALF_TYPES:
        return fn(x, *rest)
    to_float = [op.Cast(t, to=ir.DataType.FLOAT) for t in (x, *rest)]
    return op.Cast(fn(*to_float), to=x.dtype)


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

    return _in_opmath(pool, input, rois)


def adaptive_roi_align(input, rois, spatial_scale: float, pooled_height: int, pooled_width: int,
                       sampling_ratio: int, aligned: bool, steps: str):
    """``impls::adaptive_roi_align_forward`` (``vectorized``/``compiled``, adaptive grid): the same ``RoiAlign``."""
    return roi_align(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)


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


def _crop_positions(lo, hi, crop: int, size_minus_1):
    """``CONVENTIONS.md §1.2`` for one axis: lo, hi [K, 1] -> positions [K, crop], as ``csrc/common/bilinear.h`` orders
    the float operations."""
    if crop > 1:
        scale = op.Div(op.Mul(op.Sub(hi, lo), size_minus_1), op.CastLike(float(crop - 1), lo))  # [K, 1]
        steps = op.CastLike(op.Constant(value_floats=[float(i) for i in range(crop)]), lo)  # [crop]
        return op.Add(op.Mul(lo, size_minus_1), op.Mul(steps, scale))
    return op.Mul(op.Mul(op.CastLike(0.5, lo), op.Add(lo, hi)), size_minus_1)  # [K, 1]: the box centre


def _crop_taps(v, valid, method: str):
    """In-range positions [K, n] -> (low, high) int64 pixel indices and the weight of high; out-of-range ones read
    pixel 0 (their value is replaced by the extrapolation value)."""
    v = op.Where(valid, v, op.CastLike(0.0, v))
    low = op.Floor(v)
    if method == "nearest":  # round half away from zero (v >= 0 here)
        nearest = op.Where(op.GreaterOrEqual(op.Sub(v, low), op.CastLike(0.5, v)), op.Add(low, op.CastLike(1.0, v)),
                           low)
        index = op.Cast(nearest, to=ir.DataType.INT64)
        return index, index, None
    return op.Cast(low, to=ir.DataType.INT64), op.Cast(op.Ceil(v), to=ir.DataType.INT64), op.Sub(v, low)


def crop_and_resize(image, boxes, box_index, crop_height: int, crop_width: int, method: str,
                    extrapolation_value: float):
    """``impls::crop_and_resize_forward`` (and its ``triton_`` twin) in standard ops (``CONVENTIONS.md §1``)."""

    def crop(img, bxs):
        shape = op.Shape(img)
        height, width = op.Slice(shape, [2], [3], [0]), op.Slice(shape, [3], [4], [0])  # int64 [1]
        h1 = op.CastLike(op.Sub(height, 1), bxs)
        w1 = op.CastLike(op.Sub(width, 1), bxs)
        y1, x1, y2, x2 = (op.Slice(bxs, [j], [j + 1], [1]) for j in range(4))  # [K, 1] each
        in_y = _crop_positions(y1, y2, crop_height, h1)  # [K, CH] or [K, 1]
        in_x = _crop_positions(x1, x2, crop_width, w1)
        zero = op.CastLike(0.0, bxs)
        valid_y = op.And(op.GreaterOrEqual(in_y, zero), op.LessOrEqual(in_y, h1))  # false for NaN
        valid_x = op.And(op.GreaterOrEqual(in_x, zero), op.LessOrEqual(in_x, w1))
        top, bottom, y_lerp = _crop_taps(in_y, valid_y, method)
        left, right, x_lerp = _crop_taps(in_x, valid_x, method)
        # The image as rows of C values, pixel (n, y, x) at (n*H + y)*W + x: one Gather reads [K, CH, CW, C].
        pixels = op.Reshape(op.Transpose(img, perm=[0, 2, 3, 1]), op.Concat(op.Constant(value_ints=[-1]),
                                                                            op.Slice(shape, [1], [2], [0]), axis=0))
        image_row = op.Mul(op.Unsqueeze(box_index, [1, 2]), height)  # [K, 1, 1]

        def read(y, x):
            index = op.Add(op.Mul(op.Add(image_row, op.Unsqueeze(y, [2])), width), op.Unsqueeze(x, [1]))
            return op.Gather(pixels, index, axis=0)  # [K, CH, CW, C]

        if method == "nearest":
            out = read(top, left)
        else:
            xl = op.Unsqueeze(x_lerp, [1, 3])  # [K, 1, CW, 1]
            yl = op.Unsqueeze(y_lerp, [2, 3])  # [K, CH, 1, 1]
            tl, tr, bl, br = read(top, left), read(top, right), read(bottom, left), read(bottom, right)
            t = op.Add(tl, op.Mul(op.Sub(tr, tl), xl))
            b = op.Add(bl, op.Mul(op.Sub(br, bl), xl))
            out = op.Add(t, op.Mul(op.Sub(b, t), yl))
        valid = op.And(op.Unsqueeze(valid_y, [2, 3]), op.Unsqueeze(valid_x, [1, 3]))  # [K, CH, CW, 1]
        out = op.Where(valid, out, op.CastLike(extrapolation_value, out))
        return op.Transpose(out, perm=[0, 3, 1, 2])  # [K, C, CH, CW]

    box_index = op.Cast(box_index, to=ir.DataType.INT64)
    return _in_opmath(crop, image, boxes)


def checked_rois(rois, stats, batch_size: int, spatial_scale: float):
    """The compiled-graph value check (``impls::checked_rois``): ONNX cannot raise, so the boxes pass unchecked."""
    return op.Identity(rois)


def checked_boxes(boxes, stats, batch_size: int):
    """``impls::checked_boxes``, likewise unchecked."""
    return op.Identity(boxes)


_TRANSLATIONS = {
    "roi_align_forward": roi_align,
    "triton_roi_align_forward": roi_align,
    "adaptive_roi_align_forward": adaptive_roi_align,
    "crop_and_resize_forward": crop_and_resize,
    "triton_crop_and_resize_forward": crop_and_resize,
    "checked_rois": checked_rois,
    "checked_boxes": checked_boxes,
    "multiscale_roi_align_forward": multiscale_roi_align,
    "triton_multiscale_roi_align_forward": multiscale_roi_align,
}


def onnx_translation_table() -> dict:
    """``{operator overload: onnxscript translation}`` for ``torch.onnx.export(model, args, dynamo=True,
    custom_translation_table=impls.onnx_translation_table())``; only the operators registered in this process
    (the extension's when it is built, the Triton ones when ``triton`` is)."""
    return {
        getattr(torch.ops.impls, name).default: fn
        for name, fn in _TRANSLATIONS.items()
        if hasattr(torch.ops.impls, name)
    }
