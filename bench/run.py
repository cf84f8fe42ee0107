"""``make bench``: run the benchmark suite, save its JSON as ``bench/results/<host>-<date>.json``, write the report.

    python bench/run.py                  # the default matrix (see matrix.py)
    BENCH=full python bench/run.py       # everything (see matrix.py)
    python bench/run.py -k cpp           # extra arguments go to pytest
    python bench/run.py -k roi_align_rotated    # one operator's suite: -k on the test ids (``<op>-<backend>-...``)
    python bench/run.py --side xeon-crop -k crop_and_resize
        # a side run: saved as <host>-<date>-xeon-crop.json, its report and plots under that name (report.py --name);
        # the whole run of the day, its report, plots and the README's tables stay as they are

Exits with pytest's status when the suite fails (the report is then not regenerated). How long pytest took is
added to the JSON (``wall_seconds``), and the report states it beside the machine: how long ``make bench`` takes is
a measurement of one machine, written in its results, not in the source.

The run gets an empty Inductor cache of its own (``TORCHINDUCTOR_CACHE_DIR``, unless set already), so that the
``compiled`` backend's first calls show a cold compile, the same on every run, and not whatever an earlier
process left on disk.

Then ``test_crop_and_resize.py`` runs again, with the same arguments, in a second pytest process under an allocator
that keeps freed pages (``bench/allocator.py``: ``BENCH_ALLOCATOR``, else Debian's jemalloc, else mimalloc from
PyPI; loaded with ``LD_PRELOAD``, checked to keep pages first), sharing the first run's Inductor cache (its
compile times are the first run's). Its rows are appended to the same JSON, each with its ``allocator`` (every row
has one); ``machine_info["keeping_allocator"]`` says which library ran, how it was found and set, and how long that
run took, or why there was none (``reason``). The report tells the two runs' rows apart by ``allocator``.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import allocator  # bench/allocator.py (the script's folder is on sys.path): the standard library only

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"

# The rows timed under both allocators (the module docstring).
ALLOCATOR_TESTS = BENCH_DIR / "test_crop_and_resize.py"
# pytest's exit status when no test was selected (the arguments chose none of ALLOCATOR_TESTS).
NO_TESTS_COLLECTED = 5


def results_path(side: str | None = None) -> Path:
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())
    return RESULTS_DIR / f"{host}-{datetime.date.today().isoformat()}{f'-{side}' if side else ''}.json"


def side_name(argv: list[str]) -> tuple[str | None, list[str]]:
    """``--side NAME`` at the front of the arguments: (NAME, the rest, for pytest); (None, argv) without it."""
    if not argv or argv[0] != "--side":
        return None, argv
    name = argv[1] if len(argv) > 1 else ""
    # A letter in it: a name of digits and dashes could end like a date and pass for the day's whole run.
    if not re.fullmatch(r"[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+)*", name) or not re.search("[A-Za-z]", name):
        raise SystemExit("--side takes a name of letters, digits, '_', '.' and inner '-', with a letter in it, e.g. "
                         "--side xeon-crop")
    return name, argv[2:]


def record_wall_time(path: Path, seconds: float) -> None:
    """Adds the run's wall time (pytest's whole run: inputs, checks, compiles and timing) to its JSON."""
    data = json.loads(path.read_text())
    data["wall_seconds"] = round(seconds, 1)
    path.write_text(json.dumps(data, indent=4))


def pytest_run(target: Path, output: Path, pytest_args: list[str], env: dict[str, str]) -> tuple[int, float]:
    """pytest-benchmark on ``target`` (a folder or a file), its JSON to ``output``: (exit status, seconds)."""
    command = [
        sys.executable, "-m", "pytest", str(target), "-q",
        f"--benchmark-json={output}",
        "--benchmark-group-by=param:op,param:case,param:pass_",
        "--benchmark-columns=median,iqr,min,rounds",
        *pytest_args,
    ]
    print(" ".join(command), flush=True)
    start = time.perf_counter()
    status = subprocess.call(command, cwd=BENCH_DIR.parent, env=env)
    seconds = time.perf_counter() - start
    print(f"pytest finished in {seconds:.0f} s with status {status}", flush=True)
    return status, seconds


def merge_allocator_run(path: Path, second: Path, keeping: dict, seconds: float) -> str | None:
    """Appends the rows of ``second`` (the run under ``keeping``, ``allocator.choose()``) to the results at ``path``
    and records ``keeping`` in its ``machine_info``. Returns None, or why nothing was appended: the second process
    ran under the first one's allocator (the preload did not take)."""
    data, extra = json.loads(path.read_text()), json.loads(second.read_text())
    ran_under = extra["machine_info"].get("allocator")
    if ran_under == data["machine_info"].get("allocator"):
        return f"LD_PRELOAD={keeping['library']} did not take: the second run ran under {ran_under} too"
    data["benchmarks"] += extra["benchmarks"]
    data["machine_info"]["keeping_allocator"] = {
        "name": ran_under, "library": keeping["library"], "found": keeping["found"],
        "settings": extra["machine_info"].get("allocator_settings"), "probe_faults": keeping["probe_faults"],
        "wall_seconds": round(seconds, 1),
    }
    path.write_text(json.dumps(data, indent=4))
    return None


def record_no_allocator_run(path: Path, reason: str) -> None:
    """Says in the results why no row was timed under a second allocator (the report prints it)."""
    print(f"no run under a second allocator: {reason}", flush=True)
    data = json.loads(path.read_text())
    data["machine_info"]["keeping_allocator"] = {"name": None, "reason": reason}
    path.write_text(json.dumps(data, indent=4))


def main(argv: list[str]) -> int:
    side, pytest_args = side_name(argv)
    RESULTS_DIR.mkdir(exist_ok=True)
    output = results_path(side)
    with (tempfile.TemporaryDirectory(prefix="impls-bench-inductor-") as cache,
          tempfile.TemporaryDirectory(prefix="impls-bench-") as scratch):
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": os.environ.get("TORCHINDUCTOR_CACHE_DIR", cache)}
        status, seconds = pytest_run(BENCH_DIR, output, pytest_args, env)
        if status != 0:
            return status
        record_wall_time(output, seconds)
        keeping = allocator.choose()
        if keeping["name"] is None:
            record_no_allocator_run(output, keeping["reason"])
        else:
            second = Path(scratch) / f"{keeping['name']}.json"
            env = allocator.environment(keeping["library"], env)
            status, seconds = pytest_run(ALLOCATOR_TESTS, second, pytest_args, env)
            if status == NO_TESTS_COLLECTED:
                record_no_allocator_run(output, f"the arguments {pytest_args} select no test of {ALLOCATOR_TESTS.name}")
            elif status != 0:
                return status
            else:
                reason = merge_allocator_run(output, second, keeping, seconds)
                if reason:
                    record_no_allocator_run(output, reason)
    named = ["--name", output.stem] if side else []
    return subprocess.call([sys.executable, str(BENCH_DIR / "report.py"), str(output), *named], cwd=BENCH_DIR.parent)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
