"""Calling an operator's ``torch.autograd.Function`` only when autograd records the call.

Each operator's ``Function`` defines ``forward`` without ``ctx`` and a separate ``setup_context``. For such a
Function, ``Function.apply`` binds its arguments through ``inspect.signature`` on every call, about 55 us in torch 2.14
on one core: a tenth of a forward of 32 boxes of 14x14 on 256 channels (0.57 ms through the API, 0.47 ms for the
kernel alone), paid even where nothing is differentiated (inference, ``torch.no_grad()``, inputs without
``requires_grad``). Where autograd would record nothing, ``apply_function`` runs the Function's ``forward`` itself:
the same kernel call, so the same output.
"""

from __future__ import annotations

import torch


def records(args) -> bool:
    """Whether autograd records a call on ``args``: grad mode on and a tensor among them that requires grad."""
    return torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)


def apply_function(function: type[torch.autograd.Function], *args):
    """``function.apply(*args)`` where autograd records the call, else ``function.forward(*args)`` (a Function whose
    ``forward`` takes no ``ctx``: the module docstring)."""
    return function.apply(*args) if records(args) else function.forward(*args)
