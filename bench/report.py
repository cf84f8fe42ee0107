"""Benchmark results JSON -> ``bench/results/report.md``, PNG plots, and the README's benchmark section.

    python bench/report.py                          # the newest whole run in bench/results/
    python bench/report.py cpu.json gpu.json        # several runs (machines) side by side
    python bench/report.py bench/results/vm-2026-12-07-xeon-crop-bgrad.json --name vm-2026-12-07-xeon-crop-bgrad
        # a side run (one suite, ``bench/run.py -k ...``): <name>-report.md and <name>-<plot>.png beside the whole
        # run's, whose report, plots and README section stay as they are

The tables give pytest-benchmark's median per call and, in brackets, the speed-up over the peer users compare
against (``torchvision`` for roi_align, ``tensorflow`` for crop_and_resize, each timed natively, as its users run
it): peer median / backend median, same run, case and pass, peer in float32. The multi-level pooler
(``multiscale_roi_align``, against ``torchvision.ops.MultiScaleRoIAlign``) has a section of its own: one line per
case and backend, median with IQR, the speed-up with its quartile range, and issue 21's goals beside them. So does
every operator whose benchmark module (``bench/operators/<op>.py``) writes a section of its own
(``report_section``) instead of a head table. Then:
what each backend's timer holds, the bytes each case must move and the share of the machine's measured copy
bandwidth each backend reaches, and the spread of the timings (``vectorized``'s in particular). The README's text
between ``<!-- bench-table:start -->`` and ``<!-- bench-table:end -->`` is replaced with the head-case tables (and the
read-limit table), the multi-level table, the timed regions, one plot and the method; without the markers the README
is left alone.

Where the results have write-limit rows (issue 29; ``matrix.LIMIT_LABELS``), the op's head table is
``write_limit_table`` instead: one line per case, pass and allocator (the run's own, then the one that keeps freed
pages, bench/run.py), each cell also giving the row's share of the write-bandwidth limit of its output, and the
limits and the output's first-touch cost beside them. Where they have read-limit rows (``matrix.READ_LIMIT_LABELS``),
``read_limit_table`` follows: the float32 CPU forwards of ``READ_ROWS``, each as a share of the time it takes to read
the lines its taps touch in its layout. Those rows are read with ``load(..., side_rows=True)``; every other table,
the plots and the speed-ups see the backends' rows under the run's own allocator alone (``results_json.side_row``).

Results written before row labels and timed regions were recorded (bench/results/vm-2026-11-25.json) still
render: their ``tensorflow`` column was timed through our wrapper (conversions included, today's
``tensorflow+convert``), and the report says so under each table that uses it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import operators
import plots
import work
from allocator import HOW_TO_GET
from baseline import BASELINE
from cpu_share import QUIET_LIMIT
from results_json import (
    PASS_LABELS,
    backend_key,
    baseline_median,
    baseline_row,
    impl,
    limit_row,
    load,
    newest,
    side_row,
)

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
README = BENCH_DIR.parent / "README.md"
MARKERS = ("<!-- bench-table:start -->", "<!-- bench-table:end -->")

METHOD = """\
Method: each benchmark is one call of one backend, timed as its users run it (the table of timed regions above):
ours through the public op (`impls.roi_align` / `impls.crop_and_resize` / `impls.MultiScaleRoIAlign` / ..., validation
and autograd included) on NCHW tensors, or channels_last ones (`cpp_nhwc`);
the peers through their own API on their own tensors (`torchvision.ops.roi_align`,
`torchvision.ops.MultiScaleRoIAlign`; TensorFlow's ops on NHWC `tf.Tensor`s made before the timer; onnxruntime's
`InferenceSession` and OpenVINO's infer request, built before the timer with their numpy feeds, forward only;
`F.affine_grid` + `F.grid_sample` and kornia's `crop_and_resize` on torch tensors, kornia on a batch with one box per
image, the only call its API takes), and the TensorFlow peer
through our wrapper as its own row (`tensorflow+convert`). Inputs are fixed-seed Mask R-CNN ones
(`bench/workloads.py`: FPN level, K boxes, PxP head, sampling ratio; crop_and_resize gets the same boxes with a
2Px2P crop; the multi-level pooler two images' P2-P5 maps; an operator with a section of its own says there what it
runs on and against which peers). Before timing, the result (output, or gradients) is
asserted equal to a peer's within a stated tolerance (`bench/check.py`; native results converted to NCHW outside the
timer); that call and a peak-memory call are the warm-up. pytest-benchmark then times whole calls, one per round, for
~1.5 s (at least 5 rounds); CUDA calls end with `torch.cuda.synchronize()`, TensorFlow's eager CPU ops are synchronous.
`fwd+bwd` computes the image gradient only (the work every peer can do); `+boxes` adds box gradients. Times are medians;
speed-up = peer median / backend median. TensorFlow runs with op determinism on (`TF_DETERMINISTIC_OPS=1` and
`tf.config.experimental.enable_op_determinism()`): its default multi-threaded CPU image gradient races and gives wrong
values. The crop_and_resize rows, TensorFlow's included, run twice: under the process's own allocator and, in a second
process, under one that keeps freed pages for the next allocation (`bench/allocator.py`; `import impls` never changes
the allocator). To run under it: """ + "; or ".join(HOW_TO_GET.values()) + "."

# Rows of results written before timed regions were recorded: every backend went through impls.
OLD_TIMED = ("not recorded in this file (written before timed regions were): `impls.{op}(..., backend=\"{backend}\")`"
             " on NCHW tensors, validation and autograd included")
OLD_TENSORFLOW = ("; for `tensorflow` that includes the NCHW -> NHWC numpy copies into TensorFlow and back inside "
                  "every call (today's `tensorflow+convert` row, not the peer's own time)")


def format_time(seconds: float) -> str:
    """3 significant digits: ``0.089 ms``, ``49.3 ms``, ``1.22 s``."""
    if seconds >= 1:
        return f"{seconds:.3g} s"
    ms = seconds * 1e3
    return f"{ms:.3g} ms" if ms >= 1 else f"{ms:.2g} ms"


def _duration(seconds: float) -> str:
    """A run's wall time: ``13 min``, or ``55 s`` under a minute."""
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _fraction(value: float | None) -> str:
    """A share of a bandwidth (measured copy, or a GPU's datasheet peak), ``-`` where unknown."""
    return "-" if value is None else f"{value:.1%}"


def _cell(rows: list[dict], row: dict) -> str:
    baseline = baseline_median(rows, row)
    speedup = f" ({baseline / row['median']:.2f}x)" if baseline else ""
    return format_time(row["median"]) + speedup


def _column(row: dict, runs: list[dict]) -> str:
    label = f"{row['backend']} {row['device']} {row['dtype']}"
    return f"{label} ({runs[row['run']]['machine_info']['node']})" if len(runs) > 1 else label


def _baseline_note(rows: list[dict], op: str) -> str:
    """A warning under a table whose baseline column was timed through our wrapper (results from before)."""
    peer = BASELINE[op]
    converted = any(r["backend"] == peer and r["op"] == op and "native" not in r for r in rows)
    if not converted or peer != "tensorflow":
        return ""
    return ("\n\nNB: in these results the `tensorflow` column (and so every speed-up above) was timed through our "
            "wrapper, NCHW <-> NHWC conversions through numpy included: not TensorFlow's own time (see Timed "
            "regions).")


def head_table(rows: list[dict], runs: list[dict], op: str) -> str:
    """Wide markdown table of the head cases: one line per (case, pass), one column per backend/device/dtype."""
    mine = [r for r in rows if r["op"] == op and r["test"] != "test_scaling"]
    if not mine:
        return ""
    columns = list(dict.fromkeys(_column(r, runs) for r in sorted(mine, key=lambda r: (r["run"], backend_key(r)))))
    lines = [
        f"**{op}**: median time per call (speed-up over {BASELINE[op]})",
        "",
        "| case | pass | " + " | ".join(columns) + " |",
        "|---|---|" + "---:|" * len(columns),
    ]
    for case, pass_ in dict.fromkeys((r["case"], r["pass"]) for r in mine):
        cells = {_column(r, runs): _cell(rows, r) for r in mine if r["case"] == case and r["pass"] == pass_}
        lines.append(f"| {case} | {PASS_LABELS[pass_]} | " + " | ".join(cells.get(c, "-") for c in columns) + " |")
    return "\n".join(lines) + _baseline_note(mine, op)


def _own_allocator(row: dict, runs: list[dict]) -> str | None:
    return runs[row["run"]]["machine_info"].get("allocator")


def _allocator(row: dict, runs: list[dict]) -> str:
    """The allocator ``row`` was timed under: its own field, else its run's (``-`` in results from before either)."""
    return row.get("allocator") or _own_allocator(row, runs) or "-"


# The backend ``auto`` picks on each device once the extension is built: the first-touch cost is set against its
# rows (``write_limit_table``).
OURS = {"cpu": "cpp", "cuda": "cuda"}

WRITE_LIMIT_NOTE = """\
Write limit: `limit_fill` fills, and `limit_copy` copies into, buffers of the sizes the pass writes (the crops; with
a backward also the image gradient, and the box gradient: `MB written`), allocated and written before the timer and
the same every round, in the row's dtype (the bfloat16 columns against bfloat16 buffers): the machine's
write-bandwidth limits for that output. Share = limit median / row median: 100% would be a call that writes its
output as fast as a fill (or a copy) of it. First touch = `fresh_fill` (a new `torch.empty` + fill of each tensor
every round) - `limit_fill`: what a new output's page faults cost when the allocator hands out new pages, as a share
of the median of our rows (the backend `auto` picks). Speed-ups compare rows timed under the same allocator."""


def _allocator_sentence(run: dict) -> str:
    """Which allocators a run's rows were timed under, or why there was no second one."""
    info = run["machine_info"]
    own = info.get("allocator", "the process's own")
    keeping = info.get("keeping_allocator")
    if not keeping:
        return f"`{run['file']}`: every row under {own} (no second allocator run recorded)."
    if keeping.get("name") is None:
        return (f"`{run['file']}`: every row under {own} only; no allocator that keeps freed pages ran: "
                f"{keeping.get('reason')}.")
    settings = ", ".join(f"`{k}={v}`" for k, v in (keeping.get("settings") or {}).items())
    took = f"; that run took {_duration(keeping['wall_seconds'])}" if keeping.get("wall_seconds") else ""
    return (f"`{run['file']}`: under {own} (the process's own) and under {keeping['name']} ({keeping.get('found')}; "
            f"{settings}), in a second pytest process{took}.")


def _keeping(row: dict, runs: list[dict]) -> bool:
    """Whether ``row`` was timed in the second allocator run (under another allocator than its run's own)."""
    return _allocator(row, runs) != (_own_allocator(row, runs) or "-")


def write_limit_table(every: list[dict], runs: list[dict], op: str) -> str:
    """``op``'s head table with its write limits (module docstring), or "" when the results have no limit rows.
    ``every``: the rows of ``load(..., side_rows=True)``."""
    mine = [r for r in every if r["op"] == op and r["test"] != "test_scaling"]
    limits = {(r["run"], _allocator(r, runs), r["device"], r["case"], r["pass"], r["dtype"], r["write_limit"]): r
              for r in mine if r.get("write_limit")}
    if not limits:
        return ""
    rows = [r for r in mine if not limit_row(r)]

    def limit(row: dict, label: str, dtype: str | None = None) -> dict | None:
        """The limit row ``label`` of ``row``'s run, allocator, device, case, pass and dtype (or ``dtype``); a
        deterministic backward writes what the other one does (``matrix.limit_cases``)."""
        pass_ = "fwdbwd" if row["pass"] == "fwdbwd_det" else row["pass"]
        return limits.get((row["run"], _allocator(row, runs), row["device"], row["case"], pass_,
                           dtype or row["dtype"], label))

    def cell(row: dict, same: list[dict]) -> str:
        peer = baseline_median(same, row)
        speedup = f"{peer / row['median']:.2f}x; " if peer else ""
        shares = " / ".join(f"{bound['median'] / row['median']:.0%}" if bound else "-"
                            for bound in (limit(row, "limit_fill"), limit(row, "limit_copy")))
        return f"{format_time(row['median'])} ({speedup}{shares})"

    def per_run(line: list[dict]) -> list[dict]:
        """A row of ``line`` for each of its runs and devices: where the line's float32 limits are read."""
        return list({(r["run"], r["device"]): r for r in line}.values())

    def written(line: list[dict]) -> str:
        fills = [limit(r, "limit_fill", "float32") for r in per_run(line)]
        return "; ".join(f"{fill['written_bytes'] / 1e6:.3g}" for fill in fills if fill) or "-"

    def bounds(line: list[dict]) -> str:
        pairs = [(limit(r, "limit_fill", "float32"), limit(r, "limit_copy", "float32")) for r in per_run(line)]
        return "; ".join(f"{format_time(fill['median'])} / {format_time(copy['median'])}" for fill, copy in pairs
                         if fill and copy) or "-"

    def first_touch(line: list[dict]) -> str:
        texts = []
        for first in per_run(line):
            fresh, fill = limit(first, "fresh_fill", "float32"), limit(first, "limit_fill", "float32")
            ours = [r for r in line if r["run"] == first["run"] and r["device"] == first["device"]
                    and r["dtype"] == "float32" and impl(r) == OURS.get(r["device"])]
            if fresh and fill:
                touch = fresh["median"] - fill["median"]
                texts.append(format_time(touch)
                             + "".join(f", {touch / r['median']:.0%} of {r['backend']}" for r in ours))
        return "; ".join(texts) or "-"

    columns = list(dict.fromkeys(_column(r, runs) for r in sorted(rows, key=lambda r: (r["run"], backend_key(r)))))
    lines = [
        f"**{op}**: median time per call (speed-up over {BASELINE[op]} under the same allocator; share of the "
        "write-bandwidth limit of the call's output: fill / copy), under the process's own allocator and under one "
        "that keeps freed pages, beside the limits and the output's first-touch cost",
        "",
        "| case | pass | allocator | MB written | limit: fill / copy | first touch | " + " | ".join(columns) + " |",
        "|---|---|---|---:|---:|---|" + "---:|" * len(columns),
    ]
    allocators = dict.fromkeys(_allocator(r, runs) for r in sorted(rows, key=lambda r: _keeping(r, runs)))
    for case, pass_ in dict.fromkeys((r["case"], r["pass"]) for r in rows):
        for name in allocators:
            line = [r for r in rows if (r["case"], r["pass"]) == (case, pass_) and _allocator(r, runs) == name]
            if not line:
                continue
            same = [r for r in rows if _allocator(r, runs) == name]
            cells = {_column(r, runs): cell(r, same) for r in line}
            lines.append(f"| {case} | {PASS_LABELS[pass_]} | {name} | {written(line)} | {bounds(line)} "
                         f"| {first_touch(line)} | " + " | ".join(cells.get(c, "-") for c in columns) + " |")
    sentences = " ".join(_allocator_sentence(run) for run in runs)
    return "\n".join(lines) + f"\n\n{WRITE_LIMIT_NOTE} Allocators: {sentences}"


# The forward rows set against a read limit, by row label: the layout their map is read in (ours in each layout;
# TensorFlow's kernel reads its NHWC tf.Tensor).
READ_ROWS = {"cpp": "contiguous", "cpp_nhwc": "channels_last", "tensorflow": "channels_last"}

READ_LIMIT_NOTE = """\
Read limit: `read_nchw` and `read_nhwc` load each cache line of the map that the forward's taps touch in that layout
once (`MB read`), in address order, on torch's threads, with nothing computed or written (`bench/read_lines.cpp`): what
reading them takes on this machine with nothing else to do. Share = limit median / row median: 100% would be a
forward that costs no more than its reads, with its sampling and its output's write hidden under them. The limit
rows run under the process's own allocator only (they allocate nothing of note)."""


def read_limit_table(every: list[dict], runs: list[dict], op: str = "crop_and_resize") -> str:
    """The float32 CPU forwards of ``READ_ROWS`` set against the read limit of their layout (``READ_LIMIT_NOTE``),
    one line per run, case and allocator; "" when the results have no read-limit rows. ``every``: the rows of
    ``load(..., side_rows=True)``."""
    mine = [r for r in every if r["op"] == op and r["device"] == "cpu" and r["dtype"] == "float32"
            and r["pass"] == "fwd" and r["test"] != "test_scaling"]
    limits = {(r["run"], r["case"], r["read_limit"]): r for r in mine if r.get("read_limit")}
    if not limits:
        return ""
    rows = [r for r in mine if r["backend"] in READ_ROWS and not limit_row(r)]
    lines = [
        f"**{op}**, float32 forward on the CPU: median time per call (share of the read limit of the layout its map "
        "is read in: " + ", ".join(f"`{label}` {layout}" for label, layout in READ_ROWS.items()) + ")",
        "",
        "| case | allocator | MB read: NCHW / NHWC | read limit: NCHW / NHWC | " + " | ".join(READ_ROWS) + " |",
        "|---|---|---:|---:|" + "---:|" * len(READ_ROWS),
    ]
    for run, case in dict.fromkeys((run, case) for run, case, _ in limits):
        bounds = [limits.get((run, case, layout)) for layout in ("contiguous", "channels_last")]
        read = " / ".join(f"{b['read_bytes'] / 1e6:.3g}" if b else "-" for b in bounds)
        times = " / ".join(f"{format_time(b['median'])} (IQR {format_time(b['iqr'])})" if b else "-" for b in bounds)
        line = [r for r in rows if (r["run"], r["case"]) == (run, case)]
        for name in dict.fromkeys(_allocator(r, runs) for r in sorted(line, key=lambda r: _keeping(r, runs))):
            cells = []
            for label, layout in READ_ROWS.items():
                row = next((r for r in line if r["backend"] == label and _allocator(r, runs) == name), None)
                bound = limits.get((run, case, layout))
                share = f" ({bound['median'] / row['median']:.0%})" if row and bound else ""
                cells.append(format_time(row["median"]) + share if row else "-")
            lines.append(f"| {case} | {name} | {read} | {times} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n{READ_LIMIT_NOTE}"


def op_table(rows: list[dict], every: list[dict], runs: list[dict], op: str) -> str:
    """``op``'s head-case table: ``write_limit_table`` where the results have limit rows, else ``head_table``."""
    return write_limit_table(every, runs, op) or head_table(rows, runs, op)


MULTISCALE = "multiscale_roi_align"


def head_ops() -> list[str]:
    """The ops with a wide head-case table: every op with a baseline but the multi-level pooler and those with a
    section of their own (``own_sections``)."""
    return [op for op in BASELINE if op != MULTISCALE and op not in operators.with_fact("report_section")]


def own_sections(rows: list[dict], runs: list[dict]) -> list[tuple[str, str]]:
    """(title, text) of each operator's own section (``bench/operators/<op>.py``: ``REPORT_TITLE``,
    ``report_section``) that has rows in the results."""
    sections = [(operators.fact(op, "REPORT_TITLE"), operators.fact(op, "report_section")(rows, runs))
                for op in operators.with_fact("report_section")]
    return [(title, text) for title, text in sections if text]


# Issue 21's goals for the multi-level pooler, stated beside the measurements and not asserted: (device, row
# label, pass, boxes per image or None for every case) -> the speed-up over torchvision's pooler aimed at.
MULTISCALE_GOALS = {
    ("cpu", "cpp", "fwd", None): 6.0,
    ("cpu", "cpp", "fwdbwd", None): 8.0,
    ("cuda", "cuda", "fwd", 1000): 2.0,
}

MULTISCALE_INTRO = """\
FPN detectors pool every box from the pyramid level its size picks. These are Mask R-CNN's poolers
(`bench/workloads.py`, `bench/matrix.py`): P2-P5 maps, proposals whose sizes span every level; the box head at
inference (forward), in training (forward + backward to the four maps) and the mask head (forward + backward). A
case names the pyramid, images x boxes per image, the head and the sampling ratio (`p2p5_2x1000_7x7_sr2`). Ours,
`impls.MultiScaleRoIAlign`, against `torchvision.ops.MultiScaleRoIAlign` (the module torchvision's detection models
call), both called as a detector calls them (the table of timed regions), after a check of the result against the
other's. Median and IQR of the per-call times; speed-up = torchvision's median / the row's, and in brackets its
range over the middle half of both timings (torchvision q1 / row q3 to torchvision q3 / row q1)."""


def _goal(row: dict) -> float | None:
    """The goal (speed-up over torchvision's pooler) ``MULTISCALE_GOALS`` sets for ``row``, or None."""
    per_image = row["boxes"] // row["images"] if row.get("images") else None
    for (device, label, pass_, boxes), goal in MULTISCALE_GOALS.items():
        if (row["device"], row["backend"], row["pass"]) == (device, label, pass_) and boxes in (None, per_image):
            return goal
    return None


def goal_cell(goal: float | None, speedup: float | None) -> str:
    if goal is None or speedup is None:
        return "-"
    if speedup >= goal:
        return f">= {goal:g}x: met"
    return f">= {goal:g}x: missed by {goal / speedup:.2f}x ({speedup / goal:.0%} of it)"


def _goals_sentence() -> str:
    parts = [f"`{label}` on {device.upper()} >= {goal:g}x in {PASS_LABELS[pass_]}"
             + (f" at {boxes} boxes per image" if boxes else "")
             for (device, label, pass_, boxes), goal in MULTISCALE_GOALS.items()]
    return ("Goals (issue 21), speed-ups over torchvision's pooler stated beside the measurements, not asserted: "
            + "; ".join(parts) + ". The goal column says where a row meets its goal, or by how much it misses.")


def multiscale_table(rows: list[dict], runs: list[dict]) -> str:
    """The multi-level pooler's rows: median, IQR, speed-up over torchvision with its quartile range, goal."""
    mine = [r for r in rows if r["op"] == MULTISCALE]
    if not mine:
        return ""
    lines = [MULTISCALE_INTRO, "", _goals_sentence(), "",
             "| case | pass | backend | device | dtype | median | IQR | speed-up over torchvision | goal |",
             "|---|---|---|---|---|---:|---:|---:|---|"]
    cases = list(dict.fromkeys((r["run"], r["case"], r["pass"]) for r in mine))
    for r in sorted(mine, key=lambda r: (cases.index((r["run"], r["case"], r["pass"])), backend_key(r))):
        peer = baseline_row(rows, r)
        speedup = None if peer is None else peer["median"] / r["median"]
        if peer is r:
            ratio = "1 (the peer)"
        elif peer is None:
            ratio = "-"
        else:
            ratio = f"{speedup:.2f}x ({peer['q1'] / r['q3']:.2f}-{peer['q3'] / r['q1']:.2f}x)"
        backend = r["backend"] + (f" ({runs[r['run']]['machine_info']['node']})" if len(runs) > 1 else "")
        lines.append(f"| {r['case']} | {PASS_LABELS[r['pass']]} | {backend} | {r['device']} | {r['dtype']} "
                     f"| {format_time(r['median'])} | {format_time(r['iqr'])} | {ratio} "
                     f"| {goal_cell(_goal(r), speedup)} |")
    return "\n".join(lines)


def timed_table(rows: list[dict]) -> str:
    """backend -> what its timer holds (one line per row label and op), from the rows' ``timed`` field."""
    lines = ["**Timed regions**: what is inside each backend's timer", "", "| backend | op | timed region |",
             "|---|---|---|"]
    seen = dict.fromkeys((r["backend"], r["op"]) for r in sorted(rows, key=lambda r: (backend_key(r), r["op"])))
    for backend, op in seen:
        mine = [r for r in rows if r["backend"] == backend and r["op"] == op]
        timed = next((r["timed"] for r in mine if r.get("timed")), None)
        if timed is None:
            timed = OLD_TIMED.format(op=op, backend=backend) + (OLD_TENSORFLOW if backend == "tensorflow" else "")
        lines.append(f"| {backend} | {op} | {timed.replace('|', '/')} |")
    return "\n".join(lines)


def compile_table(rows: list[dict], full: bool = True) -> str:
    """``compiled``'s first call of each case (in the order they ran) against its median: the first case of each op,
    dtype, grid and pass compiles the graphs it needs (Inductor), later cases reuse them. ``full=False``: the
    summary line alone (the README's)."""
    mine = [r for r in rows if impl(r) == "compiled" and r.get("first_call_s") is not None]
    if not mine:
        return ""
    extra = {id(r): max(r["first_call_s"] - r["median"], 0.0) for r in mine}
    slowest = max(mine, key=lambda r: extra[id(r)])
    summary = (f"**`compiled`: compile time.** Its first calls took {format_time(sum(extra.values()))} beyond the "
               f"steady state, summed over the run's {len(mine)} `compiled` cases (Inductor's on-disk cache emptied "
               f"before the run, so the compiles are cold: what a new user waits once per process); the largest, "
               f"{format_time(extra[id(slowest)])}, on {slowest['op']} {slowest['case']} "
               f"{PASS_LABELS[slowest['pass']]}, "
               f"the first case to compile its graphs. Graphs are shared between cases, so most cases compile "
               f"nothing.")
    if not full:
        return summary + " Per case: [bench/results/report.md](bench/results/report.md)."
    lines = [summary, "", "| op | case | backend | dtype | pass | first call | median | first call - median |",
             "|---|---|---|---|---|---:|---:|---:|"]
    for r in mine:
        lines.append(f"| {r['op']} | {r['case']} | {r['backend']} | {r['dtype']} | {PASS_LABELS[r['pass']]} | "
                     f"{format_time(r['first_call_s'])} | {format_time(r['median'])} | {format_time(extra[id(r)])} |")
    return "\n".join(lines)


def recount_bytes(rows: list[dict]) -> int:
    """Rows written before ``work.BYTES_MODEL`` charged the whole map as read: their bytes, rates and bandwidth
    shares are recomputed in place with today's model (``work.recounted_bytes``). Returns how many changed."""
    changed = 0
    for r in rows:
        moved = work.recounted_bytes(r)
        if moved == r["bytes_moved"]:
            continue
        changed += 1
        r["bytes_moved"] = moved
        r["bytes_per_second"] = moved / r["median"]
        if r.get("copy_bandwidth"):
            r["bandwidth_fraction"] = r["bytes_per_second"] / r["copy_bandwidth"]
        if r.get("peak_bandwidth"):
            r["peak_bandwidth_fraction"] = r["bytes_per_second"] / r["peak_bandwidth"]
    return changed


def _gbs(row: dict) -> str:
    """Achieved GB/s and, where the run measured it, the share of the machine's copy bandwidth."""
    rate = row["bytes_moved"] / row["median"]
    measured = row.get("copy_bandwidth")
    share = f" ({rate / measured:.0%})" if measured else ""
    return f"{rate / 1e9:.3g} GB/s{share}"


def bandwidth_table(rows: list[dict], runs: list[dict], op: str) -> str:
    """Head cases of ``op``: the bytes that must move, and the rate (and share of the measured copy bandwidth) each
    backend reaches."""
    mine = [r for r in rows if r["op"] == op and r["test"] != "test_scaling"]
    if not mine:
        return ""
    columns = list(dict.fromkeys(_column(r, runs) for r in sorted(mine, key=lambda r: (r["run"], backend_key(r)))))
    lines = [
        f"**{op}**: compulsory bytes per call (float32; each tensor read or written once, of the map only the "
        "pixels some tap reads, `bench/work.py`) and the "
        "rate each backend reaches: bytes / median time (share of the measured copy bandwidth)",
        "",
        "| case | pass | MB moved | " + " | ".join(columns) + " |",
        "|---|---|---:|" + "---:|" * len(columns),
    ]
    for case, pass_ in dict.fromkeys((r["case"], r["pass"]) for r in mine):
        group = [r for r in mine if r["case"] == case and r["pass"] == pass_]
        moved = next((r["bytes_moved"] for r in group if r["dtype"] == "float32"), group[0]["bytes_moved"])
        cells = {_column(r, runs): _gbs(r) for r in group}
        lines.append(f"| {case} | {PASS_LABELS[pass_]} | {moved / 1e6:.0f} | "
                     + " | ".join(cells.get(c, "-") for c in columns) + " |")
    return "\n".join(lines)


def bandwidth_header(runs: list[dict]) -> str:
    """The machine's measured copy bandwidth, per run and device, with how it was measured."""
    lines = []
    for run in runs:
        info = run["machine_info"]
        measured = [
            f"{device.upper()} {info[f'{device}_copy_bandwidth'] / 1e9:.3g} GB/s "
            f"({info.get(f'{device}_copy_bandwidth_method', '?')}; IQR "
            f"{info.get(f'{device}_copy_bandwidth_iqr_over_median', float('nan')):.1%} of the median)"
            for device in ("cpu", "cuda") if info.get(f"{device}_copy_bandwidth")
        ]
        if info.get("cuda_peak_bandwidth"):
            measured.append(f"CUDA datasheet peak {info['cuda_peak_bandwidth'] / 1e12:.2f} TB/s "
                            f"({info.get('cuda_peak_bandwidth_source')})")
        lines.append(f"- `{run['file']}`: " + ("; ".join(measured) if measured else
                                                 "no bandwidth measured (results from before it was)"))
    return "\n".join(lines)


def _p2_row(rows: list[dict]) -> dict | None:
    """The row's P2 box-head fwd+bwd in float32 (roi_align, else crop_and_resize): where memory is compared."""
    for op, case in (("roi_align", "p2_k512_7x7_sr2"), ("crop_and_resize", "p2_k512_14x14")):
        for r in rows:
            if (r["op"], r["case"], r["pass"], r["dtype"]) == (op, case, "fwdbwd", "float32") and (
                    r["test"] != "test_scaling"):
                return r
    return None


def _cores(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def stability_table(rows: list[dict], runs: list[dict]) -> str:
    """Per backend column: the spread of its timings (IQR / median over its rounds), the cores it used, the CPU
    its neighbours took while it ran, and its memory and page faults on the P2 box head."""
    lines = [
        "| backend | cases | IQR / median: median over cases | worst (case) | cores used (median) "
        "| neighbours' CPU, cores (median / max) | P2 fwd+bwd: peak MB | P2 fwd+bwd: page faults per call |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    groups = dict.fromkeys(_column(r, runs) for r in sorted(rows, key=lambda r: (r["run"], backend_key(r))))
    for column in groups:
        mine = [r for r in rows if _column(r, runs) == column]
        spreads = sorted((r["iqr"] / r["median"], f"{r['op']} {r['case']} {PASS_LABELS[r['pass']]}") for r in mine)
        middle = spreads[len(spreads) // 2][0]
        worst, where = spreads[-1]
        own = sorted(r["own_cpu"] for r in mine if r.get("own_cpu") is not None)
        neighbour = sorted(r["neighbour_cpu"] for r in mine if r.get("neighbour_cpu") is not None)
        neighbours = f"{neighbour[len(neighbour) // 2]:.2f} / {neighbour[-1]:.2f}" if neighbour else "-"
        p2 = _p2_row(mine)
        peak = f"{p2['peak_memory_bytes'] / 2**20:.0f}" if p2 else "-"
        faults = f"{p2['minor_faults']}" if p2 and p2.get("minor_faults") is not None else "-"
        lines.append(f"| {column} | {len(mine)} | {middle:.1%} | {worst:.1%} ({where}) "
                     f"| {_cores(own[len(own) // 2] if own else None)} | {neighbours} | {peak} | {faults} |")
    return "\n".join(lines)


PEAK_NOTE = """\
Peak MB: the resident memory one call adds above what the process held before it (bench/peak_memory.py); page
faults: the minor faults of that call. TensorFlow's allocator keeps its buffers from one call to the next, so its
rows read ~0 for both once warm: its working set is not measured this way. Cores used: this process's CPU time
over the wall time while the rounds ran (a kernel that runs on one thread reads ~1 whatever `threads` says);
neighbours' CPU: what other processes took meanwhile (bench/cpu_share.py `CpuShare`)."""


def quiet_note(rows: list[dict]) -> str:
    """Whether the machine was quiet while the rounds ran (``neighbour_cpu``, bench/cpu_share.py CpuShare)."""
    measured = [r for r in rows if r.get("neighbour_cpu") is not None]
    if not measured:
        return "Neighbours' CPU was not recorded in these results (written before it was)."
    busy = [r for r in measured if r["neighbour_cpu"] > QUIET_LIMIT]
    if not busy:
        return (f"The machine was quiet: no case ran beside more than {QUIET_LIMIT} cores of other processes' CPU "
                "(`/proc/stat` minus this process).")
    worst = max(busy, key=lambda r: r["neighbour_cpu"])
    return (f"**Not a quiet machine**: {len(busy)} of {len(measured)} cases ran beside other processes using more "
            f"than {QUIET_LIMIT} cores (worst: {worst['neighbour_cpu']:.2f} cores during {worst['op']} "
            f"{worst['case']} {PASS_LABELS[worst['pass']]} {worst['backend']}); their times are inflated, "
            "`vectorized`'s most. Rerun on an idle machine for numbers to publish.")


# Measurements on one machine of why `vectorized`'s CPU timings swing when other processes share the cores.
STABILITY_NOTE = RESULTS_DIR / "vm-2026-11-26-vectorized-stability.md"


def stability_note(rows: list[dict], out_dir: Path) -> str:
    """A link to STABILITY_NOTE when these results have CPU ``vectorized`` rows (the timings it explains), else
    nothing: a GPU report does not carry a CPU machine's findings."""
    if not any(impl(r) == "vectorized" and r["device"] == "cpu" for r in rows):
        return ""
    link = Path(os.path.relpath(STABILITY_NOTE, out_dir.resolve())).as_posix()
    return (f"Why `vectorized`'s CPU timings swing when other processes share the cores, measured on one machine: "
            f"[{STABILITY_NOTE.name}]({link}).")


def detail_table(rows: list[dict], runs: list[dict]) -> str:
    """Long markdown table of every measurement of a backend, sweeps and the second allocator's rows included (each
    speed-up against the peer's row under the same allocator)."""
    lines = [
        "| op | case | pass | backend | device | dtype | allocator | median | IQR | rounds | speed-up | Msamples/s "
        "| GB/s | of copy BW | of peak BW | peak MB | page faults | threads | cores used | neighbours' CPU "
        "| checked against (error) |",
        "|---|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["run"], r["op"], r["test"] == "test_scaling")):
        baseline = baseline_median([x for x in rows if _allocator(x, runs) == _allocator(r, runs)], r)
        speedup = f"{baseline / r['median']:.2f}x" if baseline else "-"
        lines.append(
            f"| {r['op']} | {r['case']} | {PASS_LABELS[r['pass']]} | {r['backend']} | {r['device']} | {r['dtype']} "
            f"| {_allocator(r, runs)} | {format_time(r['median'])} | {format_time(r['iqr'])} | {r['rounds']} "
            f"| {speedup} "
            f"| {r['samples'] / r['median'] / 1e6:.3g} | {r['bytes_moved'] / r['median'] / 1e9:.3g} "
            f"| {_fraction(r.get('bandwidth_fraction'))} | {_fraction(r.get('peak_bandwidth_fraction'))} "
            f"| {r['peak_memory_bytes'] / 2**20:.0f} "
            f"| {'-' if r.get('minor_faults') is None else r['minor_faults']} | {r['threads']} "
            f"| {_cores(r.get('own_cpu'))} | {_cores(r.get('neighbour_cpu'))} "
            f"| {r['peer']} ({r['check_error']:.1e} <= {r['check_tolerance']:g}) |"
        )
    return "\n".join(lines)


def limit_detail_table(every: list[dict], runs: list[dict]) -> str:
    """The write-limit rows (``write_limit_table``), with their spread and page faults per call; "" when none."""
    mine = [r for r in every if r.get("write_limit")]
    if not mine:
        return ""
    lines = ["| op | case | pass | row | device | dtype | allocator | MB written | median | IQR | rounds "
             "| page faults per call |", "|---|---|---|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in sorted(mine, key=lambda r: (r["run"], _keeping(r, runs))):
        lines.append(f"| {r['op']} | {r['case']} | {PASS_LABELS[r['pass']]} | {r['backend']} | {r['device']} "
                     f"| {r['dtype']} | {_allocator(r, runs)} | {r['written_bytes'] / 1e6:.3g} "
                     f"| {format_time(r['median'])} "
                     f"| {format_time(r['iqr'])} | {r['rounds']} "
                     f"| {'-' if r.get('minor_faults') is None else r['minor_faults']} |")
    return "\n".join(lines)


def cpu_description(cpu: dict) -> str:
    """The CPU as py-cpuinfo saw it: its name and cores, the L3 it reports and its widest vector ISA, e.g. "Intel(R)
    Xeon(R) Processor x 2 cores, 480 MiB of L3, AVX-512 and AMX": two hosts with one name can differ in both, and
    a ratio against a peer holds for one machine."""
    parts = [f"{cpu.get('brand_raw', '?')} x {cpu.get('count', '?')} cores"]
    if cpu.get("l3_cache_size"):
        parts.append(f"{cpu['l3_cache_size'] / 2**20:.0f} MiB of L3")
    flags = set(cpu.get("flags", ()))
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    if isa:
        parts.append(f"{isa} and AMX" if "amx_tile" in flags else isa)
    return ", ".join(parts)


def machine_header(runs: list[dict]) -> str:
    lines = []
    for run in runs:
        info, commit = run["machine_info"], run["commit_info"]
        cpu = info.get("cpu", {})
        gpu = info.get("cuda_device") or "none"
        dirty = " (uncommitted changes)" if commit.get("dirty") else ""
        took = f"; the run took {_duration(run['wall_seconds'])}" if run.get("wall_seconds") else ""
        keeping = info.get("keeping_allocator") or {}
        if took and keeping.get("wall_seconds"):
            took += f", then {_duration(keeping['wall_seconds'])} under {keeping['name']}"
        lines.append(
            f"- `{run['file']}`: machine `{info['node']}`, {cpu_description(cpu)}, GPU: {gpu}; "
            f"torch {info.get('torch_version')} ({info.get('torch_threads')} threads), "
            f"torchvision {info.get('torchvision_version')}, tensorflow {info.get('tensorflow_version')}; "
            f"commit `{commit.get('id', '?')[:10]}`{dirty}; {run['datetime']}; `BENCH={info.get('bench_mode')}`{took}"
        )
    return "\n".join(lines)


def write_plots(rows: list[dict], out_dir: Path, prefix: str = "") -> list[str]:
    written = []
    for op in BASELINE:
        if plots.cases_plot(rows, op, out_dir / f"{prefix}{op}_cases.png"):
            written.append(f"{prefix}{op}_cases.png")
    for sweep in plots.SWEEP_AXES:
        if plots.scaling_plot(rows, sweep, out_dir / f"{prefix}scaling_{sweep}.png"):
            written.append(f"{prefix}scaling_{sweep}.png")
    return written


def report_markdown(rows: list[dict], every: list[dict], runs: list[dict], images: list[str], out_dir: Path) -> str:
    """``rows``: the backends' rows under each run's own allocator; ``every``: all rows (``load(side_rows=True)``)."""
    parts = ["# Benchmark report", "", "Generated by `bench/report.py` from:", "", machine_header(runs), ""]
    parts += [op_table(rows, every, runs, op) + "\n" for op in head_ops() if op_table(rows, every, runs, op)]
    read = read_limit_table(every, runs)
    parts += [read, ""] if read else []
    compiled = compile_table(rows)
    parts += [timed_table(rows), ""] + ([compiled, ""] if compiled else [])
    parts += [f"![{name}]({name})" for name in images]
    parts += ["", METHOD, ""]
    multiscale = multiscale_table(rows, runs)
    parts += ["## Multi-level RoIAlign: the FPN pooler", "", multiscale, ""] if multiscale else []
    for title, text in own_sections(rows, runs):
        parts += [f"## {title}", "", text, ""]
    parts += ["## Memory bandwidth: the machine's limit", "",
              "Measured copy bandwidth (`bench/work.py`, once per session):", "", bandwidth_header(runs), "",
              "The bytes are a lower bound (real kernels read corners more than once, partly from cache), so a "
              "share is what a backend reaches at least; 100% would be a kernel running at the speed of a plain "
              "copy of its inputs and outputs.", ""]
    parts += [bandwidth_table(rows, runs, op) + "\n" for op in BASELINE if bandwidth_table(rows, runs, op)]
    note = stability_note(rows, out_dir)
    parts += ["## Spread of the timings", "", quiet_note(rows), "", stability_table(rows, runs), ""]
    parts += [note, ""] if note else []
    backends = [r for r in every if not limit_row(r)]
    parts += ["## Every measurement", "", PEAK_NOTE, "", detail_table(backends, runs), ""]
    limits = limit_detail_table(every, runs)
    parts += ["The write-limit rows (the page faults of one call, this process's):", "", limits, ""] if limits else []
    return "\n".join(parts)


def readme_section(rows: list[dict], every: list[dict], runs: list[dict], images: list[str]) -> str:
    parts = [
        "Produced by `make bench` (`bench/run.py`; `BENCH=full` for the whole matrix) on:",
        "",
        machine_header(runs),
        "",
    ]
    parts += [op_table(rows, every, runs, op) + "\n" for op in head_ops() if op_table(rows, every, runs, op)]
    read = read_limit_table(every, runs)
    parts += [read, ""] if read else []
    multiscale = multiscale_table(rows, runs)
    parts += ["**Multi-level RoIAlign: the FPN pooler**", "", multiscale, ""] if multiscale else []
    for title, text in own_sections(rows, runs):
        parts += [f"**{title}**", "", text, ""]
    compiled = compile_table(rows, full=False)
    parts += [timed_table(rows), "", quiet_note(rows), ""] + ([compiled, ""] if compiled else [])
    parts += [f"![{name}](bench/results/{name})" for name in images if name.startswith("scaling_boxes")]
    parts += ["", METHOD, "", "All measurements, bandwidth shares, the spread of the timings, sweeps and plots: "
              "[bench/results/report.md](bench/results/report.md)."]
    return "\n".join(parts)


def update_readme(section: str, readme: Path) -> bool:
    """Replaces the text between the markers; False (and the README untouched) when they are missing."""
    text = readme.read_text() if readme.exists() else ""
    start, end = MARKERS
    if start not in text or end not in text or text.index(start) > text.index(end):
        return False
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{section}\n{end}{tail}")
    return True


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="*", type=Path, help="pytest-benchmark JSON files (default: the newest)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--name", help="a side run's name: write <name>-report.md and <name>-<plot>.png in --out-dir "
                        "and leave the README alone")
    args = parser.parse_args(argv)

    paths = args.results
    if not paths:
        latest = newest(RESULTS_DIR)  # by the run's own date: a fresh clone gives every file the same mtime
        paths = [latest] if latest else []
    if not paths:
        print(f"no results JSON given and none in {RESULTS_DIR}; run `make bench` first", file=sys.stderr)
        return 1
    every, runs = load(paths, side_rows=True)
    rows = [r for r in every if not side_row(r, runs[r["run"]]["machine_info"])]
    recount_bytes([r for r in every if not limit_row(r)])
    if not rows:
        print(f"{', '.join(map(str, paths))} hold no timed benchmarks (run without --benchmark-disable)",
              file=sys.stderr)
        return 1
    args.out_dir.mkdir(parents=True, exist_ok=True)
    prefix = f"{args.name}-" if args.name else ""
    images = write_plots(rows, args.out_dir, prefix)
    report = args.out_dir / f"{prefix}report.md"
    report.write_text(report_markdown(rows, every, runs, images, args.out_dir))
    print(f"wrote {report} and {', '.join(images)}")
    if args.name:
        print(f"a side run ({args.name}): {args.readme} left unchanged")
        return 0
    if update_readme(readme_section(rows, every, runs, images), args.readme):
        print(f"updated the benchmark section of {args.readme}")
    else:
        print(f"notice: {args.readme} lacks the markers {' and '.join(MARKERS)}; README left unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
