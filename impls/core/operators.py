"""Each operator's schemas, defined once: ``define`` declares ``impls::<op>_<pass>`` with ``torch.library`` and gives it
its fake kernel (what ``torch.compile`` and ``torch.export`` run while tracing: output shape, dtype and layout).

The C++/CUDA extension (``csrc/<op>/``) only registers kernels for these names (``TORCH_LIBRARY_IMPL``); the
``triton`` backend defines ``impls::triton_<op>_<pass>`` from the same schemas. Nothing else writes a kernel's
schema; the argument checks' own operators (the value statistics, ``checks.value_stats_op``, and the opaque checks
under ``torch.compile``) are defined by each operator's ``arguments.py``.
"""

from __future__ import annotations

from typing import Callable

import torch

from . import layout as _layout

# Every schema defined here, ``<op>_<pass>`` -> schema, in definition order (the triton backend and the tests read it).
SCHEMAS: dict[str, str] = {}
# The fake kernel of each.
FAKES: dict[str, Callable] = {}


def define(op: str, schemas: dict[str, str], fakes: dict[str, Callable]) -> None:
    """Defines ``impls::<op>_<pass>`` for each ``pass -> schema`` of ``schemas``, with the fake ``fakes[pass]``."""
    for pass_, schema in schemas.items():
        name = f"{op}_{pass_}"
        torch.library.define(f"impls::{name}", schema)
        torch.library.register_fake(f"impls::{name}")(fakes[pass_])
        SCHEMAS[name] = schema
        FAKES[name] = fakes[pass_]


def check_grad(grad, k, channels, out_height, out_width):
    """The contract on an incoming gradient: [K, C, out_height, out_width]."""
    torch._check(
        grad.shape == (k, channels, out_height, out_width),
        lambda: f"grad must be [{k}, {channels}, {out_height}, {out_width}], got {tuple(grad.shape)}",
    )


def input_grad_like(grad, batch_size, channels, height, width):
    """An input gradient: [N, C, H, W] in the incoming gradient's layout."""
    out = grad.new_empty((batch_size, channels, height, width))
    return out.contiguous(memory_format=_layout.memory_format(grad))
