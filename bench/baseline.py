"""Which peer each operator is compared against, read from the backend records (``Backend.peer``): the peers of an
op are the registered peers that implement it, in the order they are registered, and its baseline is the first of
them. The benchmark checks a case against the op's peers first (``check.py``) and the report measures speed-ups
against the baseline (``results_json.py``); a peer's own row label is timed natively (``matrix.py``).

The benchmark also times ``multiscale_roi_align`` (``impls.MultiScaleRoIAlign``), which the records do not list as
an op of every backend: a backend without a multi-level kernel pools each level with its ``roi_align``
(``impls/core/registry.py``), so every backend with ``roi_align`` runs it, and its peers are ``roi_align``'s
(``torchvision``, timed as ``torchvision.ops.MultiScaleRoIAlign``).
"""

from __future__ import annotations

import impls  # noqa: F401  (importing impls registers every backend)
from impls.core.registry import registered

# Benchmarked op -> the registry op whose kernels a backend needs to run it (module docstring); others are their own.
KERNEL_OP = {"multiscale_roi_align": "roi_align"}


def kernel_op(op: str) -> str:
    """The registry op a backend must implement to run benchmarked op ``op``."""
    return KERNEL_OP.get(op, op)


def peers(op: str) -> tuple[str, ...]:
    """The registered peers that implement ``op``, in registration order."""
    return tuple(name for name, backend in registered().items() if backend.peer and kernel_op(op) in backend.kernels)


def _baselines() -> dict[str, str]:
    """op -> its first peer, for every op some peer implements, ops in the order their peers are registered, then
    the ops of ``KERNEL_OP`` whose registry op has one."""
    baselines: dict[str, str] = {}
    for name, backend in registered().items():
        for op in backend.kernels if backend.peer else ():
            baselines.setdefault(op, name)
    for op, registry_op in KERNEL_OP.items():
        if registry_op in baselines:
            baselines.setdefault(op, baselines[registry_op])
    return baselines


BASELINE = _baselines()
