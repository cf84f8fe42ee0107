"""The one matrix every backend runs: backend x device x dtype x contiguity x op x pass, against ``reference``.

The oracle is the ``reference`` backend evaluated in float64 on the very values the backend under test received
(inputs are rounded to the tested dtype first), so only the backend's own arithmetic is measured.
Tolerances and their reasons: ``cases.TOLERANCE``.

The ``cuda`` and ``triton`` backends' backward runs in both of their modes: the default, which adds the image
gradient with atomics, and the one ``torch.use_deterministic_algorithms(True)`` selects (atomic-free); their ids end
in ``-bwd-atomic`` and ``-bwd-deterministic``. Every other id is ``backend-device-dtype-contiguity-case-pass``.

Layout: every backend of ours returns the feature map's memory format from the forward (channels_last in,
channels_last out, as conv2d) and the incoming gradient's from the input gradient; the channels_last column
checks both (the peers keep their own projects' layouts and are not held to it).
"""

import cases
import pytest
import torch

from impls.core.determinism import deterministic_algorithms
from impls.core.registry import registered

DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def _matrix():
    for backend in registered():
        if backend == cases.ORACLE:
            continue
        for device in cases.DEVICES:
            for dtype in DTYPES:
                for case in cases.OP_CASES:
                    if not cases.supports(backend, case, device, dtype):
                        continue
                    for contiguity in cases.CONTIGUITY:
                        for pass_ in cases.passes(backend, case):
                            dt = str(dtype).replace("torch.", "")
                            base = f"{backend}-{device}-{dt}-{contiguity}-{case.id}-{pass_}"
                            modes = cases.backward_modes(backend, device, case.op) if pass_ == "bwd" else None
                            for mode in modes or (None,):
                                yield pytest.param(
                                    backend, device, dtype, contiguity, case, pass_, mode,
                                    id=base if mode is None else f"{base}-{mode}",
                                )


def _run(case, backend, x, boxes, box_index, grad, boxes_grad, deterministic=False):
    """Output, input gradient and box gradient (None where not asked), the gradients as the backend returned them
    (``autograd.grad``: no accumulation into ``.grad``, which would impose the leaf's layout)."""
    x = x.detach().requires_grad_(grad is not None)
    boxes = boxes.detach().requires_grad_(grad is not None and boxes_grad)
    out = cases.call(case, backend, x, boxes, box_index)
    if grad is None:
        return out, None, None
    inputs = (x, boxes) if boxes_grad else (x,)
    if deterministic:
        with deterministic_algorithms():  # restored afterwards, also when the backward raises
            grads = torch.autograd.grad(out, inputs, grad)
    else:
        grads = torch.autograd.grad(out, inputs, grad)
    return out, grads[0], grads[1] if boxes_grad else None


@pytest.mark.parametrize("backend,device,dtype,contiguity,case,pass_,mode", list(_matrix()))
def test_matches_reference(backend, device, dtype, contiguity, case, pass_, mode):
    x64, boxes64, box_index = cases.inputs(case)
    x = cases.with_layout(x64.to(device, dtype), contiguity)
    boxes = boxes64.to(device, dtype)
    if contiguity == "strided":
        boxes = cases.with_layout(boxes, "strided")
    if box_index is not None:
        box_index = box_index.to(device)
    boxes_grad = cases.gives_boxes_grad(backend, case)
    grad = None
    if pass_ == "bwd":
        out_shape = cases.output_shape(case, x64, boxes64)
        grad = torch.randn(out_shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        grad = cases.with_layout(grad, "channels_last" if contiguity == "channels_last" else "contiguous")
    got = _run(case, backend, x, boxes, box_index, None if grad is None else grad.to(device, dtype), boxes_grad,
               deterministic=mode == "deterministic")
    want = _run(
        case, cases.ORACLE, x.detach().cpu().double(), boxes.detach().cpu().double(),
        None if box_index is None else box_index.cpu(), None if grad is None else grad.to(dtype).double(),
        boxes_grad,
    )
    assert got[0].dtype == dtype and got[0].device.type == device
    if backend not in cases.PEERS:
        layout = torch.channels_last if contiguity == "channels_last" else torch.contiguous_format
        assert got[0].is_contiguous(memory_format=layout), f"forward output is not {layout}"
        if pass_ == "bwd":
            assert got[1].is_contiguous(memory_format=layout), f"input gradient is not {layout}"
    tol = cases.tolerance(backend, dtype)
    cases.assert_close(got[0], want[0], tol, "forward")
    if pass_ == "bwd":
        cases.assert_close(got[1], want[1], tol, "input gradient")
        if boxes_grad:
            cases.assert_close(got[2], want[2], tol, "boxes gradient")
