"""ONNX export of roi_align_rotated: ``impls::roi_align_rotated_forward`` in standard-domain ONNX ops, for
``torch.onnx.export(..., dynamo=True, custom_translation_table=...)`` (CONVENTIONS.md §7).

ONNX has no rotated RoiAlign (its ``RoiAlign`` takes axis-aligned boxes), so the translation writes the op out as
``impls/ops/crop_and_resize/onnx.py`` writes crop_and_resize: every sample's position (CONVENTIONS.md §3b.2),
roi_align's range test and clamp (§3.3), ``Gather`` of the four taps from the map, and the bin sum, in the order the
reference and the kernels evaluate them (``impls/ops/roi_align_rotated/reference.py``):

* the geometry (centre, size, ``cos``/``sin``, positions, tap fractions) in float64 for every dtype, as our kernels
  compute it (§3b.5), then the four weights rounded to the compute dtype (float32 for float16/bfloat16/float32);
* each sample ``w1*v1 + w2*v2 + w3*v3 + w4*v4`` left to right, the ``s*s`` samples of a bin added one by one in
  ``(iy, ix)`` order (the sum is unrolled: the graph has ``s*s`` ``Add`` per output, fixed at export), then divided
  by ``s*s``; a sample out of range adds 0.

Only a fixed ``sampling_ratio > 0`` exports. The adaptive grid gives each box ``ceil(side / pooled)`` samples per bin,
a number read from the box values: the bin sum would need a data-dependent grid shape. The translation raises for it,
naming the argument and the fix.
"""

from __future__ import annotations

import math

import numpy as np
from onnxscript import ir
from onnxscript import opset18 as op

_HALF_TYPES = (ir.DataType.FLOAT16, ir.DataType.BFLOAT16)


def _float64(value: float):
    """A float64 scalar constant: a Python float given to an op would be a float32 constant (``pi``, a
    ``spatial_scale`` of 0.1 would round)."""
    return op.Constant(value=ir.tensor(np.array(value, dtype=np.float64)))


def check_exportable(sampling_ratio: int) -> None:
    """Raises ``ValueError`` for what has no exact standard-ONNX form: the adaptive grid."""
    if sampling_ratio <= 0:
        raise ValueError(
            f"roi_align_rotated with sampling_ratio={sampling_ratio} (the adaptive grid, ceil(side / pooled) samples "
            f"per bin for each box) does not export to ONNX: the number of samples depends on the box values and "
            f"ONNX has no rotated RoiAlign. Pass a fixed sampling_ratio > 0 (detectron2's heads use 0; 2 is common)."
        )


def _axis_offsets(start, bin_size, pooled: int, grid: int):
    """``start + p*bin + (i + 0.5)*bin/grid`` for every ``(p, i)``, ``p`` major: [K, 1] -> [K, pooled*grid] (float64,
    the reference's order)."""
    # Small integers and halves: exact in the float32 constants.
    p = op.CastLike(op.Constant(value_floats=[float(t // grid) for t in range(pooled * grid)]), start)
    i = op.CastLike(op.Constant(value_floats=[t % grid + 0.5 for t in range(pooled * grid)]), start)
    return op.Add(op.Add(start, op.Mul(p, bin_size)), op.Div(op.Mul(i, bin_size), op.CastLike(float(grid), start)))


def _taps(v, valid, size, compute_type):
    """roi_align's clamp of one coordinate (§3.3): in-range positions [K, A, B] (float64) and the map side ``size``
    (float64 [1]) -> int64 ``low``, ``high`` and the weights ``(l, 1 - l)`` of high and low in ``compute_type``.
    Out-of-range positions read pixel 0 (their sample is replaced by 0)."""
    zero = op.CastLike(0.0, v)
    v = op.Where(valid, v, zero)
    v = op.Where(op.LessOrEqual(v, zero), zero, v)
    last = op.Sub(size, op.CastLike(1.0, v))
    low = op.Floor(v)
    at_end = op.GreaterOrEqual(low, last)
    high = op.Where(at_end, last, op.Add(low, op.CastLike(1.0, v)))
    low = op.Where(at_end, last, low)
    v = op.Where(at_end, last, v)
    frac = op.Sub(v, low)
    one_minus = op.Sub(op.CastLike(1.0, v), frac)
    return (op.Cast(low, to=ir.DataType.INT64), op.Cast(high, to=ir.DataType.INT64),
            op.Cast(frac, to=compute_type), op.Cast(one_minus, to=compute_type))


def roi_align_rotated(input, rois, spatial_scale: float, pooled_height: int, pooled_width: int, sampling_ratio: int,
                      clockwise: bool):
    """``impls::roi_align_rotated_forward`` (``input [N, C, H, W]``, ``rois [K, 6]`` ``(batch, cx, cy, w, h,
    degrees)``) in standard ops -> ``[K, C, PH, PW]`` in the input's type."""
    check_exportable(sampling_ratio)
    s = sampling_ratio
    out_type = input.dtype
    compute_type = ir.DataType.FLOAT if out_type in _HALF_TYPES else out_type
    x = op.Cast(input, to=compute_type) if out_type in _HALF_TYPES else input

    r = op.Cast(rois, to=ir.DataType.DOUBLE)  # [K, 6]: the geometry in float64 whatever the dtype (§3b.5)
    _, cx, cy, w, h, angle = (op.Slice(r, [j], [j + 1], [1]) for j in range(6))  # [K, 1] each
    scale = _float64(spatial_scale)
    half = op.CastLike(0.5, r)
    two = op.CastLike(2.0, r)
    cx = op.Sub(op.Mul(cx, scale), half)
    cy = op.Sub(op.Mul(cy, scale), half)
    w = op.Mul(w, scale)
    h = op.Mul(h, scale)
    theta = op.Div(op.Mul(angle, _float64(math.pi)), op.CastLike(180.0, r))
    if clockwise:
        theta = op.Neg(theta)
    cos = op.Unsqueeze(op.Cos(theta), [2])  # [K, 1, 1]
    sin = op.Unsqueeze(op.Sin(theta), [2])
    yy = _axis_offsets(op.Div(op.Neg(h), two), op.Div(h, op.CastLike(float(pooled_height), r)), pooled_height, s)
    xx = _axis_offsets(op.Div(op.Neg(w), two), op.Div(w, op.CastLike(float(pooled_width), r)), pooled_width, s)
    yy = op.Unsqueeze(yy, [2])  # [K, PH*s, 1]
    xx = op.Unsqueeze(xx, [1])  # [K, 1, PW*s]
    y = op.Add(op.Sub(op.Mul(yy, cos), op.Mul(xx, sin)), op.Unsqueeze(cy, [2]))  # [K, PH*s, PW*s]
    x_pos = op.Add(op.Add(op.Mul(yy, sin), op.Mul(xx, cos)), op.Unsqueeze(cx, [2]))

    shape = op.Shape(x)
    height, width = op.Slice(shape, [2], [3], [0]), op.Slice(shape, [3], [4], [0])  # int64 [1]
    height_f, width_f = op.CastLike(height, r), op.CastLike(width, r)
    minus_one = op.CastLike(-1.0, r)
    valid = op.And(op.And(op.GreaterOrEqual(y, minus_one), op.LessOrEqual(y, height_f)),
                   op.And(op.GreaterOrEqual(x_pos, minus_one), op.LessOrEqual(x_pos, width_f)))  # false for NaN
    y_low, y_high, ly, hy = _taps(y, valid, height_f, compute_type)
    x_low, x_high, lx, hx = _taps(x_pos, valid, width_f, compute_type)

    # The map as rows of C values, pixel (n, y, x) at (n*H + y)*W + x: one Gather reads [K, PH*s, PW*s, C].
    pixels = op.Reshape(op.Transpose(x, perm=[0, 2, 3, 1]),
                        op.Concat(op.Constant(value_ints=[-1]), op.Slice(shape, [1], [2], [0]), axis=0))
    batch = op.Cast(op.Slice(rois, [0], [1], [1]), to=ir.DataType.INT64)  # [K, 1], truncated as C++ converts it
    image_row = op.Mul(op.Unsqueeze(batch, [2]), height)  # [K, 1, 1]

    def read(row, col):
        return op.Gather(pixels, op.Add(op.Mul(op.Add(image_row, row), width), col), axis=0)

    def weight(a, b):
        return op.Unsqueeze(op.Mul(a, b), [3])  # [K, PH*s, PW*s, 1]

    sample = op.Add(op.Add(op.Add(op.Mul(weight(hy, hx), read(y_low, x_low)),
                                  op.Mul(weight(hy, lx), read(y_low, x_high))),
                           op.Mul(weight(ly, hx), read(y_high, x_low))),
                    op.Mul(weight(ly, lx), read(y_high, x_high)))  # [K, PH*s, PW*s, C]
    sample = op.Where(op.Unsqueeze(valid, [3]), sample, op.CastLike(0.0, sample))

    bins = op.Reshape(sample, op.Concat(op.Slice(op.Shape(sample), [0], [1], [0]),
                                        op.Constant(value_ints=[pooled_height, s, pooled_width, s]),
                                        op.Slice(op.Shape(sample), [3], [4], [0]), axis=0))  # [K, PH, s, PW, s, C]
    total = None
    for iy in range(s):
        row = op.Gather(bins, op.Constant(value_int=iy), axis=2)  # [K, PH, PW, s, C]
        for ix in range(s):
            term = op.Gather(row, op.Constant(value_int=ix), axis=3)  # [K, PH, PW, C]
            total = term if total is None else op.Add(total, term)
    out = op.Transpose(op.Div(total, op.CastLike(float(s * s), total)), perm=[0, 3, 1, 2])  # [K, C, PH, PW]
    return op.Cast(out, to=out_type) if out_type in _HALF_TYPES else out


def checked_rotated_rois(rois, stats, batch_size: int, spatial_scale: float):
    """The compiled-graph value check (``impls::checked_rotated_rois``): ONNX cannot raise, so the boxes pass
    unchecked."""
    return op.Identity(rois)


TRANSLATIONS = {
    "roi_align_rotated_forward": roi_align_rotated,
    "triton_roi_align_rotated_forward": roi_align_rotated,
    "checked_rotated_rois": checked_rotated_rois,
}
"""``{operator name in torch.ops.impls: translation}``, for ``impls/core/onnx_export.py``'s table."""
