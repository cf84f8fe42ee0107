"""The allocator (issue 29): ``import impls`` leaves it as it is; the one ``make bench`` times crop_and_resize under a
second time (``bench/allocator.py``) keeps freed pages where glibc's malloc gives fresh ones; its rows, and the
write-limit rows, reach the report's crop_and_resize table and no other (``bench/run.py``, ``bench/report.py``)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import optional_deps
import pytest
from bench_rows import benchmark_row

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
import allocator  # noqa: E402  (bench/allocator.py)

# This process's environment without any allocator setting, as a user's shell would be.
PLAIN = {k: v for k, v in os.environ.items()
         if k != "LD_PRELOAD" and not any(k in keys for keys in allocator.KEEP_SETTINGS.values())}
CANDIDATES = [path for path, _ in allocator.candidates()]
ALLOCATOR_ENV = tuple(dict.fromkeys(["LD_PRELOAD", *(k for keys in allocator.KEEP_SETTINGS.values() for k in keys)]))


def _child(code: str, env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def test_import_impls_leaves_the_allocator():
    code = f"""
import json, os, sys
sys.path.insert(0, {str(BENCH)!r})
import allocator
keys = {ALLOCATOR_ENV!r}
before = allocator.in_use(), {{k: os.environ.get(k) for k in keys}}
import impls
impls.backends()
after = allocator.in_use(), {{k: os.environ.get(k) for k in keys}}
print(json.dumps([before, after]))
"""
    before, after = json.loads(_child(code, PLAIN))
    assert before == after
    assert after[0]["library"] is None, after  # the C library's malloc: nothing preloaded, nothing loaded


def test_glibc_gives_fresh_pages():
    """What the first-touch rows measure: a freed 64 MiB block is back with the kernel at the next allocation."""
    faults = allocator.probe(PLAIN)
    assert not allocator.keeps_pages(faults), faults


@pytest.mark.parametrize("library", CANDIDATES)
def test_keeping_allocator_keeps_pages(library):
    env = allocator.environment(library, PLAIN)
    code = (f"import json, sys; sys.path.insert(0, {str(BENCH)!r}); import allocator; "
            "print(json.dumps(allocator.in_use()))")
    assert json.loads(_child(code, env)) == {"name": allocator.name_of(library), "library": library}
    faults = allocator.probe(env)
    assert allocator.keeps_pages(faults), faults


def test_make_bench_finds_a_keeping_allocator():
    """``make env`` installs cmeel-mimalloc (pyproject's ``bench`` extra): make bench always has a second allocator
    (``make gpu`` brings its own Python, which may lack it)."""
    if not CANDIDATES and optional_deps.MISSING_PEERS_SKIP:
        pytest.skip(f"no keeping allocator installed ({optional_deps.ENV_VAR}=1)")
    chosen = allocator.choose()
    assert chosen["name"] in ("jemalloc", "mimalloc"), chosen


def _results(allocator_name: str, rows: dict[str, float]) -> dict:
    benchmarks = [benchmark_row(label, median, allocator_name,
                             **({"write_limit": label, "written_bytes": 10**8} if label in LIMITS else {}))
                  for label, median in rows.items()]
    return {"machine_info": {"allocator": allocator_name}, "benchmarks": benchmarks}


LIMITS = ("limit_fill", "limit_copy", "fresh_fill")


def test_report_reads_both_allocators_and_the_limits(tmp_path):
    import report
    import results_json
    import run

    main, second = tmp_path / "main.json", tmp_path / "second.json"
    times = {"limit_fill": 0.004, "limit_copy": 0.008, "fresh_fill": 0.028, "cpp": 0.020, "tensorflow": 0.016}
    main.write_text(json.dumps(_results("glibc", times)))
    second.write_text(json.dumps(_results("jemalloc", {**times, "fresh_fill": 0.004, "cpp": 0.010})))
    keeping = {"library": "/lib/libjemalloc.so.2", "found": "test", "probe_faults": [16384, 0]}
    assert run.merge_allocator_run(main, second, keeping, 60.0) is None
    assert json.loads(main.read_text())["machine_info"]["keeping_allocator"]["name"] == "jemalloc"

    rows, _ = results_json.load([main])  # what the plots, the speed-ups and every other table read
    assert sorted(r["backend"] for r in rows) == ["cpp", "tensorflow"]
    assert {r["allocator"] for r in rows} == {"glibc"}
    every, runs = results_json.load([main], side_rows=True)
    assert len(every) == 10
    table = report.write_limit_table(every, runs, "crop_and_resize")
    # glibc: 20 ms, 0.80x TensorFlow, fill 4 / 20 = 20%, copy 40%; first touch 28 - 4 = 24 ms, 120% of cpp.
    assert "| p2_k512_14x14 | fwd | glibc | 100 | 4 ms / 8 ms | 24 ms, 120% of cpp |" in table
    assert "20 ms (0.80x; 20% / 40%)" in table
    # jemalloc: 10 ms, 1.60x, 40% / 80%; first touch 0.
    assert "| p2_k512_14x14 | fwd | jemalloc | 100 | 4 ms / 8 ms | 0 ms, 0% of cpp |" in table
    assert "10 ms (1.60x; 40% / 80%)" in table
    assert "limit_fill cpu" not in table  # a limit is never a column


def test_report_says_when_there_was_no_keeping_allocator(tmp_path):
    import report
    import results_json
    import run

    main = tmp_path / "main.json"
    main.write_text(json.dumps(_results("glibc", {"limit_fill": 0.004, "limit_copy": 0.008, "fresh_fill": 0.028,
                                                  "cpp": 0.020, "tensorflow": 0.016})))
    run.record_no_allocator_run(main, "BENCH_ALLOCATOR=none")
    every, runs = results_json.load([main], side_rows=True)
    table = report.write_limit_table(every, runs, "crop_and_resize")
    assert "| jemalloc |" not in table
    assert "no allocator that keeps freed pages ran: BENCH_ALLOCATOR=none" in table
