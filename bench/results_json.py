"""Reading pytest-benchmark JSON files into flat rows: one per benchmark, its ``extra_info`` plus the statistics
pytest-benchmark computed (median, IQR, min, rounds) and the machine it ran on. Used by the report and the plots.
"""

from __future__ import annotations

import json
from pathlib import Path

BASELINE = {"roi_align": "torchvision", "crop_and_resize": "tensorflow"}  # speed-up is measured against these
# Columns and legends read best with the compiled contenders first and the oracle last, by the registered backend
# (``impl``); a backend's rows side by side: dtype, then its row labels (NCHW, then channels_last; the native peer,
# then the peer through our wrapper).
DISPLAY_ORDER = ("cuda", "triton", "cpp", "compiled", "vectorized", "torchvision", "tensorflow", "reference")
LABEL_ORDER = ("cuda", "cuda_nhwc", "triton", "cpp", "cpp_nhwc", "compiled", "vectorized", "torchvision",
               "tensorflow", "tensorflow+convert", "reference")
DTYPE_ORDER = ("float32", "bfloat16", "float16", "float64")
PASS_LABELS = {"fwd": "fwd", "fwdbwd": "fwd+bwd", "fwdbwd_det": "fwd+bwd (deterministic)",
               "fwdbwd_boxes": "fwd+bwd (+boxes)"}
# The baseline's pass a pass is compared with: torchvision has no deterministic CUDA backward, so a deterministic
# backward is set against its (atomic) one, the time a user would otherwise pay.
BASELINE_PASS = {"fwdbwd_det": "fwdbwd"}


def load(paths: list[Path]) -> tuple[list[dict], list[dict]]:
    """(rows, runs): ``rows`` one dict per benchmark; ``runs`` one dict per file with its machine and commit."""
    rows, runs = [], []
    for index, path in enumerate(paths):
        data = json.loads(Path(path).read_text())
        runs.append({
            "file": Path(path).name,
            "machine_info": data["machine_info"],
            "commit_info": data.get("commit_info", {}),
            "datetime": data.get("datetime"),
        })
        for bench in data["benchmarks"]:
            if "op" not in bench["extra_info"]:  # interrupted (a run cut short) before it recorded what it ran
                continue
            stats = bench["stats"]
            rows.append({
                **bench["extra_info"],
                "run": index,
                "test": bench["name"].split("[")[0],
                "median": stats["median"],
                "iqr": stats["iqr"],
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


def baseline_median(rows: list[dict], row: dict) -> float | None:
    """The baseline peer's median for the same run, op, case and pass (``BASELINE_PASS``: its atomic backward for a
    deterministic one): float32, on the row's device if the peer runs there (torchvision on CUDA), else on the CPU
    (tensorflow). None when the peer lacks the pass."""
    peer = BASELINE[row["op"]]
    pass_ = BASELINE_PASS.get(row["pass"], row["pass"])
    candidates = {
        r["device"]: r["median"]
        for r in rows
        if r["backend"] == peer and r["dtype"] == "float32" and r["run"] == row["run"]
        and r["op"] == row["op"] and r["case"] == row["case"] and r["pass"] == pass_
    }
    return candidates.get(row["device"], candidates.get("cpu"))
