"""Argument checks every operator shares, done once in Python before any backend runs.

Every error names the argument, what was expected and what was given. The checks that read tensor values (box
indices in range, finite boxes) compute a few statistics and read them once per call (``read_stats``): on the CPU
one dispatched operator of the extension, ``impls::<op>_value_stats``, reads the boxes in place and returns them as
numbers (``value_stats_op``; ``csrc/common/value_stats.h``); elsewhere, and on the CPU where the extension is not
built, an operator's ``stats_of`` reduces them on the tensors' device with torch operators (``stats``,
``nan_unless_finite``) and ``read`` brings them to the host, one device-to-host copy, which on CUDA is the call's one
synchronization. Under ``torch.compile`` each operator's ``arguments.py`` hands the ``stats_of`` tensor to its own
opaque check operator (``impls::checked_boxes``, ``impls::checked_rois``), which raises the eager exception when
the graph runs.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Sequence

import torch

from .registry import FLOAT_DTYPES


def feature_map(name: str, x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a Tensor[N, C, H, W], got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be 4-D [N, C, H, W], got shape {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating tensor (float16, bfloat16, float32, float64), got {x.dtype}")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{name} must have H > 0 and W > 0, got shape {tuple(x.shape)}")


def like(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}; move both to one device")
    if t.dtype != ref.dtype:
        if name.startswith("boxes") and ref.dtype in (torch.float16, torch.bfloat16) and t.dtype.itemsize > 2:
            # Casting the boxes down is the worse fix: float16 steps by 0.5 px at 800 px (notebook 04, pitfalls).
            raise TypeError(
                f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}; keep {name} in {t.dtype} and call the op "
                f"under torch.autocast (it computes in float32 and returns {ref.dtype}), or cast {ref_name} to "
                f"{t.dtype}; casting {name} to {ref.dtype} would round the box corners"
            )
        raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}; cast {name} to {ref.dtype}")


def stats(*values: torch.Tensor) -> torch.Tensor:
    """Scalar tensors (reductions on the tensors' device) as one float64 tensor, still on that device."""
    return torch.stack([v if v.dtype == torch.float64 else v.to(torch.float64) for v in values])


def nan_unless_finite(t: torch.Tensor) -> torch.Tensor:
    """A float64 scalar on ``t``'s device: 0 when every value of ``t`` is finite, NaN when one is NaN or infinite.
    ``0 * inf`` is NaN, and a NaN term makes the sum NaN; no sum of zeros overflows: two operators where
    ``torch.isfinite(t).all()`` takes four, and already the dtype ``stats`` stacks."""
    return t.mul(0).sum(dtype=torch.float64)


def read(stats: torch.Tensor) -> list:
    """A call's one device-to-host copy: its value statistics as Python numbers."""
    return stats.tolist()


def value_stats_op(op: str, schema: str) -> torch._ops.OpOverload:
    """Defines ``impls::<op>_value_stats`` with ``schema`` (its tensors and parameters ``-> float[]``) and returns it:
    the operator ``read_stats`` calls on CPU tensors, its kernel ``csrc/<op>/<op>_value_stats_cpu.cpp``, which
    returns what ``read(stats_of(...))`` would."""
    torch.library.define(f"impls::{op}_value_stats", schema)
    return getattr(torch.ops.impls, f"{op}_value_stats").default


@functools.cache
def _has_cpu_kernel(name: str) -> bool:
    """Whether the extension registered operator ``name``'s CPU kernel (not where it is not built or did not load).
    Asked once per operator: the extension loads with the package, before any call."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU")


def read_stats(value_stats: torch._ops.OpOverload, stats_of, *args) -> list:
    """An operator's value statistics of ``args`` (its tensors, then its parameters) as Python floats, read once.

    Where every tensor is a strided CPU tensor and the extension is built, ``value_stats`` (``value_stats_op``)
    computes them: one operator, where ``stats_of`` (the same statistics as torch operators) dispatches 6 to 11, and
    right after a kernel call, whose data has pushed torch's dispatch out of the caches, each of those costs 10-60
    us. Elsewhere ``read(stats_of(*args))``. On 2 Xeon cores with 1.25 MB of L2 each, crop_and_resize's statistics
    of 32 boxes took 15-23 us right after a P3 kernel call (3.3 us warm), against 35-45 us (9.7 us) through the
    NumPy views of the tensors that read them before, and the public op on those P3 maps 0.51-0.54 ms against
    0.56-0.59 ms (its kernel 0.47-0.52 ms)."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if all(t.is_cpu and t.layout == torch.strided for t in tensors) and _has_cpu_kernel(value_stats.name()):
        return value_stats(*args)
    return read(stats_of(*args))


def _integer(value) -> bool:
    """An integer that is not a bool. ``type(value) is int`` first: the ABC check costs a microsecond, paid on every
    call of a public op."""
    return type(value) is int or (isinstance(value, numbers.Integral) and not isinstance(value, bool))


def pair(name: str, value) -> tuple[int, int]:
    """``int`` or ``(int, int)``, both > 0 -> ``(h, w)``."""
    if _integer(value):
        value = (value, value)
    sequence = type(value) is tuple or isinstance(value, torch.Size) or (
        isinstance(value, Sequence) and not isinstance(value, str)
    )
    if sequence and len(value) == 2:
        h, w = value
        if _integer(h) and _integer(w):
            if h > 0 and w > 0:
                return int(h), int(w)
            raise ValueError(f"{name} must be positive, got ({h}, {w})")
    raise TypeError(f"{name} must be an int or a pair of ints (height, width), got {value!r}")


def spatial_scale(value) -> None:
    """A feature map's scale: a positive finite number (e.g. 0.25 for stride 4)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 < value < math.inf:
        raise ValueError(f"spatial_scale must be a positive number, and finite (e.g. 0.25 for stride 4), got {value!r}")


def sampling_ratio(value) -> None:
    """Samples per bin side: an int, ``<= 0`` for the adaptive grid."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"sampling_ratio must be an int (<= 0 for adaptive), got {value!r}")
