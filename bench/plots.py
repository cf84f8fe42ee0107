"""The report's figures (matplotlib, Agg): bars of the median time per head case, and log-log scaling curves.

Small on purpose (100 dpi, a few inches wide): they are committed and shown in the README.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import colors  # noqa: E402  (one colour per backend, one marker per layout, shared with the notebooks)
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402
from results_json import PASS_LABELS, backend_key  # noqa: E402

DPI = 100
SWEEP_AXES = {
    "boxes": ("boxes (K)", lambda row: row["boxes"]),
    "map_size": ("feature-map pixels (H x W)", lambda row: row["map_height"] * row["map_width"]),
}


def _series_label(row: dict) -> str:
    return f"{row['backend']} {row['device']} {row['dtype']}"


def cases_plot(rows: list[dict], op: str, path: Path) -> bool:
    """Horizontal bars, one group per (case, pass), one bar per backend/device/dtype; log time axis."""
    rows = [r for r in rows if r["op"] == op and r["test"] != "test_scaling"]
    if not rows:
        return False
    groups = list(dict.fromkeys((r["case"], r["pass"]) for r in rows))
    series = sorted({(backend_key(r), _series_label(r)) for r in rows})
    bar = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(9.5, 0.9 + 0.22 * len(groups) * len(series)))
    for s, (_, label) in enumerate(series):
        times = {(r["case"], r["pass"]): r["median"] * 1e3 for r in rows if _series_label(r) == label}
        ys = [g + s * bar for g, key in enumerate(groups) if key in times]
        backend = label.split()[0]
        # The backend's colour; channels_last rows hatched, half-precision rows lighter.
        ax.barh(ys, [times[key] for key in groups if key in times], height=bar, label=label,
                color=colors.color(backend), hatch="//" if colors.layout(backend) == "NHWC" else None,
                alpha=1.0 if label.endswith("float32") else 0.55, edgecolor="white")
    ax.set_yticks([g + 0.4 - bar / 2 for g in range(len(groups))])
    ax.set_yticklabels([f"{case} {PASS_LABELS[pass_]}" for case, pass_ in groups], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median time per call (ms, log scale; shorter is faster)")
    ax.set_title(f"{op}: detector head cases", fontsize=10)
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars, never over them
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True


def scaling_plot(rows: list[dict], sweep: str, path: Path) -> bool:
    """Log-log time against the swept size: one panel per (op, pass), one line per backend/device/dtype."""
    rows = [r for r in rows if r.get("sweep") == sweep and r["pass"] != "fwdbwd_boxes"]
    x_label, x_of = SWEEP_AXES[sweep]
    # A curve needs two sizes: a head case alone (say bfloat16 at 512 boxes) is no sweep.
    sizes = defaultdict(set)
    for r in rows:
        sizes[_series_label(r), r["op"], r["pass"]].add(x_of(r))
    rows = [r for r in rows if len(sizes[_series_label(r), r["op"], r["pass"]]) > 1]
    panels = list(dict.fromkeys((r["op"], r["pass"]) for r in rows))
    if not panels:
        return False
    columns = min(len(panels), 2)
    grid_rows = (len(panels) + columns - 1) // columns
    fig, axes = plt.subplots(grid_rows, columns, figsize=(6 * columns, 3.2 * grid_rows), squeeze=False)
    for ax, (op, pass_) in zip(axes.flat, panels):
        mine = [r for r in rows if r["op"] == op and r["pass"] == pass_]
        for _, label in sorted({(backend_key(r), _series_label(r)) for r in mine}):
            # A size can appear twice (a head case is also a sweep point): one point per size.
            points = sorted({x_of(r): r["median"] * 1e3 for r in mine if _series_label(r) == label}.items())
            backend = label.split()[0]
            ax.loglog(*zip(*points), marker=colors.marker(backend), markersize=3, label=label,
                      color=colors.color(backend), alpha=1.0 if label.endswith("float32") else 0.55)
        # Plain numbers (16, 1024) read better than powers of ten on axes spanning two or three decades.
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{op} {PASS_LABELS[pass_]}", fontsize=9)
        ax.set_xlabel(x_label, fontsize=8)
        ax.set_ylabel("median time per call (ms)", fontsize=8)
        ax.grid(which="both", alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes, off the curves
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True
