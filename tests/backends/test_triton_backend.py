"""The ``triton`` backend's own checks, beyond the matrix every backend runs
(``tests/contract/test_backend_matrix.py``):

* where it runs: its record lists the one device its kernels take in this process (the CPU under
  ``TRITON_INTERPRET=1``, which ``make test`` sets, else CUDA), and says why when it cannot run;
* its deterministic image gradient (``torch.use_deterministic_algorithms(True)``), beyond the matrix's tolerance
  check of it (the matrix's ``-bwd-deterministic`` ids): the same bits on a second run, for every op case, dtype
  and layout; in float64 bit for bit with ``reference``, as its forward (both sum in the reference's order);
* tiles: with ``TILE`` shrunk to 16 elements a box spans several programs, the box gradient loops over tiles and
  the gather step over several blocks;
* a tensor on another device than the kernels' raises instead of falling back;
* the kernels compile for NVIDIA GPUs (sm_80, sm_90) without a GPU, with the precision rules visible in their PTX
  (``tests/backends/triton_compile_check.py``): the interpreter alone would not catch code that only it accepts.
"""

import os
import subprocess
import sys
from pathlib import Path

import cases
import pytest
import torch

import impls
from impls.backends.triton import launcher as triton_backend
from impls.core import operators
from impls.core.determinism import deterministic_algorithms
from impls.core.registry import registered

DEVICE = triton_backend.DEVICE
DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


@pytest.fixture
def runs_here():
    """Fails (not skips) a kernel test where the backend cannot run, with the backend's own reason."""
    reason = triton_backend._unavailable_reason()
    if reason is not None:
        pytest.fail(f"triton is unavailable: {reason}")


def _grads(case, backend, x, boxes, box_index, grad, deterministic=False, call=cases.call):
    """Output, input gradient and box gradient of one call (reference runs on the CPU); ``call`` makes it."""
    device = "cpu" if backend == cases.ORACLE else DEVICE
    x = x.detach().to(device).requires_grad_()
    boxes = boxes.detach().to(device).requires_grad_()
    box_index = None if box_index is None else box_index.to(device)
    out = call(case, backend, x, boxes, box_index)
    if deterministic:
        with deterministic_algorithms():
            d_x, d_boxes = torch.autograd.grad(out, (x, boxes), grad.to(device))
    else:
        d_x, d_boxes = torch.autograd.grad(out, (x, boxes), grad.to(device))
    return out, d_x, d_boxes


def _case_inputs(case, dtype, contiguity):
    x64, boxes64, box_index = cases.inputs(case)
    x = cases.with_layout(x64.to(dtype), contiguity)
    grad = torch.randn(cases.output_shape(case, x64, boxes64), generator=torch.Generator().manual_seed(7),
                       dtype=torch.float64)
    grad = cases.with_layout(grad.to(dtype), contiguity)
    return x, boxes64.to(dtype), box_index, grad


# The cases whose operator has triton's deterministic image gradient (the record's grad_modes).
DETERMINISTIC_CASES = [case for case in cases.OP_CASES if "deterministic" in registered()["triton"].grad_modes(case.op)]


def test_record_lists_the_device_its_kernels_take_here():
    row = {r["name"]: r for r in impls.backends()}["triton"]
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    assert row["devices"] == (("cpu",) if interpret else ("cuda",))
    assert row["available"] == (interpret or torch.cuda.is_available()), row["reason"]
    assert set(row["ops"]) == set(row["boxes_grad"]) == set(impls.ops.OPS)
    assert row["dtypes"] == ("float16", "bfloat16", "float32", "float64")


def test_unavailable_without_a_gpu_or_the_interpreter_says_how(monkeypatch):
    monkeypatch.setattr(triton_backend, "INTERPRET", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    reason = triton_backend._unavailable_reason()
    assert reason is not None and "no CUDA GPU" in reason and "TRITON_INTERPRET=1" in reason


def test_a_tensor_on_another_device_raises(runs_here):
    other = "meta" if DEVICE == "cpu" else "cpu"
    x = torch.zeros(1, 1, 4, 4, device=other)
    rois = torch.tensor([[0.0, 0, 0, 2, 2]], device=other)
    with pytest.raises(RuntimeError, match=f"cannot run on {other} here"):
        triton_backend.roi_align_forward(x, rois, 1.0, 2, 2, 1, True)


@pytest.mark.parametrize("contiguity", ("contiguous", "channels_last"))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("case", DETERMINISTIC_CASES, ids=lambda c: c.id)
def test_deterministic_image_gradient_matches_reference(case, dtype, contiguity, runs_here):
    x, boxes, box_index, grad = _case_inputs(case, dtype, contiguity)
    out, d_x, d_boxes = _grads(case, "triton", x, boxes, box_index, grad, deterministic=True)
    again = _grads(case, "triton", x, boxes, box_index, grad, deterministic=True)[1]
    want = _grads(case, cases.ORACLE, x.double(), boxes.double(), box_index, grad.double())
    layout = torch.channels_last if contiguity == "channels_last" else torch.contiguous_format
    assert d_x.dtype == dtype and d_x.is_contiguous(memory_format=layout)
    assert torch.equal(d_x, again), "the deterministic image gradient changed between two runs"
    if dtype == torch.float64:  # the reference's expressions, summed in its order
        assert torch.equal(out.cpu(), want[0]), "float64 forward is not bit-exact with reference"
        assert torch.equal(d_x.cpu(), want[1]), "float64 deterministic image gradient is not bit-exact"
    tol = cases.tolerance("triton", dtype)
    cases.assert_close(d_x, want[1], tol, "deterministic input gradient")
    cases.assert_close(d_boxes, want[2], tol, "boxes gradient")


@pytest.mark.parametrize("case", cases.OP_CASES, ids=lambda c: c.id)
def test_small_tiles_span_several_programs(case, monkeypatch, runs_here):
    # 36 elements per box (3 channels x 12 cells) in tiles of 16: three programs per box in the forward and the
    # atomic gradient, a loop of three tiles in the box gradient, several blocks in the deterministic gather.
    monkeypatch.setattr(triton_backend, "TILE", 16)
    monkeypatch.setattr(triton_backend, "GATHER_BLOCK", 16)
    x, boxes, box_index, grad = _case_inputs(case, torch.float64, "contiguous")
    want = _grads(case, cases.ORACLE, x, boxes, box_index, grad)
    for deterministic in (False, True) if case in DETERMINISTIC_CASES else (False,):
        got = _grads(case, "triton", x, boxes, box_index, grad, deterministic=deterministic)
        for what, a, b in zip(("forward", "input gradient", "boxes gradient"), got, want):
            cases.assert_close(a, b, cases.tolerance("triton", torch.float64), f"{what}, deterministic={deterministic}")


@pytest.mark.parametrize("case,deterministic", [
    pytest.param(case, deterministic, id=f"{case.id}-{'deterministic' if deterministic else 'atomic'}")
    for case in cases.OP_CASES for deterministic in (False, True)
    if not deterministic or case in DETERMINISTIC_CASES
])
def test_compiles_as_one_graph_with_the_eager_results(case, deterministic, runs_here):
    # Under torch.compile each kernel is one opaque operator (impls::triton_*): the graph runs the very kernels
    # eager mode runs, so in float64 the bits agree (the atomic gradient's order may differ on a GPU: float64's
    # tolerance).
    # (torch.compile wants the deterministic setting of the backward in the forward as well.)
    x, boxes, box_index, grad = _case_inputs(case, torch.float64, "contiguous")
    torch._dynamo.reset()
    with deterministic_algorithms(deterministic):
        want = _grads(case, "triton", x, boxes, box_index, grad)
        got = _grads(case, "triton", x, boxes, box_index, grad, call=torch.compile(cases.call, fullgraph=True))
    for what, a, b in zip(("forward", "input gradient", "boxes gradient"), got, want):
        if deterministic or DEVICE == "cpu":
            assert torch.equal(a, b), f"{what}: the compiled graph differs from eager"
        else:
            cases.assert_close(a, b, cases.TOLERANCE[torch.float64], what)


def _operator_args(name):
    """Arguments of the triton operator ``name`` (``<op>_<pass>``) on a small float64 case: its operator's
    ``operator_args`` (``tests/ops/<op>/op_cases.py``) on a [2, 3, 9, 11] map and a [2, 3, 2, 2] gradient."""
    op = max((op for op in cases.OPERATORS if name.startswith(op + "_")), key=len)
    x = cases.feature_map().to(DEVICE)  # [2, 3, 9, 11]
    grad = torch.randn(2, 3, 2, 2, dtype=torch.float64, device=DEVICE)
    return cases.OPERATORS[op].operator_args(name[len(op) + 1:], x, grad)


@pytest.mark.parametrize("name", [n for n in operators.SCHEMAS if not n.startswith("multiscale_")])
def test_operators_pass_opcheck(name, runs_here):
    # Schema, fake kernel (shapes, strides, dtype) and AOT dispatch of the operators torch.compile calls.
    torch.library.opcheck(getattr(torch.ops.impls, f"triton_{name}").default, _operator_args(name))


def test_kernels_compile_for_nvidia_gpus():
    # In a subprocess without TRITON_INTERPRET: under it, triton would hand out interpreted functions.
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    check = Path(__file__).with_name("triton_compile_check.py")
    result = subprocess.run([sys.executable, str(check)], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
