"""From a public call's ``backend=`` to the kernels it runs: ``resolve_backend`` (what a name, ``"auto"`` included,
means for an operator on a device) and ``kernels`` (that backend's kernels for the call's tensors, checked to give
every gradient the call needs). No fallback: a backend that cannot do what was asked raises, naming what can."""

from __future__ import annotations

import torch

from . import registry as _registry


def resolve_backend(backend: str, op: str, device) -> str:
    """The backend name that ``backend`` ("auto" or a name) resolves to for ``op`` on ``device``.

    ``auto``: the first of ``cpp``, ``cuda``, ``vectorized`` that runs on ``device`` and is available here (the
    compiled extension when it is built, else pure torch). Raises for an unknown name, listing every backend and
    why an unavailable one is.
    """
    known = sorted({name for record in _registry.registered().values() for name in record.kernels})
    if op not in known:
        raise ValueError(f"op must be one of {known}, got {op!r}")
    return _registry.resolve(backend, op, torch.device(device))


def kernels(backend: str, op: str, x: torch.Tensor, boxes: torch.Tensor) -> _registry.OpKernels:
    """The kernels ``backend`` names for ``op`` on ``x``'s device and dtype, checked to give every gradient asked."""
    name = _registry.resolve(backend, op, x.device)
    kernels = _registry.kernels(name, op, x.device, x.dtype)
    if x.requires_grad and torch.is_grad_enabled() and not kernels.input_grad:
        raise ValueError(
            f"backend {name!r} computes the forward only (no gradient), but the feature map requires grad; "
            f"pass it detached, call under torch.no_grad(), or pick a backend with gradients (see impls.backends())"
        )
    if boxes.requires_grad and torch.is_grad_enabled() and not kernels.boxes_grad:
        raise ValueError(
            f"backend {name!r} gives no gradient to the boxes, but boxes.requires_grad is True; "
            f"pass boxes.detach() or pick a backend with box gradients (see impls.backends())"
        )
    return kernels
