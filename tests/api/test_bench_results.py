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
