"""``cpp`` and ``cuda`` backends: glue to the compiled extension ``impls._C`` (``csrc/``).

For every operator of ``impls/ops/`` the extension registers kernels for its three operators,
``torch.ops.impls.<op>_{forward,backward_input,backward_boxes}`` (one operator per gradient): CPU kernels
(``csrc/<op>/<op>_cpu.cpp``, parallel over boxes x channels, float64 bit-exact with ``reference``) and, when built
with a CUDA toolkit, CUDA kernels (``csrc/<op>/<op>_cuda.cu``). The schemas and fake kernels are the operators'
(``impls/ops/<op>/spec.py``); this module binds the op handles once and registers the two backends. The package
still imports when the extension is not built: the backends then report why they are unavailable."""

from __future__ import annotations

import torch

from ..core.registry import FLOAT_DTYPES, Backend, OpKernels, register
from ..ops import OPS

try:
    from .. import _C  # noqa: F401  (loading the library runs its TORCH_LIBRARY_IMPL registrations)

    _IMPORT_ERROR = None
except (ImportError, OSError) as e:  # not built, or built against another torch
    _IMPORT_ERROR = f"{type(e).__name__}: {e}"


def _cpp_reason():
    if _IMPORT_ERROR is None:
        return None
    return (
        f"the C++ extension impls._C is not built ({_IMPORT_ERROR}); "
        "build it with `pip install --no-build-isolation -e .`"
    )


def _cuda_reason():
    reason = _cpp_reason()
    if reason is not None:
        return reason
    if not torch._C._dispatch_has_kernel_for_dispatch_key("impls::roi_align_forward", "CUDA"):
        return (
            "impls._C was built without CUDA kernels (no CUDA toolkit found at build time); "
            "rebuild with CUDA_HOME pointing at a toolkit"
        )
    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine"
    return None


def _bound(op: str) -> OpKernels:
    """The extension's three operators of ``op`` (``impls::<op>_{forward,backward_input,backward_boxes}``), their
    schemas and fakes defined by the operator's spec (``impls/ops/<op>/spec.py``), their kernels by ``csrc/<op>/``."""
    packet = getattr(torch.ops.impls, op + "_forward"), getattr(torch.ops.impls, op + "_backward_input"), \
        getattr(torch.ops.impls, op + "_backward_boxes")
    return OpKernels(*(p.default for p in packet))


# Every operator whose kernels the extension registers (a CPU kernel for its forward). Without the extension the
# records list the operators still, and say why they are unavailable.
_KERNELS = {
    op: _bound(op) for op in OPS
    if _IMPORT_ERROR is not None or torch._C._dispatch_has_kernel_for_dispatch_key(f"impls::{op}_forward", "CPU")
}

CPP = register(
    Backend(
        name="cpp",
        summary="C++ extension (csrc/<op>/<op>_cpu.cpp): parallel over boxes x channels; float64 bit-exact with "
        "reference",
        devices=("cpu",),
        dtypes=FLOAT_DTYPES,
        kernels=_KERNELS,
        unavailable_reason=_cpp_reason,
        bit_exact_dtypes=(torch.float64,),
    )
)

CUDA = register(
    Backend(
        name="cuda",
        summary="CUDA extension (csrc/<op>/*_cuda.cu): one thread per output; deterministic image gradient when "
        "torch.use_deterministic_algorithms(True)",
        devices=("cuda",),
        dtypes=FLOAT_DTYPES,
        kernels=_KERNELS,
        unavailable_reason=_cuda_reason,
        image_grad_modes=("atomic", "deterministic"),
    )
)
