"""Writes ``summary.md`` in a ``make gpu`` results folder (bench/gpu_run.sh calls it after every stage).

    python bench/gpu_summary.py bench/results/gpu-<date>

Reads what the stages left there: ``stages.tsv`` (stage, status, seconds, note), ``env.log``, ``tests.xml``
(JUnit), the compute-sanitizer logs ``<tool>.log.sanitizer`` and the stage logs, and ``bench-gpu.json``
(pytest-benchmark). Standard library only: it must work whatever else is missing.
"""

from __future__ import annotations

import collections
import datetime
import json
import re
import socket
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

SANITIZERS = ("memcheck", "racecheck", "initcheck")
# The head cases the summary quotes (all in BENCH=gpu): P2 box head, P2 mask head, the crop on the box head, and
# the multi-level box head at inference (P2-P5, 2 images x 1000 boxes: issue 21's GPU goal).
KEY_CASES = ("p2_k512_7x7_sr2", "p2_k128_14x14_sr2", "p2_k512_14x14", "p2p5_2x1000_7x7_sr2")


def _stages(results: Path) -> list[list[str]]:
    path = results / "stages.tsv"
    if not path.exists():
        return []
    return [line.split("\t") + [""] * (4 - len(line.split("\t"))) for line in path.read_text().splitlines() if line]


def _env_lines(results: Path) -> list[str]:
    path = results / "env.log"
    if not path.exists():
        return []
    keep = ("python ", "torch ", "GPU:", "  torchvision", "  tensorflow", "  pytest-xdist", "  ninja:", "source: ")
    return [line.strip() for line in path.read_text().splitlines() if line.startswith(keep)]


def _tests(results: Path) -> list[str]:
    path = results / "tests.xml"
    if not path.exists():
        return []
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        return [f"tests.xml unreadable: {error}"]
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = collections.Counter()
    for suite in suites:
        for key in ("tests", "failures", "errors", "skipped"):
            total[key] += int(suite.get(key, 0))
    passed = total["tests"] - total["failures"] - total["errors"] - total["skipped"]
    lines = [f"**{passed} passed, {total['failures']} failed, {total['errors']} errors, {total['skipped']} skipped** "
             f"(of {total['tests']})."]
    failed, skipped = [], collections.Counter()
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        for tag in ("failure", "error"):
            for element in case.findall(tag):
                message = (element.get("message") or "").strip().splitlines()
                failed.append(f"- {tag}: `{name}`: {message[0][:200] if message else ''}")
        for element in case.findall("skipped"):
            reason = (element.get("message") or "").strip()
            if reason == "collection skipped":  # a whole module: the reason is in the text, after "Skipped: "
                found = re.search(r"Skipped: (.*?)['\"]?\)?$", (element.text or "").strip())
                reason = f"{name.strip(':')}: {found.group(1) if found else element.text}"
            skipped[reason[:200]] += 1
    if failed:
        lines += ["", f"Failed ({len(failed)}; the first 40):", ""] + failed[:40]
    if skipped:
        lines += ["", "Skipped, by reason:", ""] + [f"- {n} x {reason}" for reason, n in skipped.most_common(15)]
    return lines


def _tour_line(stage_log: Path) -> str:
    text = stage_log.read_text(errors="replace") if stage_log.exists() else ""
    tour = re.findall(r"\w+ kernel tour: .*", text)
    return tour[-1] if tour else "the tour did not finish"


def _sanitizers(results: Path) -> list[str]:
    stages = {name: (status, note) for name, status, _, note in _stages(results)}
    lines = []
    if (results / "tour.log").exists():
        text = (results / "tour.log").read_text(errors="replace")
        failures = [line for line in text.splitlines() if line.startswith("FAIL ")]
        lines.append(f"- tour without a sanitizer: {_tour_line(results / 'tour.log')}")
        lines += [f"  - {line[:250]}" for line in failures[:20]]
    for tool in SANITIZERS:
        log, stage_log = results / f"{tool}.log.sanitizer", results / f"{tool}.log"
        if not log.exists() and not stage_log.exists():
            continue
        status, note = stages.get(tool, ("not run", ""))
        if not log.exists() or status in ("refused", "skip"):  # no compute-sanitizer, refused device, no time...
            lines.append(f"- {tool}: {status}{f' ({note})' if note else ''}")
            continue
        text = log.read_text(errors="replace")
        match = re.search(r"ERROR SUMMARY: (\d+) errors?", text)
        race = re.search(r"RACECHECK SUMMARY: (\d+) hazards? displayed \((\d+) errors?, (\d+) warnings?\)", text)
        if race:
            errors = f"{race.group(2)} error(s), {race.group(3)} warning(s)"
        else:
            errors = f"{match.group(1)} error(s)" if match else "no ERROR SUMMARY (did it run?)"
        hazards = collections.Counter(re.findall(r"(Race reported|Invalid __global__ \w+ of size \d+|"
                                                 r"Uninitialized __global__ memory read|Program hit \w+)", text))
        detail = "; ".join(f"{n} x {kind}" for kind, n in hazards.most_common(5))
        lines.append(f"- {tool}: {errors}{f' ({detail})' if detail else ''}; "
                     f"{_tour_line(stage_log)}")
    return lines


def _bench(results: Path) -> list[str]:
    path = results / "bench-gpu.json"
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        return [f"bench-gpu.json unreadable: {error}"]
    rows = [b["extra_info"] | {"median": b["stats"]["median"]} for b in data["benchmarks"]
            if b.get("stats") and "bytes_moved" in b["extra_info"]]  # not one interrupted mid-way
    info = data.get("machine_info", {})
    peak = info.get("cuda_peak_bandwidth")
    peak = f"{peak / 1e12:.2f} TB/s ({info.get('cuda_peak_bandwidth_source')})" if peak else "unknown"
    lines = [f"{len(rows)} benchmarks timed on {info.get('cuda_device') or 'no GPU'}; peak memory bandwidth {peak}. "
             "All of them: report.md.", "",
             "| op | case | pass | backend | dtype | median | GB/s | of peak BW |",
             "|---|---|---|---|---|---:|---:|---:|"]
    key = [r for r in rows if r.get("case") in KEY_CASES and r.get("dtype") == "float32"]
    if not key:
        return lines[:1]
    for r in sorted(key, key=lambda r: (r["op"], KEY_CASES.index(r["case"]), r["pass"], r["backend"])):
        gbs = r["bytes_moved"] / r["median"] / 1e9
        fraction = r.get("peak_bandwidth_fraction")
        lines.append(f"| {r['op']} | {r['case']} | {r['pass']} | {r['backend']} | {r['dtype']} "
                     f"| {r['median'] * 1e3:.4g} ms | {gbs:.3g} | {'-' if fraction is None else f'{fraction:.1%}'} |")
    return lines


def summary(results: Path) -> str:
    stages = _stages(results)
    total = sum(float(s[2] or 0) for s in stages)
    parts = [
        f"# make gpu: {results.name}",
        "",
        f"Written {datetime.datetime.now().isoformat(timespec='seconds')} on `{socket.gethostname()}` by "
        "bench/gpu_summary.py (after every stage of bench/gpu_run.sh).",
        "",
        *[f"- {line}" for line in _env_lines(results)],
        "",
        "| stage | status | seconds | note |",
        "|---|---|---:|---|",
        *[f"| {name} | {status} | {seconds} | {note.replace('|', '/')} |" for name, status, seconds, note in stages],
        f"| total | | {total:.0f} | |",
    ]
    sections = (
        ("Tests", _tests(results)),
        ("CUDA kernel tour and compute-sanitizer", _sanitizers(results)),
        ("Benchmarks (float32, P2 heads, FPN box head)", _bench(results)),
    )
    for title, lines in sections:
        if lines:
            parts += ["", f"## {title}", "", *lines]
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    results = Path(argv[0])
    (results / "summary.md").write_text(summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
