"""crop_and_resize in standard ONNX ops (ONNX has no such operator): the sample positions, the range test,
``Floor``/``Ceil`` (or round half away from zero) and ``Gather`` from the image, in the kernels' own float order
(``csrc/common/bilinear.h``; CONVENTIONS.md §7)."""


from __future__ import annotations

from onnxscript import ir
from onnxscript import opset18 as op

from ...core.onnx_export import in_opmath


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
    return in_opmath(crop, image, boxes)


def checked_boxes(boxes, stats, batch_size: int):
    """``impls::checked_boxes``, likewise unchecked."""
    return op.Identity(boxes)


TRANSLATIONS = {
    "crop_and_resize_forward": crop_and_resize,
    "triton_crop_and_resize_forward": crop_and_resize,
    "checked_boxes": checked_boxes,
}
