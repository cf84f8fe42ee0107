"""The benchmark harness: check, warm up, time with pytest-benchmark, record what the report needs.

Each benchmark (``run_case``):

1. builds its inputs (outside the timer) and runs the call once, asserting it matches a peer (``check.py``, on
   the results converted to NCHW torch tensors outside the timer); that call is also the first warm-up, and its
   duration is recorded (``first_call_s``: for ``compiled``, Inductor's compile time shows there);
2. runs it once more to measure peak memory (``peak_memory.py``), the minor page faults of one call (CPU) and its
   duration, from which the rounds are chosen: about ``ROUND_BUDGET_S`` seconds of rounds, at least
   ``MIN_ROUNDS`` (calls differ in duration by orders of magnitude between backends and devices, so a fixed round
   count would time the fast ones too few times or the slow ones for too long);
3. times ``rounds`` calls in pedantic mode, one call per round, after ``WARMUP_ROUNDS`` more untimed ones for the
   backends that need them, CUDA synchronized inside the call (``calls.py``: what each row's timer holds);
4. writes op, backend (the row label) and the registered backend behind it, layout, what is timed, device, dtype,
   case, pass, workload sizes, samples per second, bytes moved and the fraction of the machine's measured copy
   bandwidth they reach, peak memory, page faults, thread counts and the check's error into
   ``benchmark.extra_info`` (the report and notebook 3 read them).

The machine's memory bandwidth is measured once per session and device (``machine_bandwidth``, a copy benchmark:
``work.copy_bandwidth``) and recorded in ``machine_info`` and in every row. So is the allocator the process runs
under (``allocator``: ``bench/allocator.py``; ``make bench`` times the crop_and_resize rows a second time under one
that keeps freed pages).

A write-limit row (``run_limit``; ``matrix.limit_cases``) has no inputs and no check: it builds its buffers, runs
twice untimed (counting the page faults of the second call) and is timed as above, for ``LIMIT_BUDGET_S``; its
``extra_info`` says which limit (``write_limit``), the shapes and bytes written, the workload and the allocator, and
no rates (it is no backend). A read-limit row (``run_read_limit``; ``matrix.read_limit_cases``) the same way, with
the lines it reads built first (``work.touched_lines``, untimed): ``read_limit`` (its layout), the lines and bytes
read.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import resource
import sys
import time

import allocator
import matrix
import pytest
import torch
from calls import limit_call, make_call, make_inputs, read_limit_call, timed_region
from check import check_against_peer
from cpu_share import CpuShare
from peak_memory import peak_memory
from work import (
    BYTES_MODEL,
    LINE_BYTES,
    bytes_moved,
    copy_bandwidth,
    copy_buffer_bytes,
    peak_bandwidth,
    peak_bandwidth_source,
    samples,
    touched_lines,
    written_shapes,
)
from workloads import crop_and_resize_inputs

# TensorFlow's multi-threaded CPU image gradient of crop_and_resize races: a few pixels come out wrong by up to
# ~10% of the largest gradient, differently on each run (seen with tensorflow-cpu 2.21 on the P2 case). Op
# determinism makes it correct (and slower), and a wrong result is not worth timing. Set before TensorFlow is first
# imported (lazily, by impls.backends.peers.tensorflow).
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")

# Seconds of timed rounds per case, about (at least MIN_ROUNDS, at most MAX_ROUNDS). gpu: the matrix has the most
# cases and its calls are short, so MAX_ROUNDS ends most of them before the budget.
ROUND_BUDGET_S = {"smoke": 0.2, "default": 1.5, "full": 2.0, "gpu": 0.3}[matrix.MODE]
MIN_ROUNDS = 5
MAX_ROUNDS = 100
# The write-limit rows' budget: their calls are a plain fill or copy of at most a few hundred MB, so a third of a
# case's budget still gives most of them MAX_ROUNDS rounds.
LIMIT_BUDGET_S = ROUND_BUDGET_S / 3
# Untimed calls before the timed rounds, beyond the check and the peak-memory call, by registered backend. None
# needed so far: on the P2 box head, vectorized's first timed rounds were no slower than its later ones (its swings
# came from neighbouring processes, not from warming up: CpuShare, the report's spread section and
# bench/results/vm-2026-11-26-vectorized-stability.md).
WARMUP_ROUNDS: dict[str, int] = {}

# The machine's measured copy bandwidth, by device type (``machine_bandwidth``), for machine_info.
_BANDWIDTH: dict[str, dict] = {}
# The allocator this process runs under (its libraries are mapped at start, before any import).
ALLOCATOR = allocator.in_use()


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info.update(
        bench_mode=matrix.MODE,
        torch_version=torch.__version__,
        torchvision_version=_version("torchvision"),
        tensorflow_version=_version("tensorflow-cpu") or _version("tensorflow"),
        torch_threads=torch.get_num_threads(),
        cpu_count=os.cpu_count(),
        cuda_device=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        cuda_peak_bandwidth=peak_bandwidth(torch.device("cuda")) if torch.cuda.is_available() else None,
        cuda_peak_bandwidth_source=(
            peak_bandwidth_source(torch.device("cuda")) if torch.cuda.is_available() else None
        ),
        tf_deterministic_ops=os.environ.get("TF_DETERMINISTIC_OPS"),
        allocator=ALLOCATOR["name"],
        allocator_library=ALLOCATOR["library"],
        allocator_settings=allocator.settings(ALLOCATOR["library"], dict(os.environ)) if ALLOCATOR["library"] else None,
        **_tensorflow_settings(),
    )
    for device, measured in _BANDWIDTH.items():
        machine_info[f"{device}_copy_bandwidth"] = measured["bytes_per_second"]
        machine_info[f"{device}_copy_bandwidth_method"] = measured["method"]
        machine_info[f"{device}_copy_bandwidth_iqr_over_median"] = measured["iqr_over_median"]
        machine_info[f"{device}_copy_buffer_bytes"] = measured["buffer_bytes"]
        if measured.get("llc_bytes"):
            machine_info[f"{device}_llc_bytes"] = measured["llc_bytes"]


def _tensorflow_settings() -> dict:
    """TensorFlow's op determinism and eager mode, when the session imported it (never imports it)."""
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return {}
    from tensorflow.python.framework import config as tf_config

    return {
        "tf_op_determinism": tf_config.is_op_determinism_enabled(),
        "tf_synchronous_execution": tf.config.experimental.get_synchronous_execution(),
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
    }


@pytest.fixture(scope="session")
def machine_bandwidth():
    """``device type -> work.copy_bandwidth(...)``, measured on first use of each device, once per session."""

    def measure(device: str) -> dict:
        if device not in _BANDWIDTH:
            where = torch.device(device)
            _BANDWIDTH[device] = copy_bandwidth(
                where, copy_buffer_bytes(where, small=matrix.MODE == "smoke"), runs=3 if matrix.MODE == "smoke" else 7
            )
        return _BANDWIDTH[device]

    return measure


def _threads(backend: str) -> int:
    """Threads the (registered) backend computes with: torch's intra-op pool, or TensorFlow's (0 there means one
    per core)."""
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    if backend in ("onnxruntime", "openvino"):  # their own pools, one thread per core by default
        return os.cpu_count()
    return torch.get_num_threads()


def _rounds(seconds: float, budget: float = ROUND_BUDGET_S) -> int:
    return max(MIN_ROUNDS, min(MAX_ROUNDS, int(budget / max(seconds, 1e-9))))


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _timed_rounds(benchmark, run, rounds: int, warmup: int = 0) -> CpuShare:
    """pytest-benchmark's rounds of ``run``, one call each; returns the CPU shares measured meanwhile."""
    with CpuShare() as share:
        benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=warmup)
    return share


def _find(op: str, backend: str, device: str, dtype: str, case_id: str, pass_: str) -> matrix.Case:
    if device == "cuda" and not torch.cuda.is_available():
        pytest.fail("no CUDA GPU here: BENCH_ASSUME_GPU=1 is for --collect-only")
    return matrix.find(op, backend, device, dtype, case_id, pass_)


def _row_info(case: matrix.Case, share: CpuShare) -> dict:
    """The fields every row records: its params, the workload's sizes, the CPU shares, threads, mode, allocator."""
    workload = case.workload
    _, channels, height, width = workload.map_shape
    return {
        "op": case.op, "backend": case.backend, "device": case.device, "dtype": case.dtype, "case": case.case_id,
        "pass": case.pass_, "level": workload.level, "images": workload.map_shape[0], "boxes": workload.boxes,
        "output": workload.output, "sampling_ratio": workload.sampling_ratio, "map_scale": workload.map_scale,
        "sweep": matrix.sweep_of(workload), "channels": channels, "map_height": height, "map_width": width,
        "own_cpu": share.own, "neighbour_cpu": share.neighbour, "steal_cpu": share.steal,
        "torch_threads": torch.get_num_threads(), "bench_mode": matrix.MODE, "allocator": ALLOCATOR["name"],
    }


@pytest.fixture
def run_case(benchmark, machine_bandwidth):
    """Runs one benchmark from the params ``matrix.ARGNAMES`` (see the module docstring)."""

    def run(op: str, backend: str, device: str, dtype: str, case_id: str, pass_: str) -> None:
        case = _find(op, backend, device, dtype, case_id, pass_)
        measured = machine_bandwidth(device)
        inputs = make_inputs(case)
        call = make_call(backend, pass_, inputs)
        first = time.perf_counter()
        checked = check_against_peer(case, inputs, call.results())
        # The first call of this case in the process (with the check's conversion, outside any timer of note):
        # for ``compiled`` the first case of each op and grid also compiles its graphs (the report's compile table).
        first_call_s = time.perf_counter() - first

        start = time.perf_counter()
        faults = _minor_faults()
        peak_bytes, peak_method = peak_memory(call.run, device)
        faults = _minor_faults() - faults
        rounds = _rounds(time.perf_counter() - start)
        warmup = WARMUP_ROUNDS.get(case.variant.backend, 0)
        share = _timed_rounds(benchmark, call.run, rounds, warmup)

        info = _row_info(case, share)
        info.update(
            impl=case.variant.backend, layout=case.variant.layout, native=case.variant.native,
            timed=timed_region(backend, op),
            samples=samples(inputs), bytes_moved=bytes_moved(inputs, pass_), bytes_model=BYTES_MODEL,
            peak_memory_bytes=peak_bytes, peak_memory_method=peak_method,
            # Minor page faults of the peak-memory call (the process's, so TensorFlow's pool threads count too).
            minor_faults=faults if device == "cpu" else None,
            first_call_s=first_call_s, warmup_rounds=warmup,
            threads=_threads(case.variant.backend),
            copy_bandwidth=measured["bytes_per_second"], copy_bandwidth_method=measured["method"],
            **checked,
        )
        if benchmark.stats is not None:  # None under --benchmark-disable
            median = benchmark.stats.stats.median
            info["samples_per_second"] = info["samples"] / median
            info["bytes_per_second"] = info["bytes_moved"] / median
            info["bandwidth_fraction"] = info["bytes_per_second"] / measured["bytes_per_second"]
            peak = peak_bandwidth(torch.device(device))
            if peak is not None:
                info["peak_bandwidth"] = peak
                info["peak_bandwidth_fraction"] = info["bytes_per_second"] / peak
        benchmark.extra_info.update(info)

    return run


@pytest.fixture
def run_limit(benchmark):
    """Times one write-limit row from the params ``matrix.ARGNAMES`` (``matrix.limit_cases``; module docstring)."""

    def run(op: str, backend: str, device: str, dtype: str, case_id: str, pass_: str) -> None:
        case = _find(op, backend, device, dtype, case_id, pass_)
        shapes = written_shapes(case.workload, pass_)
        call = limit_call(backend, shapes, case.torch_dtype, device)
        # Untimed: even under an allocator that keeps freed pages, a fresh_fill's first call gets new ones; the
        # faults of the next call are the steady state's.
        call.run()
        start = time.perf_counter()
        faults = _minor_faults()
        call.run()
        faults = _minor_faults() - faults
        share = _timed_rounds(benchmark, call.run, _rounds(time.perf_counter() - start, LIMIT_BUDGET_S))

        info = _row_info(case, share)
        info.update(
            impl=backend, write_limit=backend, timed=timed_region(backend, op),
            written_shapes=[list(shape) for shape in shapes],
            written_bytes=sum(math.prod(shape) for shape in shapes) * case.torch_dtype.itemsize,
            minor_faults=faults if device == "cpu" else None,  # of one untimed call
            threads=torch.get_num_threads(),
        )
        benchmark.extra_info.update(info)

    return run


@pytest.fixture
def run_read_limit(benchmark):
    """Times one read-limit row from the params ``matrix.ARGNAMES`` (``matrix.read_limit_cases``; module
    docstring)."""

    def run(op: str, backend: str, device: str, dtype: str, case_id: str, pass_: str) -> None:
        case = _find(op, backend, device, dtype, case_id, pass_)
        layout = matrix.READ_LIMIT_LABELS[backend]
        boxes, box_index, kwargs = crop_and_resize_inputs(case.workload)
        lines = touched_lines(case.workload.map_shape, boxes, box_index, kwargs["crop_size"], layout)
        call = read_limit_call(backend, case.workload, lines)
        start = time.perf_counter()
        call.run()
        share = _timed_rounds(benchmark, call.run, _rounds(time.perf_counter() - start, LIMIT_BUDGET_S))

        info = _row_info(case, share)
        info.update(impl=backend, read_limit=layout, timed=timed_region(backend, op), lines_read=len(lines),
                    read_bytes=len(lines) * LINE_BYTES, threads=torch.get_num_threads())
        benchmark.extra_info.update(info)

    return run
