"""Reading pytest-benchmark JSON files into flat rows: one per benchmark, its ``extra_info`` plus the statistics
pytest-benchmark computed (median, IQR, min, rounds) and the machine it ran on. Used by the report and the plots.

Rows that are no backend's time under the run's own allocator (``side_row``) are left out unless asked for: the
write-limit rows (``write_limit``: ``limit_fill``, ``limit_copy``, ``fresh_fill``, ``matrix.LIMIT_LABELS``), the
read-limit rows (``read_limit``: ``read_nchw``, ``read_nhwc``, ``matrix.READ_LIMIT_LABELS``; ``limit_row`` says
either) and the rows ``make bench`` times again under a second allocator (``allocator`` other than
``machine_info["allocator"]``, bench/run.py). Only the report's crop_and_resize tables and its list of every
measurement read them, so no plot, speed-up or ranking takes a limit for a backend or mixes two allocators' timings
of one row.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from baseline import BASELINE  # op -> the peer speed-ups are measured against (from the backend records)

# Columns and legends read best with the compiled contenders first and the oracle last, by the registered backend
# (``impl``); a backend's rows side by side: dtype, then its row labels (NCHW, then channels_last; the native peer,
# then the peer through our wrapper).
DISPLAY_ORDER = ("cuda", "triton", "cpp", "compiled", "vectorized", "torchvision", "tensorflow", "onnxruntime",
                 "openvino", "grid_sample", "kornia", "reference")
LABEL_ORDER = ("cuda", "cuda_nhwc", "triton", "cpp", "cpp_nhwc", "cpp_nhwc+convert", "compiled", "compiled_nhwc",
               "vectorized", "torchvision", "tensorflow", "tensorflow+convert", "onnxruntime", "openvino",
               "grid_sample", "kornia", "reference")
DTYPE_ORDER = ("float32", "bfloat16", "float16", "float64")
PASS_LABELS = {"fwd": "fwd", "fwdbwd": "fwd+bwd", "fwdbwd_det": "fwd+bwd (deterministic)",
               "fwdbwd_boxes": "fwd+bwd (+boxes)"}
# The baseline's pass a pass is compared with: torchvision has no deterministic CUDA backward, so a deterministic
# backward is set against its (atomic) one, the time a user would otherwise pay.
BASELINE_PASS = {"fwdbwd_det": "fwdbwd"}


def limit_row(row: dict) -> bool:
    """Whether ``row`` times a limit (a write or a read limit), not a backend (module docstring)."""
    return bool(row.get("write_limit") or row.get("read_limit"))


def side_row(row: dict, machine_info: dict) -> bool:
    """Whether ``row`` (its ``extra_info``) is a limit row or was timed under another allocator than its run's own
    (module docstring). Results from before either existed have neither field: every row is a main one."""
    own = machine_info.get("allocator")
    return limit_row(row) or row.get("allocator", own) != own


def load(paths: list[Path], side_rows: bool = False) -> tuple[list[dict], list[dict]]:
    """(rows, runs): ``rows`` one dict per benchmark (its ``extra_info``, pytest-benchmark's median, mean, IQR and
    quartiles of the rounds, min and rounds), without the ``side_row`` ones unless ``side_rows``; ``runs`` one dict
    per file with its machine and commit."""
    rows, runs = [], []
    for index, path in enumerate(paths):
        data = json.loads(Path(path).read_text())
        runs.append({
            "file": Path(path).name,
            "machine_info": data["machine_info"],
            "commit_info": data.get("commit_info", {}),
            "datetime": data.get("datetime"),
            "wall_seconds": data.get("wall_seconds"),  # written by bench/run.py; absent in older files
        })
        for bench in data["benchmarks"]:
            if "op" not in bench["extra_info"]:  # interrupted (a run cut short) before it recorded what it ran
                continue
            if not side_rows and side_row(bench["extra_info"], data["machine_info"]):
                continue
            stats = bench["stats"]
            rows.append({
                **bench["extra_info"],
                "run": index,
                "test": bench["name"].split("[")[0],
                "median": stats["median"],
                "mean": stats["mean"],
                "iqr": stats["iqr"],
                "q1": stats["q1"],
                "q3": stats["q3"],
                "min": stats["min"],
                "rounds": stats["rounds"],
            })
    return rows, runs


def impl(row: dict) -> str:
    """The registered backend behind a row's label (``cpp`` for ``cpp_nhwc``); results written before row labels
    existed have only ``backend``."""
    return row.get("impl") or row["backend"]


def backend_key(row: dict) -> tuple:
    """Sort key: display order of the registered backend, then device, dtype and row label (``cpp`` float32,
    ``cpp_nhwc`` float32, ``cpp`` bfloat16, ...)."""
    def rank(order: tuple[str, ...], name: str) -> int:
        return order.index(name) if name in order else len(order)

    return (rank(DISPLAY_ORDER, impl(row)), impl(row), row["device"], rank(DTYPE_ORDER, row["dtype"]),
            rank(LABEL_ORDER, row["backend"]), row["backend"])


def baseline_row(rows: list[dict], row: dict) -> dict | None:
    """The baseline peer's row for the same run, op, case and pass (``BASELINE_PASS``: its atomic backward for a
    deterministic one): float32, on the row's device if the peer runs there (torchvision on CUDA), else on the CPU
    (tensorflow). None when the peer lacks the pass."""
    peer = BASELINE[row["op"]]
    pass_ = BASELINE_PASS.get(row["pass"], row["pass"])
    candidates = {
        r["device"]: r
        for r in rows
        if r["backend"] == peer and r["dtype"] == "float32" and r["run"] == row["run"]
        and r["op"] == row["op"] and r["case"] == row["case"] and r["pass"] == pass_
    }
    return candidates.get(row["device"], candidates.get("cpu"))


def baseline_median(rows: list[dict], row: dict) -> float | None:
    """The median of :func:`baseline_row`, None where there is none."""
    peer = baseline_row(rows, row)
    return None if peer is None else peer["median"]


# --- For the report and the notebooks: the newest results file, its rows with quartiles, speed-ups with spread. ---


# A whole run's file, as bench/run.py names it: <host>-<YYYY-MM-DD>.json. One suite run alone is saved with the suite
# after the date (vm-2026-12-06-multiscale.json) and is never taken for the whole run.
WHOLE_RUN = re.compile(r".+-\d{4}-\d{2}-\d{2}\.json")


def newest(directory: Path) -> Path | None:
    """The whole run (``WHOLE_RUN``) in ``directory`` with the latest ``datetime`` (file time breaks ties); None if
    none."""
    best = None
    for path in Path(directory).glob("*.json"):
        if not WHOLE_RUN.fullmatch(path.name):
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("benchmarks"), list):
            key = (str(data.get("datetime", "")), path.stat().st_mtime)
            if best is None or key > best[0]:
                best = (key, path)
    return None if best is None else best[1]


def read_run(path: Path) -> tuple[list[dict], dict]:
    """(rows, run) of one file: :func:`load`'s."""
    rows, runs = load([path])
    return rows, runs[0]


def run_title(run: dict) -> str:
    """``machine, N threads, commit abc1234, 2026-11-26``: what a figure's title says about where it was measured."""
    info, commit = run["machine_info"], run.get("commit_info") or {}
    cpu = (info.get("cpu") or {}).get("brand_raw", "")
    threads = info.get("torch_threads", "?")
    dirty = "+dirty" if commit.get("dirty") else ""
    return (f"{info.get('node', '?')} ({cpu}, {info.get('cpu_count', '?')} cores), {threads} threads, "
            f"commit {str(commit.get('id', '?'))[:7]}{dirty}, {str(run.get('datetime') or '?')[:10]}")


def find(rows: list[dict], **fields) -> dict | None:
    """The one row whose fields equal ``fields`` (None when there is none; an error when there are several)."""
    hits = [r for r in rows if all(r.get(k) == v for k, v in fields.items())]
    if len(hits) > 1:
        raise ValueError(f"{len(hits)} rows match {fields}")
    return hits[0] if hits else None


def speedups(rows: list[dict], backends: dict[str, tuple[str, ...]], dtype: str = "float32") -> list[dict]:
    """Speed-up of each backend over its op's peer, on the same case, pass and device: one dict per pair.

    ``backends``: op -> the row labels to compare (e.g. ``{"roi_align": ("cpp", "cpp_nhwc")}``); the peer is
    :data:`BASELINE` (the native peer row, e.g. ``tensorflow`` timed on NHWC ``tf.Tensor``\\ s). ``speedup`` is
    peer median / backend median; ``low`` and ``high`` bound it by the quartiles (peer q1 / backend q3 and
    peer q3 / backend q1), so a claim that holds at ``low`` holds across the middle half of both timings.
    Head cases only (``test_scaling`` rows are sweeps).
    """
    out = []
    for r in rows:
        if r["test"] == "test_scaling" or r["dtype"] != dtype or r["backend"] not in backends.get(r["op"], ()):
            continue
        peer = find(rows, test=r["test"], op=r["op"], case=r["case"], device=r["device"], dtype="float32",
                    backend=BASELINE[r["op"]], run=r["run"], **{"pass": BASELINE_PASS.get(r["pass"], r["pass"])})
        if peer is None:
            continue
        out.append({"op": r["op"], "case": r["case"], "pass": r["pass"], "backend": r["backend"],
                    "peer": peer["backend"], "speedup": peer["median"] / r["median"],
                    "low": peer["q1"] / r["q3"], "high": peer["q3"] / r["q1"]})
    return out


def skew(rows: list[dict], threshold: float = 0.2) -> list[dict]:
    """Rows whose mean is more than ``threshold`` away from their median (outliers pull the mean)."""
    return [r for r in rows if abs(r["mean"] / r["median"] - 1) > threshold]
