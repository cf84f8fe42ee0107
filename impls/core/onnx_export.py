"""ONNX export: the translations of our operators for ``torch.onnx.export(..., dynamo=True)`` (CONVENTIONS.md §7).

A model that calls ``impls.roi_align`` or ``impls.crop_and_resize`` exports (``torch.export``) to one opaque operator
per call (``impls::roi_align_forward`` for ``cpp``/``cuda``, ``impls::triton_roi_align_forward`` for ``triton``,
``impls::adaptive_roi_align_forward`` for ``vectorized``/``compiled`` with adaptive sampling; the other operators
alike), behind the value check ``impls::checked_rois`` / ``impls::checked_boxes``. Each operator's ``onnx.py``
(``impls/ops/<op>/onnx.py``) maps its operators to standard-domain ONNX in ``TRANSLATIONS``; the value checks
become ``Identity``: ONNX cannot raise, so the exported model does not check that box indices are in range or boxes
finite. float16 and bfloat16 are computed in float32 and rounded once, as our kernels do (``in_opmath``).
Needs onnxscript (imported here only).
"""

from __future__ import annotations

import importlib
from typing import Callable

import torch
from onnxscript import ir
from onnxscript import opset18 as op

_HALF_TYPES = (ir.DataType.FLOAT16, ir.DataType.BFLOAT16)


def in_opmath(fn: Callable, x, *rest):
    """``fn(x, *rest)`` computed in float32 when ``x`` is float16/bfloat16 (one rounding at the end), else in x's
    type; ``rest`` are the float tensors that share x's type."""
    if x.dtype not in _HALF_TYPES:
        return fn(x, *rest)
    to_float = [op.Cast(t, to=ir.DataType.FLOAT) for t in (x, *rest)]
    return op.Cast(fn(*to_float), to=x.dtype)


def onnx_translation_table() -> dict:
    """``{operator overload: onnxscript translation}`` for ``torch.onnx.export(model, args, dynamo=True,
    custom_translation_table=impls.onnx_translation_table())``: every operator's ``TRANSLATIONS``, for the operators
    registered in this process (the extension's when it is built, the Triton ones when ``triton`` is)."""
    from ..ops import OPS

    table = {}
    for name in OPS:
        translations = importlib.import_module(f"impls.ops.{name}.onnx").TRANSLATIONS
        table.update({getattr(torch.ops.impls, overload).default: fn for overload, fn in translations.items()
                      if hasattr(torch.ops.impls, overload)})
    return table
