"""Which peer each operator is compared against, read from the backend records (``Backend.peer``): the peers of an
op are the registered peers that implement it, in the order they are registered, and its baseline is the first of
them. The benchmark checks a case against the op's peers first (``check.py``) and the report measures speed-ups
against the baseline (``results_json.py``); a peer's own row label is timed natively (``matrix.py``).
"""

from __future__ import annotations

import impls  # noqa: F401  (importing impls registers every backend)
from impls._registry import registered


def peers(op: str) -> tuple[str, ...]:
    """The registered peers that implement ``op``, in registration order."""
    return tuple(name for name, backend in registered().items() if backend.peer and op in backend.kernels)


def _baselines() -> dict[str, str]:
    """op -> its first peer, for every op some peer implements, ops in the order their peers are registered."""
    baselines: dict[str, str] = {}
    for name, backend in registered().items():
        for op in backend.kernels if backend.peer else ():
            baselines.setdefault(op, name)
    return baselines


BASELINE = _baselines()
