"""What is timed: one call of the public op through a named backend, forward alone or forward + backward.

Inputs are built once per case (outside the timer) from the workload's fixed seed. The timed closure calls
``impls.roi_align`` / ``impls.crop_and_resize`` exactly as a user would (validation and the autograd Function
included) and, on a CUDA device, ends with ``torch.cuda.synchronize()`` so that the timer sees the kernels finish,
not just their launch. Gradients come from ``torch.autograd.grad``, so no ``.grad`` accumulates between rounds.
``fwdbwd_det`` runs the ``fwdbwd`` call inside ``torch.use_deterministic_algorithms(True)`` (the previous setting is
restored after every call), so the backend's deterministic image gradient is what is timed, at the price users pay
for it (that mode also fills new ``torch.empty`` tensors, see ``torch.utils.deterministic``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional

import torch

import impls
from matrix import Case
from workloads import crop_and_resize_inputs, feature_map, roi_align_inputs, SEED, Workload


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The tensors of one call: ``image`` [N, C, H, W], ``boxes`` ([K, 5] rois or [K, 4] normalized), ``box_index``
    [K] (crop_and_resize only), the op's other keyword arguments, and the upstream gradient [K, C, PH, PW]."""

    op: str
    image: torch.Tensor
    boxes: torch.Tensor
    box_index: Optional[torch.Tensor]
    kwargs: dict
    grad_output: torch.Tensor

    def to(self, device: str, dtype: torch.dtype) -> "Inputs":
        """A copy on ``device`` in ``dtype`` (``box_index`` stays int64)."""
        return dataclasses.replace(
            self,
            image=self.image.to(device, dtype),
            boxes=self.boxes.to(device, dtype),
            box_index=None if self.box_index is None else self.box_index.to(device),
            grad_output=self.grad_output.to(device, dtype),
        )


def make_inputs(case: Case) -> Inputs:
    """The case's inputs on its device and in its dtype."""
    return _cpu_inputs(case.op, case.workload).to(case.device, case.torch_dtype)


# Consecutive cases share a workload (matrix order): drawing a P2 map and its upstream gradient takes ~0.2 s of
# CPU, more than timing a GPU case. ``make_inputs`` copies them to the case's device and dtype (a CPU float32 case
# gets the cached tensors themselves, which the calls only read).
@functools.lru_cache(maxsize=2)
def _cpu_inputs(op: str, workload: Workload) -> Inputs:
    image = feature_map(workload)  # [N, C, H, W] float32
    if op == "roi_align":
        boxes, kwargs = roi_align_inputs(workload)  # [K, 5] float64
        box_index = None
        out_h, out_w = kwargs["output_size"]
    else:
        boxes, box_index, kwargs = crop_and_resize_inputs(workload)  # [K, 4] float64, [K] int64
        out_h, out_w = kwargs["crop_size"]
    g = torch.Generator().manual_seed(SEED + 1)
    grad_output = torch.randn(workload.boxes, image.shape[1], out_h, out_w, generator=g)  # [K, C, PH, PW]
    return Inputs(op, image, boxes, box_index, kwargs, grad_output)


def _forward(backend: str, inputs: Inputs, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    if inputs.op == "roi_align":
        return impls.roi_align(image, boxes, backend=backend, **inputs.kwargs)
    return impls.crop_and_resize(image, boxes, inputs.box_index, backend=backend, **inputs.kwargs)


def make_call(backend: str, pass_: str, inputs: Inputs) -> Callable[[], tuple[torch.Tensor, ...]]:
    """A closure running one pass; it returns ``(output,)`` for ``fwd``, ``(grad_image,)`` for ``fwdbwd`` and
    ``fwdbwd_det`` and ``(grad_image, grad_boxes)`` for ``fwdbwd_boxes``."""
    image = inputs.image.detach().requires_grad_(pass_ != "fwd")
    boxes = inputs.boxes.detach().requires_grad_(pass_ == "fwdbwd_boxes")
    wrt = {"fwd": (), "fwdbwd": (image,), "fwdbwd_det": (image,), "fwdbwd_boxes": (image, boxes)}[pass_]
    synchronize = torch.cuda.synchronize if inputs.image.device.type == "cuda" else lambda: None

    def call() -> tuple[torch.Tensor, ...]:
        output = _forward(backend, inputs, image, boxes)
        results = torch.autograd.grad(output, wrt, inputs.grad_output) if wrt else (output,)
        synchronize()
        return results

    if pass_ != "fwdbwd_det":
        return call

    def deterministic_call() -> tuple[torch.Tensor, ...]:
        # A global flag (at::globalContext()), so the autograd engine's device thread sees it too.
        enabled = torch.are_deterministic_algorithms_enabled()
        warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            return call()
        finally:
            torch.use_deterministic_algorithms(enabled, warn_only=warn_only)

    return deterministic_call
