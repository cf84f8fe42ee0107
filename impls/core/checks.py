"""Argument checks every operator shares, done once in Python before any backend runs.

Every error names the argument, what was expected and what was given. The checks that read tensor values (box
indices in range, finite boxes) compute a few statistics and read them once per call (``read_stats``): on the CPU
from NumPy views of the tensors, with no torch operator dispatched; elsewhere reduced on the tensors' device with
``stats`` and brought to the host together with ``read``, one device-to-host copy, which on CUDA is the call's one
synchronization. An operator's statistics are one function that takes either (``float64``, ``scaled``, ``floor``,
``nan_unless_finite``, ``stats`` take both). Each operator's ``arguments.py`` says what it reads and, under
``torch.compile``, hands the statistics to its own opaque check operator (``impls::checked_boxes``,
``impls::checked_rois``), which raises the eager exception when the graph runs.
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import numpy as np
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


def stats(*values):
    """Scalar tensors (reductions on the tensors' device) as one float64 tensor, still on that device; NumPy scalars
    (reductions of host views, ``read_stats``) as a list."""
    if isinstance(values[0], np.generic):
        return list(values)
    return torch.stack([v if v.dtype == torch.float64 else v.to(torch.float64) for v in values])


def float64(t):
    """``t`` (a tensor or a host view) in float64."""
    return t.astype(np.float64) if isinstance(t, np.ndarray) else t.to(torch.float64)


def scaled(t, factor: float):
    """``t * factor`` (a tensor or a host view). An overflow to inf is what the statistics look for: on a view NumPy
    would warn about it, so its warning is off here, the one statistic that can overflow (``read_stats`` sets no error
    state around the others: right after a kernel call the context cost 15 us of crop_and_resize's 131 us on a tiny
    input, a 2-core Xeon)."""
    if isinstance(t, np.ndarray):
        with np.errstate(over="ignore"):
            return t * factor
    return t * factor


def floor(t):
    """``t``'s values (a tensor or a host view) rounded down."""
    return np.floor(t) if isinstance(t, np.ndarray) else t.floor()


def nan_unless_finite(t):
    """A float64 scalar: 0 when every value of ``t`` (a tensor, on its device, or a host view) is finite, NaN when one
    is NaN or infinite. On a tensor ``0 * inf`` is NaN, and a NaN term makes the sum NaN; no sum of zeros overflows:
    two operators where ``torch.isfinite(t).all()`` takes four, and already the dtype ``stats`` stacks (each operator
    costs a few microseconds of dispatch, paid by every call of a public op)."""
    if isinstance(t, np.ndarray):
        return np.float64(0.0 if np.isfinite(t).all() else math.nan)
    return t.mul(0).sum(dtype=torch.float64)


def read(stats: torch.Tensor) -> list:
    """A call's one device-to-host copy: its value statistics as Python numbers."""
    return stats.tolist()


def read_stats(stats_of, *tensors: torch.Tensor) -> list:
    """``stats_of(*tensors)`` (an operator's statistics, built with ``stats``) as Python numbers, read once.

    Where every tensor is a strided CPU tensor in a dtype NumPy has (not bfloat16), the statistics are computed on
    NumPy views of them (no copy, no torch operator): right after a kernel call, whose data has pushed torch's
    dispatch out of the caches, each of the 8 small operators of crop_and_resize's check took 10-60 us, and the check
    110 us against 70 us this way (33 and 17 us with warm caches; 32 P3 maps with one 14x14 box each, a 2-core Xeon),
    where that call takes 0.6 ms through the public op on channels_last maps. Elsewhere on the tensors (``read``:
    one device-to-host copy)."""
    if not all(t.is_cpu and t.dtype != torch.bfloat16 and t.layout == torch.strided for t in tensors):
        return read(stats_of(*tensors))
    views = [(t.detach() if t.requires_grad else t).numpy() for t in tensors]
    return [float(v) for v in stats_of(*views)]


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
