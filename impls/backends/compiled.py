"""``compiled``: the ``vectorized`` backend with its three per-chunk steps compiled by ``torch.compile``.

What is compiled. ``vectorized`` runs each operator (``_chunked.py``) as a Python loop over chunks of boxes. Per
chunk it computes the samples' geometry (small ``[Kc, PH, sy, 2]`` / ``[Kc, PW, sx, 2]`` tensors of tap indices, weights
and box derivatives, ``_chunked._Cells``) and calls one *step* that does the work on the feature map: ``sample`` (gather
the four taps of every sample, weight them and sum them per output cell), ``scatter`` (add each sample's share of the
incoming gradient to its taps) or ``box_grad`` (the box gradient's reductions). This backend runs the very same loop and
geometry and hands it the steps compiled with ``torch.compile(fullgraph=True, dynamic=True)``. Inductor turns each into
one loop nest, C++/OpenMP on the CPU and Triton on a GPU, that reads the map through the tap indices and never
materializes the ``[Kc, PH, sy, PW, sx, C]`` gathered tensors the eager steps build.

Why only the steps. The geometry is cheap (``K x S`` values) but depends on ``aligned``, ``method``,
``spatial_scale`` and the sampling grid: compiled with the steps, it would be inlined into the innermost loop and
recomputed for every block of channels, and each of those Python values would be a graph of its own. Left eager,
the steps are the only graphs, with every size symbolic (``dynamic=True``): a new box count K, map size or
channel count reuses them (``tests/compile/test_compiled_backend.py`` counts the graphs). Sizes that are 1 (a chunk
of one box, one sample per cell along a side, one channel, a 1 x 1 output) would each be specialized by Dynamo
into one more graph; the varying dimensions are marked unbacked (``_FREE_DIMS``), as the Triton kernels are
``do_not_specialize`` on their sizes, so they are not. What adds a graph is a compute dtype (float32 serves
float16/bfloat16/float32, float64 its own) and the operator (crop_and_resize's extrapolation value per box is a
tensor of another rank than roi_align's 0): twelve graphs in all. Each is compiled by Inductor on its first use in
a process (the benchmark report gives the seconds, ``first_call_s``), then comes from Inductor's on-disk cache in
later processes.

Inductor settings (``_INDUCTOR_OPTIONS``). By default Inductor stores the result of an expression that reads many
inputs or has many operations before using it again; for ``sample`` that means writing the gathered taps to
memory, the very cost compiling should remove. The thresholds are raised so that the gathers stay fused into the
sum that consumes them. The axes hold each sample's low and high tap side by side (the trailing 2), so along the
sample dimension no load is contiguous and Inductor's C++ backend vectorizes over the channels, the one dimension
where the feature-map reads are contiguous.

Cost. A feature map that is not channels_last is copied once per call to ``[N*H*W, C]`` rows (``vectorized``
does the same): on the P2 box head that copy costs more than the compiled forward itself. The image gradient adds
with atomics (``index_put_(accumulate=True)``, Inductor's ``atomic_add``), so by default the order of its float
sums, and their last bits, can change from run to run; under ``torch.use_deterministic_algorithms(True)`` it
repeats bit for bit (``tests/compile/test_compiled_backend.py``).

Empty inputs (K, C or the map's area 0) run the eager step: there is no work, and a size-0 dimension would be one
more specialized graph. Everything else (validation, dtypes, layouts, errors, the memory bound of the chunks) is
``vectorized``'s. A step that fails to compile raises; nothing falls back to another backend or to eager.
"""


from __future__ import annotations

import inspect
from typing import Callable, Optional

import torch
import torch._dynamo
import torch._dynamo.config
import torch._inductor.config
from torch._prims_common import make_contiguous_strides_for

from ..core.registry import FLOAT_DTYPES, Backend, register
from . import _chunked


def _known(config, settings: dict) -> dict:
    """The ``settings`` that this torch's ``config`` module has (filtered once, at import): torch.compile rejects
    an option it does not know, and torch 2.11 (the GPU machine's) lacks some of these."""
    return {k: v for k, v in settings.items() if hasattr(config, k)}


# torch 2.11's Inductor has no CPU-specific thresholds and no realize_opusers_threshold.
_INDUCTOR_OPTIONS = _known(torch._inductor.config, {
    "realize_reads_threshold": 64,
    "realize_opcount_threshold": 1000,
    "realize_cpu_opcount_threshold": 1000,
    "realize_acc_reads_threshold": 64,
    "realize_cpu_acc_reads_threshold": 64,
    "realize_opusers_threshold": 64,
})

# Graphs per step: one per compute dtype and operator, and one per pattern of the sizes left backed (the map's rows,
# H and W) where those are 1; past the limit, raise instead of running the step uncompiled.
_DYNAMO_SETTINGS = _known(torch._dynamo.config, {"recompile_limit": 64, "fail_on_recompile_limit_hit": True})


# The dimensions of the steps' tensor arguments (by parameter name, ``_chunked``'s conventions) whose sizes vary
# from call to call: boxes in the chunk, output cells and samples per cell along each side, channels. Dynamo would
# specialize each of them to 1 wherever a call has size 1 (one box in a chunk, one sample per bin, one channel),
# one more graph per pattern; marked unbacked, they never are, and one graph per step, dtype and operator serves
# every size. The sizes left alone are structural (the trailing 2 of an axis: a sample's low and high tap; the 1s of
# ``outside``) or rarely 1 (the map's rows).
_AXIS_DIMS = (0, 1, 2)  # [Kc, PH or PW, sy or sx, 2]
_FREE_DIMS = {
    "rows": (1,), "grad_rows": (1,), "n": (0,), "g": (0, 1, 2, 3), "outside": (0,),
    **{f"{side}_{field}": _AXIS_DIMS for side in "xy" for field in ("tap", "weight", "d")},
}


def _canonical(t: torch.Tensor) -> torch.Tensor:
    """A contiguous ``t`` with the strides of a new tensor of its shape. torch calls a tensor contiguous whatever
    the stride of a size-1 dimension (a one-channel map's rows can come with stride 168 there), and Dynamo guards
    on strides: one more graph for each such stride. Other tensors are returned as they are."""
    stride = tuple(make_contiguous_strides_for(t.shape))
    if not t.is_contiguous() or t.stride() == stride:
        return t
    return t.as_strided(t.shape, stride)


def _free_sizes(parameters: tuple, args: list, free_dims: dict) -> None:
    """Marks the varying dimensions of the step's arguments (``free_dims``: ``_FREE_DIMS`` for the separable
    operators' steps, an operator's own for its steps) as unbacked, so that no graph is specialized to a size
    of 1; a 0-d ``outside`` (roi_align's 0) has none."""
    for name, arg in zip(parameters, args):
        if isinstance(arg, torch.Tensor) and arg.dim() > 0:
            for dim in free_dims.get(name, ()):
                torch._dynamo.decorators.mark_unbacked(arg, dim)


class CompiledStep:
    """One step of ``_chunked`` (``sample_step``, ``scatter_step``, ``box_grad_step``), compiled on its first call
    with work to do."""

    def __init__(self, step: Callable, free_dims: Optional[dict] = None):
        self.step = step
        self.parameters = tuple(inspect.signature(step).parameters)
        self.free_dims = _FREE_DIMS if free_dims is None else free_dims
        self._compiled: Optional[Callable] = None

    def __call__(self, *args):
        if torch.compiler.is_compiling():
            return self.step(*args)  # traced into a graph the user compiles, and compiled with it
        if any(isinstance(a, torch.Tensor) and a.numel() == 0 for a in args):
            return self.step(*args)
        # The steps compute no autograd (the Functions in impls/ops/<op>/spec.py do): a map that requires grad would be
        # a guard of its own, so it is passed detached (same storage; scatter's in-place add still lands).
        args = [_canonical(a.detach()) if isinstance(a, torch.Tensor) else a for a in args]
        _free_sizes(self.parameters, args, self.free_dims)
        if self._compiled is None:
            self._compiled = torch.compile(self.step, fullgraph=True, dynamic=True, options=_INDUCTOR_OPTIONS)
        with torch._dynamo.config.patch(**_DYNAMO_SETTINGS):
            return self._compiled(*args)


# The compiled steps, shared by every call in the process (each compiles on its first call).
STEPS = _chunked.Steps("compiled", CompiledStep(_chunked.sample_step), CompiledStep(_chunked.scatter_step),
                       CompiledStep(_chunked.box_grad_step))


# Decided once, at import: the registry asks on every call, and a call may be traced by torch.compile, where
# asking Dynamo about itself is not allowed.
_UNAVAILABLE = None if torch._dynamo.is_dynamo_supported() else (
    "torch.compile does not support this Python; use backend='vectorized' (the same code, eager)")


BACKEND = register(
    Backend(
        name="compiled",
        summary="vectorized with its per-chunk steps compiled by torch.compile (Inductor: C++ on CPU, Triton on GPU)",
        devices=("cpu", "cuda"),
        dtypes=FLOAT_DTYPES,
        kernels=_chunked.kernels_with(STEPS),
        unavailable_reason=lambda: _UNAVAILABLE,
    )
)
