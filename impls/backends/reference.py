"""``reference``: plain Python scalar loops, the oracle every other backend is checked against.

The kernels live with their operator (``impls/ops/<op>/reference.py``); this record gathers every operator that has
one. Cost: roughly a microsecond per sample per channel: maps of tens of pixels only, never a detector workload.
float64 results equal ``cpp``'s bit for bit (each expression in the C++ kernels' order, on Python floats).
"""

from __future__ import annotations

import importlib
import importlib.util

from ..core.registry import FLOAT_DTYPES, Backend, register
from ..ops import OPS


def _kernels() -> dict:
    """``{op: KERNELS}`` of every operator with a ``reference.py``."""
    return {
        op: importlib.import_module(f"impls.ops.{op}.reference").KERNELS
        for op in OPS
        if importlib.util.find_spec(f"impls.ops.{op}.reference") is not None
    }


BACKEND = register(
    Backend(
        name="reference",
        summary="plain Python scalar loops; the oracle (slow: tiny inputs only)",
        devices=("cpu",),
        dtypes=FLOAT_DTYPES,
        kernels=_kernels(),
    )
)
