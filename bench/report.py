"""Benchmark results JSON -> ``bench/results/report.md``, PNG plots, and the README's benchmark section.

    python bench/report.py                          # the newest bench/results/*.json
    python bench/report.py cpu.json gpu.json        # several runs (machines) side by side

The tables give pytest-benchmark's median per call and, in brackets, the speed-up over the peer users compare
against (``torchvision`` for roi_align, ``tensorflow`` for crop_and_resize): peer median / backend median, same
run, case and pass, peer in float32. The README's text between ``<!-- bench-table:start -->`` and
``<!-- bench-table:end -->`` is replaced with the head-case tables, one plot and the method; without the markers
the README is left alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import plots
from results_json import BASELINE, PASS_LABELS, backend_key, baseline_median, load

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
README = BENCH_DIR.parent / "README.md"
MARKERS = ("<!-- bench-table:start -->", "<!-- bench-table:end -->")

METHOD = """\
Method: each benchmark is one call of the public op (`impls.roi_align` / `impls.crop_and_resize`, validation and
autograd included) on fixed-seed Mask R-CNN inputs (`bench/workloads.py`: FPN level, K boxes, PxP head, sampling
ratio; crop_and_resize gets the same boxes with a 2Px2P crop). Before timing, the result (output, or gradients) is
asserted equal to a peer's within a stated tolerance (`bench/check.py`); that call and a peak-memory call are the
warm-up. pytest-benchmark then times whole calls, one per round, for ~1.5 s (at least 5 rounds); CUDA calls end
with `torch.cuda.synchronize()`. `fwd+bwd` computes the image gradient only (the work every peer can do);
`+boxes` adds box gradients. Times are medians; speed-up = peer median / backend median. TensorFlow runs with
`TF_DETERMINISTIC_OPS=1`: its default multi-threaded CPU image gradient races and gives wrong values
(tensorflow/tensorflow#42033)."""


def _time(seconds: float) -> str:
    """3 significant digits: ``0.089 ms``, ``49.3 ms``, ``1.22 s``."""
    if seconds >= 1:
        return f"{seconds:.3g} s"
    ms = seconds * 1e3
    return f"{ms:.3g} ms" if ms >= 1 else f"{ms:.2g} ms"


def _fraction(value: float | None) -> str:
    """The share of the memory's peak bandwidth (GPUs), ``-`` where unknown (CPUs)."""
    return "-" if value is None else f"{value:.1%}"


def _cell(rows: list[dict], row: dict) -> str:
    baseline = baseline_median(rows, row)
    speedup = f" ({baseline / row['median']:.2f}x)" if baseline else ""
    return _time(row["median"]) + speedup


def _column(row: dict, runs: list[dict]) -> str:
    label = f"{row['backend']} {row['device']} {row['dtype']}"
    return f"{label} ({runs[row['run']]['machine_info']['node']})" if len(runs) > 1 else label


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
    return "\n".join(lines)


def detail_table(rows: list[dict], runs: list[dict]) -> str:
    """Long markdown table of every measurement, sweeps included."""
    lines = [
        "| op | case | pass | backend | device | dtype | median | IQR | rounds | speed-up | Msamples/s | GB/s "
        "| of peak BW | peak MB | threads | checked against (error) |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["run"], r["op"], r["test"] == "test_scaling")):
        baseline = baseline_median(rows, r)
        speedup = f"{baseline / r['median']:.2f}x" if baseline else "-"
        lines.append(
            f"| {r['op']} | {r['case']} | {PASS_LABELS[r['pass']]} | {r['backend']} | {r['device']} | {r['dtype']} "
            f"| {_time(r['median'])} | {_time(r['iqr'])} | {r['rounds']} "
            f"| {speedup} "
            f"| {r['samples'] / r['median'] / 1e6:.3g} | {r['bytes_moved'] / r['median'] / 1e9:.3g} "
            f"| {_fraction(r.get('peak_bandwidth_fraction'))} "
            f"| {r['peak_memory_bytes'] / 2**20:.0f} | {r['threads']} "
            f"| {r['peer']} ({r['check_error']:.1e} <= {r['check_tolerance']:g}) |"
        )
    return "\n".join(lines)


def machine_header(runs: list[dict]) -> str:
    lines = []
    for run in runs:
        info, commit = run["machine_info"], run["commit_info"]
        cpu = info.get("cpu", {})
        gpu = info.get("cuda_device") or "none"
        dirty = " (uncommitted changes)" if commit.get("dirty") else ""
        lines.append(
            f"- `{run['file']}`: machine `{info['node']}`, {cpu.get('brand_raw', '?')} x {cpu.get('count', '?')} "
            f"cores, GPU: {gpu}; torch {info.get('torch_version')} ({info.get('torch_threads')} threads), "
            f"torchvision {info.get('torchvision_version')}, tensorflow {info.get('tensorflow_version')}; "
            f"commit `{commit.get('id', '?')[:10]}`{dirty}; {run['datetime']}; `BENCH={info.get('bench_mode')}`"
        )
    return "\n".join(lines)


def write_plots(rows: list[dict], out_dir: Path) -> list[str]:
    written = []
    for op in BASELINE:
        if plots.cases_plot(rows, op, out_dir / f"{op}_cases.png"):
            written.append(f"{op}_cases.png")
    for sweep in plots.SWEEP_AXES:
        if plots.scaling_plot(rows, sweep, out_dir / f"scaling_{sweep}.png"):
            written.append(f"scaling_{sweep}.png")
    return written


def report_markdown(rows: list[dict], runs: list[dict], images: list[str]) -> str:
    parts = ["# Benchmark report", "", "Generated by `bench/report.py` from:", "", machine_header(runs), ""]
    parts += [head_table(rows, runs, op) + "\n" for op in BASELINE if head_table(rows, runs, op)]
    parts += [f"![{name}]({name})" for name in images]
    parts += ["", METHOD, "", "## Every measurement", "", detail_table(rows, runs), ""]
    return "\n".join(parts)


def readme_section(rows: list[dict], runs: list[dict], images: list[str]) -> str:
    parts = [
        "Produced by `make bench` (`bench/run.py`; `BENCH=full` for the whole matrix) on:",
        "",
        machine_header(runs),
        "",
    ]
    parts += [head_table(rows, runs, op) + "\n" for op in BASELINE if head_table(rows, runs, op)]
    parts += [f"![{name}](bench/results/{name})" for name in images if name.startswith("scaling_boxes")]
    parts += ["", METHOD, "", "All measurements, sweeps and plots: [bench/results/report.md](bench/results/report.md)."]
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
    args = parser.parse_args(argv)

    paths = args.results or sorted(RESULTS_DIR.glob("*.json"), key=lambda p: p.stat().st_mtime)[-1:]
    if not paths:
        print(f"no results JSON given and none in {RESULTS_DIR}; run `make bench` first", file=sys.stderr)
        return 1
    rows, runs = load(paths)
    if not rows:
        print(f"{', '.join(map(str, paths))} hold no timed benchmarks (run without --benchmark-disable)",
              file=sys.stderr)
        return 1
    args.out_dir.mkdir(parents=True, exist_ok=True)
    images = write_plots(rows, args.out_dir)
    report = args.out_dir / "report.md"
    report.write_text(report_markdown(rows, runs, images))
    print(f"wrote {report} and {', '.join(images)}")
    if update_readme(readme_section(rows, runs, images), args.readme):
        print(f"updated the benchmark section of {args.readme}")
    else:
        print(f"notice: {args.readme} lacks the markers {' and '.join(MARKERS)}; README left unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
