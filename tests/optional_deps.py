"""Missing-peers-skip mode, for a GPU machine that brings its own torch but not every peer (``make gpu``).

By default (``make test``, CI) a peer or package that is not installed is an error: a test module that imports it
fails at collection, and a test of an unavailable peer backend fails (tests/cases.py). Only when
``IMPLS_GPU_RUN=1`` is set (``bench/gpu_run.sh`` sets it):

* ``require(module)`` at a test module's top skips the whole module, with the reason, when ``module`` is missing;
* tests/conftest.py skips every test whose ``backend`` (or ``name``) parameter is an unavailable peer, or that is
  marked ``@pytest.mark.needs_peers(...)`` with one, printing the registry's reason (``impls.backends()``).

Only the peers can be skipped this way: an unbuilt ``cpp`` or ``cuda`` backend still fails its tests.
"""

from __future__ import annotations

import importlib
import os
import sys
import types

import pytest
from cases import PEERS  # the registry's peers (Backend.peer), installed or not

ENV_VAR = "IMPLS_GPU_RUN"
MISSING_PEERS_SKIP = os.environ.get(ENV_VAR) == "1"
# Test parameters whose value names a backend (tests/api/test_backends.py parametrizes over `name`).
BACKEND_PARAMS = ("backend", "name")


def require(module: str) -> types.ModuleType:
    """``import module``; under ``IMPLS_GPU_RUN=1`` a missing module skips the calling test module instead."""
    if MISSING_PEERS_SKIP:
        caller = sys._getframe(1).f_globals.get("__name__", "?")  # the skip is reported at this file's line
        return pytest.importorskip(
            module, reason=f"{module} is not installed: all of {caller} skipped ({ENV_VAR}=1: missing peers skip)"
        )
    return importlib.import_module(module)


def unavailable_peers() -> dict[str, str]:
    """{peer: why it cannot run here} for the registered peers that cannot."""
    import impls

    return {row["name"]: row["reason"] for row in impls.backends() if row["name"] in PEERS and not row["available"]}


def peers_needed(item: pytest.Item) -> set[str]:
    """The peers a collected test calls: its backend-naming parameters and its ``needs_peers`` marks."""
    needed = set()
    params = getattr(getattr(item, "callspec", None), "params", {})
    for key in BACKEND_PARAMS:
        value = params.get(key)
        if isinstance(value, str) and value in PEERS:
            needed.add(value)
    for mark in item.iter_markers("needs_peers"):
        needed.update(mark.args)
    return needed
