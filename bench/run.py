"""``make bench``: run the benchmark suite, save its JSON as ``bench/results/<host>-<date>.json``, write the report.

    python bench/run.py                  # the default matrix (see matrix.py)
    BENCH=full python bench/run.py       # everything (see matrix.py)
    python bench/run.py -k cpp           # extra arguments go to pytest

Exits with pytest's status when the suite fails (the report is then not regenerated). How long pytest took is
added to the JSON (``wall_seconds``), and the report states it beside the machine: how long ``make bench`` takes is
a measurement of one machine, written in its results, not in the source.

The run gets an empty Inductor cache of its own (``TORCHINDUCTOR_CACHE_DIR``, unless set already), so that the
``compiled`` backend's first calls show a cold compile, the same on every run, and not whatever an earlier
process left on disk.
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

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


def results_path() -> Path:
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())
    return RESULTS_DIR / f"{host}-{datetime.date.today().isoformat()}.json"


def record_wall_time(path: Path, seconds: float) -> None:
    """Adds the run's wall time (pytest's whole run: inputs, checks, compiles and timing) to its JSON."""
    data = json.loads(path.read_text())
    data["wall_seconds"] = round(seconds, 1)
    path.write_text(json.dumps(data, indent=4))


def main(pytest_args: list[str]) -> int:
    RESULTS_DIR.mkdir(exist_ok=True)
    output = results_path()
    command = [
        sys.executable, "-m", "pytest", str(BENCH_DIR), "-q",
        f"--benchmark-json={output}",
        "--benchmark-group-by=param:op,param:case,param:pass_",
        "--benchmark-columns=median,iqr,min,rounds",
        *pytest_args,
    ]
    print(" ".join(command), flush=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="impls-bench-inductor-") as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": os.environ.get("TORCHINDUCTOR_CACHE_DIR", cache)}
        status = subprocess.call(command, cwd=BENCH_DIR.parent, env=env)
    seconds = time.perf_counter() - start
    print(f"pytest finished in {seconds:.0f} s with status {status}", flush=True)
    if status != 0:
        return status
    record_wall_time(output, seconds)
    return subprocess.call([sys.executable, str(BENCH_DIR / "report.py"), str(output)], cwd=BENCH_DIR.parent)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
