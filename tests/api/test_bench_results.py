"""``bench/report.py`` with no argument reports the newest whole run (``results_json.newest``): a suite run alone
afterwards, saved as ``<host>-<date>-<suite>.json``, is not taken for it, whatever its date."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))


def _write(path: Path, when: str) -> None:
    path.write_text(json.dumps({"datetime": when, "benchmarks": []}))


def test_newest_is_the_latest_whole_run(tmp_path):
    import results_json

    _write(tmp_path / "vm-2026-12-05.json", "2026-12-05T10:00:00")
    _write(tmp_path / "vm-2026-12-06.json", "2026-12-06T05:00:00")
    _write(tmp_path / "vm-2026-12-06-multiscale.json", "2026-12-06T06:26:00")  # later, one suite only
    (tmp_path / "notes.json").write_text("[]")  # not a run at all
    assert results_json.newest(tmp_path) == tmp_path / "vm-2026-12-06.json"
    _write(tmp_path / "vm-2026-12-07.json", "2026-12-07T01:00:00")
    assert results_json.newest(tmp_path) == tmp_path / "vm-2026-12-07.json"


def test_a_side_run_reports_beside_the_whole_run(tmp_path):
    # ``report.py --name``: a side run's report and plots are written under its name, linked from its report, and
    # neither the README's section nor the whole run's report.md or plots are touched.
    import report

    run = Path(report.RESULTS_DIR) / "vm-2026-12-07-xeon-crop-bgrad.json"
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench-table:start -->\nthe whole run's tables\n<!-- bench-table:end -->\n")
    before = readme.read_text()
    assert report.main([str(run), "--out-dir", str(tmp_path), "--readme", str(readme), "--name", "side"]) == 0
    assert readme.read_text() == before, "a side run replaced the README's benchmark section"
    assert not (tmp_path / "report.md").exists() and not (tmp_path / "crop_and_resize_cases.png").exists()
    text = (tmp_path / "side-report.md").read_text()
    assert "![side-crop_and_resize_cases.png](side-crop_and_resize_cases.png)" in text
    assert (tmp_path / "side-crop_and_resize_cases.png").stat().st_size > 0
    link = text.split("[vm-2026-11-26-vectorized-stability.md](")[1].split(")")[0]
    assert (tmp_path / link).resolve() == (Path(report.RESULTS_DIR) / "vm-2026-11-26-vectorized-stability.md")


def test_a_side_run_is_saved_under_its_own_name():
    # ``bench/run.py --side NAME``: the JSON is <host>-<date>-NAME.json, which the whole-run pattern does not take for
    # the day's whole run (test_newest_is_the_latest_whole_run), and the rest of the arguments go to pytest.
    import pytest
    import results_json
    import run

    side, rest = run.side_name(["--side", "xeon-crop", "-k", "crop_and_resize"])
    assert (side, rest) == ("xeon-crop", ["-k", "crop_and_resize"])
    assert run.side_name(["-k", "cpp"]) == (None, ["-k", "cpp"])
    assert run.results_path(side).name.endswith("-xeon-crop.json")
    assert not results_json.WHOLE_RUN.fullmatch(run.results_path(side).name)
    assert results_json.WHOLE_RUN.fullmatch(run.results_path().name)
    for bad in (["--side"], ["--side", "-k"], ["--side", "../x"], ["--side", "2026-12-08"]):
        with pytest.raises(SystemExit, match="--side takes a name"):
            run.side_name(bad)
