"""Inputs, backend lists and tolerances shared by the tests: one place that defines the matrix.

Every backend registered in ``impls`` is tested by the same matrix; a backend added to the registry is picked up
here with no new test code. A backend whose record says it cannot run here makes its tests fail, not skip, except
the ``cuda`` device, which is only part of the matrix on a machine with a GPU.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib

import pytest
import torch

from impls.core import tolerance as _tolerance
from impls.core.registry import registered

ORACLE = "reference"
# Other projects' kernels wrapped for comparison: the backends whose record says so.
PEERS = tuple(name for name, backend in registered().items() if backend.peer)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# A test that only means something on a GPU is defined under `if "cuda" in DEVICES:`, so that a CPU machine does
# not collect it at all (pytest turns an empty parameter list into a skipped test, which is not wanted here).
CONTIGUITY = ("contiguous", "strided", "channels_last")
PASSES = ("fwd", "bwd")


def backward_modes(backend: str, device: str, op: str):
    """The image-gradient modes of ``op`` on ``backend`` where it has two (the record's ``grad_modes``), else None:
    by default they add with atomics; torch.use_deterministic_algorithms(True) selects an atomic-free path."""
    record = registered()[backend]
    modes = record.grad_modes(op) if device in record.devices else ()
    return modes if len(modes) > 1 else None


# Allowed error relative to the largest magnitude of the oracle's result, per dtype: the one table, with its
# reasons, that the benchmark's checks share (impls/core/tolerance.py).
TOLERANCE = _tolerance.TOLERANCE
# torchvision computes float16 in float16 (coordinates included): a sample ~10 px from the origin is misplaced by
# up to 10 * 2**-11 = 5e-3 px, and its value by that times the map's slope (~2 here).
PEER_TOLERANCE = {("torchvision", torch.float16): 3e-2}


# Backends that must equal the oracle bit for bit (tolerance 0). cpp in float64: csrc/ evaluates every
# expression of impls/backends/reference.py in the same order (per output element and per gradient element: box,
# channel, cell, sample, corner), in double, compiled without FP contraction or fast-math (setup.py), so each
# rounding is the same. Its speed-ups (channel blocks, exact power-of-two reciprocals) keep that order.
EXACT = {(name, dtype) for name, backend in registered().items() for dtype in backend.bit_exact_dtypes}
# cuda in float64 keeps float64's tolerance in the matrix, though most of it could be exact: its forward and its
# deterministic input gradient (the "pull" of csrc/common/cuda_common.cuh, which sums each pixel's taps in the
# reference's order) evaluate the reference's expressions in double, through the same csrc/common/bilinear.h as cpp, and
# setup.py passes --fmad=false to nvcc, so no multiply-add is fused. The rest cannot be exact: the default input
# gradient adds with atomics (in whatever order the threads arrive) and the box gradient sums per box with a tree
# reduction (another order than the reference's running sum). The bit-exact claim is made where it holds, for the
# deterministic image gradient of both ops, in tests/backends/test_extension.py
# (test_cuda_deterministic_backward_matches_reference).


def tolerance(backend: str, dtype: torch.dtype) -> float:
    if (backend, dtype) in EXACT:
        return 0.0
    return PEER_TOLERANCE.get((backend, dtype), TOLERANCE[dtype])


@dataclasses.dataclass(frozen=True)
class OpCase:
    """One operator configuration of the matrix."""

    id: str
    op: str
    kwargs: tuple  # keyword arguments of the public op besides input and boxes, as sorted pairs
    # Where the boxes lie: "any" (``crop_boxes``/``roi_boxes``: flipped, crossing the border) or "interior" (one box
    # per image, every sample inside the image: where the peers whose record ``differs`` agree with ours).
    boxes: str = "any"

    @property
    def params(self) -> dict:
        return dict(self.kwargs)


def output_shape(case: OpCase, x: torch.Tensor, boxes: torch.Tensor) -> tuple[int, int, int, int]:
    """[K, C, PH, PW] of ``case`` on a feature map ``x`` and ``boxes`` (a tensor)."""
    size = case.params[SIZE_ARGUMENT[case.op]]
    height, width = (size, size) if isinstance(size, int) else size
    return boxes.shape[0], x.shape[1], height, width


def feature_map(seed: int = 0, n: int = 2, c: int = 3, h: int = 9, w: int = 11) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=g, dtype=torch.float64)


def interior_crop_boxes(n: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """One normalized (y1, x1, y2, x2) box per image (box k on image k), every corner in [0.05, 0.95]: all samples
    inside the image, some boxes flipped; random, so no sample lands on a pixel row, where TensorFlow's box
    gradient and ``grid_sample``'s differ (CONVENTIONS.md §8.3)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 4, generator=g, dtype=torch.float64) * 0.9 + 0.05, torch.arange(n)


def crop_boxes(k: int = 6, seed: int = 1, n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized (y1, x1, y2, x2) boxes: some flipped, some reaching outside [0, 1]; random, so no sample
    lands on a rounding tie or a pixel edge where the derivative jumps."""
    g = torch.Generator().manual_seed(seed)
    boxes = torch.rand(k, 4, generator=g, dtype=torch.float64) * 1.4 - 0.2  # [K, 4] in [-0.2, 1.2)
    box_index = torch.randint(0, n, (k,), generator=g)
    return boxes, box_index


def roi_boxes(k: int = 6, seed: int = 2, n: int = 2, h: int = 9, w: int = 11, scale: float = 1.0) -> torch.Tensor:
    """[K, 5] (batch, x1, y1, x2, y2) in image coordinates; some cross the border, one is smaller than a pixel."""
    g = torch.Generator().manual_seed(seed)
    x1 = torch.rand(k, generator=g, dtype=torch.float64) * (w + 2) - 2
    y1 = torch.rand(k, generator=g, dtype=torch.float64) * (h + 2) - 2
    bw = torch.rand(k, generator=g, dtype=torch.float64) * w * 0.8 + 0.3
    bh = torch.rand(k, generator=g, dtype=torch.float64) * h * 0.8 + 0.3
    bw[0], bh[0] = 0.37, 0.61  # sub-pixel box: exercises aligned=False's clamp to 1x1
    batch = torch.randint(0, n, (k,), generator=g).to(torch.float64)
    return torch.stack([batch, x1, y1, x1 + bw, y1 + bh], dim=1) / torch.tensor([1, scale, scale, scale, scale])


def with_layout(x: torch.Tensor, contiguity: str) -> torch.Tensor:
    """The same values as ``x`` in the memory layout named by ``contiguity``."""
    if contiguity == "contiguous":
        return x.contiguous()
    if contiguity == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if contiguity == "strided":  # every other element of a wider tensor
        wide = torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype, device=x.device)
        wide[..., ::2] = x
        out = wide[..., ::2]
        assert not out.is_contiguous()
        return out
    raise ValueError(contiguity)


def supports(backend: str, case: OpCase, device: str, dtype: torch.dtype) -> bool:
    """Whether the matrix runs ``backend`` on ``case``. A peer whose record ``differs`` from ours on part of the op's
    inputs runs the cases of ``interior`` boxes only, where it must agree (the difference is tested as one in
    tests/peers/); every other backend runs the general cases, which hold interior boxes too."""
    record = registered()[backend]
    if not (case.op in record.kernels and device in record.devices and dtype in record.dtypes):
        return False
    return (record.kernels[case.op].differs is not None) == (case.boxes == "interior")


def passes(backend: str, case: OpCase) -> tuple[str, ...]:
    """The matrix's passes for ``backend`` on ``case``: forward only for an inference runtime (no gradient)."""
    return PASSES if registered()[backend].kernels[case.op].input_grad else PASSES[:1]


def gives_boxes_grad(backend: str, case: OpCase) -> bool:
    """Whether the matrix compares box gradients. TensorFlow's nearest box gradient is its bilinear one
    (a documented difference, tested in test_tensorflow_parity), so it is not compared to ours (zero)."""
    if not registered()[backend].kernels[case.op].boxes_grad:
        return False
    return not (backend in PEERS and case.params.get("method") == "nearest")


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> None:
    """|actual - expected| <= tol * max(1, max|expected|), compared in float64."""
    actual = actual.detach().to("cpu", torch.float64)
    expected = expected.detach().to("cpu", torch.float64)
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    err = (actual - expected).abs().max().item() if expected.numel() else 0.0
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol:.1g} x {scale:.3g}"


def full_contract(backend: str, op: str) -> bool:
    """Whether ``backend`` computes ``op`` as CONVENTIONS.md states it on every input, with the image gradient:
    every backend of ours and the peers torchvision and tensorflow. The other peers (an inference runtime without
    gradients, a pure-PyTorch peer that ``differs`` at the border) run in the matrix where they overlap ours and in
    tests/peers/, not in the tests of the whole contract."""
    kernels = registered()[backend].kernels[op]
    return kernels.input_grad and kernels.differs is None


def backends_for(op: str, device: str = "cpu", dtype: torch.dtype | None = None, exclude=()) -> list[str]:
    """Registered backends that implement ``op`` on ``device`` (and ``dtype``) with its ``full_contract``,
    available here or not: an unavailable one fails its tests instead of vanishing from them."""
    return [
        name for name, b in registered().items()
        if op in b.kernels and device in b.devices and (dtype is None or dtype in b.dtypes) and name not in exclude
        and full_contract(name, op)
    ]


def backend_device_params(op: str, dtype: torch.dtype | None = None, exclude=(), devices=None) -> list:
    """``pytest.param(backend, device, id="backend-device")`` for every device in ``devices`` (default
    ``DEVICES``) and every backend of ``backends_for(op, device, dtype, exclude)``: a test parametrized over
    ``"backend,device"`` runs each backend on every device its record lists, cuda only where a GPU exists."""
    return [
        pytest.param(backend, device, id=f"{backend}-{device}")
        for device in (DEVICES if devices is None else devices)
        for backend in backends_for(op, device, dtype, exclude)
    ]


def best_dtype(backend: str) -> torch.dtype:
    """float64 where the backend has it (the peers' tensorflow has only float32)."""
    return torch.float64 if torch.float64 in registered()[backend].dtypes else torch.float32


# ------------------------------------------------------------------------------------------- the operators' cases


def _op_case_modules():
    """Every ``tests/ops/<op>/op_cases.py``, loaded under a name of its own (each is an ``op_cases.py``)."""
    for path in sorted(pathlib.Path(__file__).parent.joinpath("ops").glob("*/op_cases.py")):
        spec = importlib.util.spec_from_file_location(f"op_cases_{path.parent.name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module


# Loaded last: each module builds its cases from OpCase and the box builders above. OPERATORS: op -> its module
# (``OP``, ``SIZE_ARGUMENT``, ``CASES``, ``inputs(case, seed)``, ``call(case, backend, x, boxes, box_index)``).
OPERATORS = {module.OP: module for module in _op_case_modules()}
OP_CASES = tuple(case for module in OPERATORS.values() for case in module.CASES)
# The keyword argument that gives each operator's output size.
SIZE_ARGUMENT = {op: module.SIZE_ARGUMENT for op, module in OPERATORS.items()}


def inputs(case: OpCase, seed: int = 0):
    """float64 (feature map, boxes, box_index or None) for ``case``."""
    return OPERATORS[case.op].inputs(case, seed)


def call(case: OpCase, backend: str, x: torch.Tensor, boxes: torch.Tensor, box_index=None) -> torch.Tensor:
    return OPERATORS[case.op].call(case, backend, x, boxes, box_index)
