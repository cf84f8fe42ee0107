"""The backend registry: one record per implementation, looked up by name.

A backend is plain kernels (no autograd) plus what it supports. The autograd Functions in
``impls/ops/<op>/spec.py`` call whichever backend was named; nothing here falls back from one backend to another.

Kernel signatures (all arguments already validated and normalized by the operator's ``arguments.py``). Each
gradient is its own kernel, as in torchvision: the input gradient needs the input's sizes, not its values; only the box
gradient reads the feature map.

* ``crop_and_resize``:

  * ``forward(image, boxes, box_index, crop_height, crop_width, method, extrapolation_value)``
    -> ``Tensor[K, C, crop_height, crop_width]``; ``box_index`` is int64.
  * ``backward_input(grad, boxes, box_index, crop_height, crop_width, batch_size, channels, height, width,
    method)`` -> ``Tensor[N, C, H, W]``.
  * ``backward_boxes(grad, image, boxes, box_index, crop_height, crop_width, method)`` -> ``Tensor[K, 4]``.

* ``roi_align`` (``rois`` is ``Tensor[K, 5]``):

  * ``forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)``
    -> ``Tensor[K, C, pooled_height, pooled_width]``.
  * ``backward_input(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width,
    sampling_ratio, aligned)`` -> ``Tensor[N, C, H, W]`` (torchvision's ``_roi_align_backward`` order).
  * ``backward_boxes(grad, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)``
    -> ``Tensor[K, 5]`` (column 0, the batch index, gets 0).

* ``multiscale_roi_align`` (optional: a backend without it pools each level with its ``roi_align``; ``levels`` is
  int64 [K], each box's map; ``scales`` one per map):

  * ``forward(features, rois, levels, scales, pooled_height, pooled_width, sampling_ratio, aligned)``
    -> ``Tensor[K, C, pooled_height, pooled_width]``.
  * ``backward_input(grad, rois, levels, scales, pooled_height, pooled_width, batch_size, channels, heights,
    widths, sampling_ratio, aligned)`` -> one ``Tensor[N, C, H_l, W_l]`` per map.
  * ``backward_boxes(grad, features, rois, levels, scales, pooled_height, pooled_width, sampling_ratio, aligned)``
    -> ``Tensor[K, 5]``.

``backward_boxes`` is ``None`` for a backend that gives no gradient to the boxes, ``backward_input`` for one that
gives no gradient at all (an inference runtime: ``onnxruntime``, ``openvino``).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch

# The dtypes a feature map may have; a backend supports these or a subset.
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class BackendUnavailableError(RuntimeError):
    """The named backend exists but cannot run here (not built, no GPU, peer not installed...)."""


@dataclasses.dataclass(frozen=True)
class OpKernels:
    """One operator of one backend: plain functions, no autograd (signatures in the module docstring)."""

    forward: Callable
    backward_input: Optional[Callable] = None  # None: forward only (e.g. onnxruntime)
    backward_boxes: Optional[Callable] = None  # None: no gradient to the boxes (e.g. torchvision)
    # A peer that computes another convention than CONVENTIONS.md's on part of the op's inputs: the section that
    # states where and how (the tests cross-check it on the rest and test the difference as a difference). None:
    # the op as CONVENTIONS.md states it, on every input the record accepts.
    differs: Optional[str] = None
    # The forward takes exactly one box per image, box k on image k (kornia's API), and raises otherwise.
    one_box_per_image: bool = False
    # This operator's image-gradient modes where they are not the backend's (``Backend.image_grad_modes``).
    image_grad_modes: Optional[tuple[str, ...]] = None

    @property
    def input_grad(self) -> bool:
        return self.backward_input is not None

    @property
    def boxes_grad(self) -> bool:
        return self.backward_boxes is not None


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    summary: str
    devices: tuple[str, ...]
    dtypes: tuple[torch.dtype, ...]
    kernels: dict[str, OpKernels]
    # Another project's kernels wrapped for comparison (torchvision, tensorflow), not an implementation of ours:
    # cross-checked where its semantics overlap ours and timed as its users run it, never picked by ``auto``.
    peer: bool = False
    # Returns None when the backend can run here, else a sentence saying why not and how to fix it.
    unavailable_reason: Callable[[], Optional[str]] = lambda: None
    # The image gradient's modes. ("deterministic",): one, already in a fixed order. ("atomic", "deterministic"):
    # atomics by default, the atomic-free path under torch.use_deterministic_algorithms(True)
    # (``core/determinism.py``); the tests run both, the benchmark times both.
    image_grad_modes: tuple[str, ...] = ("deterministic",)
    # The dtypes in which every result equals the ``reference`` oracle's bit for bit (tolerance 0 in the tests):
    # the same expressions in the same order, no FP contraction (CONVENTIONS.md §6).
    bit_exact_dtypes: tuple[torch.dtype, ...] = ()

    @property
    def available(self) -> bool:
        return self.unavailable_reason() is None

    def grad_modes(self, op: str) -> tuple[str, ...]:
        """The image-gradient modes of ``op`` on this backend: its kernels' own, else the backend's."""
        return self.kernels[op].image_grad_modes or self.image_grad_modes


_BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    if backend.name in _BACKENDS:
        raise ValueError(f"backend {backend.name!r} is registered twice")
    _BACKENDS[backend.name] = backend
    return backend


def add_kernels(backend: str, op: str, kernels: OpKernels) -> None:
    """Gives the registered backend ``backend`` kernels for ``op``: how an operator whose kernels live in its own
    folder (``impls/ops/<op>/backends.py``) joins a backend record that other operators share."""
    record = _BACKENDS[backend]
    if op in record.kernels:
        raise ValueError(f"backend {backend!r} already has kernels for {op}")
    record.kernels[op] = kernels


def registered() -> dict[str, Backend]:
    return dict(_BACKENDS)


def backends() -> list[dict]:
    """One row per registered backend: ops, devices, dtypes, whether it runs here and why not."""
    rows = []
    for b in _BACKENDS.values():
        reason = b.unavailable_reason()
        rows.append(
            {
                "name": b.name,
                "summary": b.summary,
                "ops": tuple(b.kernels),
                "devices": b.devices,
                "dtypes": tuple(str(d).replace("torch.", "") for d in b.dtypes),
                "input_grad": tuple(op for op, k in b.kernels.items() if k.input_grad),
                "boxes_grad": tuple(op for op, k in b.kernels.items() if k.boxes_grad),
                "differs": tuple(op for op, k in b.kernels.items() if k.differs),
                "image_grad_modes": b.image_grad_modes,
                "bit_exact_dtypes": tuple(str(d).replace("torch.", "") for d in b.bit_exact_dtypes),
                "peer": b.peer,
                "available": reason is None,
                "reason": reason,
            }
        )
    return rows


def _available_listing() -> str:
    parts = []
    for b in _BACKENDS.values():
        reason = b.unavailable_reason()
        parts.append(f"{b.name} (available)" if reason is None else f"{b.name} (unavailable: {reason})")
    return "; ".join(parts)


# ``auto``: the first of these that runs on the tensors' device and is available here. One rule for every device:
# the compiled extension for the device (``cpp``, ``cuda``) when it is built and can run, else ``vectorized``,
# which runs wherever torch does. It is decided from what is installed before the call, never by retrying after
# a failure.
AUTO_ORDER = ("cpp", "cuda", "vectorized")


def _auto(device: torch.device) -> str:
    for name in AUTO_ORDER:
        if device.type in _BACKENDS[name].devices and _unavailable_reason(name) is None:
            return name
    raise BackendUnavailableError(
        f"backend 'auto' found nothing that runs on {device.type}; available here: {_available_listing()}"
    )


def resolve(name: str, op: str, device: torch.device) -> str:
    """The backend that ``backend=name`` means for a call of ``op`` on ``device`` (``auto``: ``AUTO_ORDER``).

    Raises for an unknown name and for a backend that does not implement ``op``.
    """
    check_name(name, op)
    return check_name(_auto(device), op) if name == "auto" else name


def check_name(name: str, op: str) -> str:
    """``name`` itself, after checking that it is ``"auto"`` or a backend that implements ``op``: the first check of
    every public call, before its arguments are looked at, so that a misspelled backend is the first error."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a str, got {type(name).__name__}; known: {', '.join(_BACKENDS)}")
    if name == "auto":
        return name
    if name not in _BACKENDS:
        raise ValueError(
            f"unknown backend {name!r}; use 'auto' or one of: {_available_listing()}"
        )
    if op not in _BACKENDS[name].kernels:
        offer = [b.name for b in _BACKENDS.values() if op in b.kernels]
        raise ValueError(f"backend {name!r} does not implement {op}; backends that do: {', '.join(offer)}")
    return name


@torch.compiler.assume_constant_result
def _unavailable_reason(name: str) -> Optional[str]:
    """Why the backend ``name`` cannot run here, or None. While ``torch.compile`` traces a call, the answer is taken
    as a constant of the graph: the reasons look at the environment (installed packages, the GPU, the dispatcher)
    in ways Dynamo does not trace (torch 2.11 stops at ``importlib.util.find_spec``), and they do not change in a
    process."""
    return _BACKENDS[name].unavailable_reason()


def kernels(name: str, op: str, device: torch.device, dtype: torch.dtype) -> OpKernels:
    """The kernels of ``op`` in the resolved backend ``name``, after checking they can run on ``device``/``dtype``."""
    backend = _BACKENDS[name]
    reason = _unavailable_reason(name)
    if reason is not None:
        raise BackendUnavailableError(
            f"backend {name!r} is unavailable: {reason}. Available here: {_available_listing()}"
        )
    if device.type not in backend.devices:
        raise ValueError(
            f"backend {name!r} runs on {', '.join(backend.devices)}, not on {device.type}; "
            f"move the tensors or pick another backend"
        )
    if dtype not in backend.dtypes:
        raise TypeError(
            f"backend {name!r} supports dtypes {', '.join(map(str, backend.dtypes))}, not {dtype}; "
            f"cast the input or pick another backend"
        )
    return backend.kernels[op]
