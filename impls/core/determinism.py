"""``deterministic_algorithms()``: ``torch.use_deterministic_algorithms`` for the length of a block, for the tests and
the benchmark (which time and check the backends' deterministic image gradients).

The setting is global (``at::globalContext()``), so the autograd engine's device threads see it too; it is restored
after the block, ``warn_only`` included, whatever happens inside.
"""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool = True):
    """``torch.use_deterministic_algorithms(enabled)`` inside the block, the previous setting (and its
    ``warn_only``) restored after it: the ``cuda`` and ``triton`` backends' image gradients then take their
    atomic-free path, and the ``compiled`` scatter its ordered one."""
    previous = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(enabled)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=warn_only)
