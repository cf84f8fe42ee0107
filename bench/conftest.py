"""The benchmark harness: check, warm up, time with pytest-benchmark, record what the report needs.

Each benchmark (``run_case``):

1. builds its inputs (outside the timer) and runs the call once, asserting it matches a peer (``check.py``);
   that call is also the first warm-up;
2. runs it once more to measure peak memory (``peak_memory.py``) and its duration, from which the rounds are
   chosen: about ``ROUND_BUDGET_S`` seconds of rounds, at least ``MIN_ROUNDS`` (slow calls such as the
   ``vectorized`` backward take seconds each, so a fixed round count would not fit the default run's ~10 minutes);
3. times ``rounds`` calls in pedantic mode, one call per round, CUDA synchronized inside the call (``calls.py``);
4. writes op, backend, device, dtype, case, pass, workload sizes, samples per second, bytes moved, peak memory,
   thread counts and the check's error into ``benchmark.extra_info`` (the report and notebook 3 read them).
"""

from __future__ import annotations

import importlib.metadata
import os
import time

import pytest
import torch

import matrix
from calls import make_call, make_inputs
from check import check_against_peer
from peak_memory import peak_memory
from work import bytes_moved, peak_bandwidth, peak_bandwidth_source, samples

# TensorFlow's multi-threaded CPU image gradient of crop_and_resize races: a few pixels come out wrong by up to
# ~10% of the largest gradient, differently on each run (seen with tensorflow-cpu 2.21 on the P2 case; see
# tensorflow/tensorflow#42033). Op determinism makes it correct (and ~1.5x slower), and a wrong result is not
# worth timing. Set before TensorFlow is first imported (lazily, by impls.peers).
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")

# gpu: ~700 cases in a few minutes; a GPU call takes 0.1-10 ms, so MAX_ROUNDS caps most cases well below 0.3 s.
ROUND_BUDGET_S = {"smoke": 0.2, "default": 1.5, "full": 2.0, "gpu": 0.3}[matrix.MODE]
MIN_ROUNDS = 5
MAX_ROUNDS = 100


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
    )


def _threads(backend: str) -> int:
    """Threads the backend computes with: torch's intra-op pool, or TensorFlow's (0 there means one per core)."""
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    return torch.get_num_threads()


def _rounds(seconds: float) -> int:
    return max(MIN_ROUNDS, min(MAX_ROUNDS, int(ROUND_BUDGET_S / max(seconds, 1e-9))))


@pytest.fixture
def run_case(benchmark):
    """Runs one benchmark from the params ``matrix.ARGNAMES`` (see the module docstring)."""

    def run(op: str, backend: str, device: str, dtype: str, case_id: str, pass_: str) -> None:
        if device == "cuda" and not torch.cuda.is_available():
            pytest.fail("no CUDA GPU here: BENCH_ASSUME_GPU=1 is for --collect-only")
        case = matrix.find(op, backend, device, dtype, case_id, pass_)
        inputs = make_inputs(case)
        call = make_call(backend, pass_, inputs)
        checked = check_against_peer(case, inputs, call())

        start = time.perf_counter()
        peak_bytes, peak_method = peak_memory(call, device)
        rounds = _rounds(time.perf_counter() - start)
        benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=0)

        workload = case.workload
        _, channels, height, width = workload.map_shape
        info = {"op": op, "backend": backend, "device": device, "dtype": dtype, "case": case_id, "pass": pass_}
        info.update(
            level=workload.level, boxes=workload.boxes, output=workload.output,
            sampling_ratio=workload.sampling_ratio, map_scale=workload.map_scale, sweep=matrix.sweep_of(workload),
            channels=channels, map_height=height, map_width=width,
            samples=samples(inputs), bytes_moved=bytes_moved(inputs, pass_),
            peak_memory_bytes=peak_bytes, peak_memory_method=peak_method,
            threads=_threads(backend), torch_threads=torch.get_num_threads(), bench_mode=matrix.MODE,
            **checked,
        )
        if benchmark.stats is not None:  # None under --benchmark-disable
            median = benchmark.stats.stats.median
            info["samples_per_second"] = info["samples"] / median
            info["bytes_per_second"] = info["bytes_moved"] / median
            peak = peak_bandwidth(inputs.image.device)
            if peak is not None:
                info["peak_bandwidth"] = peak
                info["peak_bandwidth_fraction"] = info["bytes_per_second"] / peak
        benchmark.extra_info.update(info)

    return run
