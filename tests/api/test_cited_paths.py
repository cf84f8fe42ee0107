"""Every path of this repository that a file of it cites (``tests/...py``, ``csrc/<op>/...h``, ``bench/...py``,
``impls/...py``, ``notebooks/...ipynb``) exists: a file moved in a reorganisation leaves no stale pointer behind in
the code, the docs or the notebooks. Historical results (``bench/results/``) keep the paths of their day."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
CITED = re.compile(r"\b(?:tests|bench|impls|csrc|notebooks)/[A-Za-z0-9_./-]+\.(?:py|h|cuh|cpp|cu|md|ipynb|sh)\b")
SKIPPED_DIRS = {".git", ".venv", "build", "__pycache__", ".pytest_cache"}
TEXT_SUFFIXES = {".py", ".h", ".cuh", ".cpp", ".cu", ".md", ".ipynb", ".sh", ".toml", ".yml", ".cfg", ".txt"}


def _citing_files():
    for path in ROOT.rglob("*"):
        relative = path.relative_to(ROOT)
        if (path.is_file() and (path.suffix in TEXT_SUFFIXES or path.name == "Makefile")
                and not SKIPPED_DIRS.intersection(relative.parts) and not relative.parts[0].endswith(".egg-info")
                and relative.parts[:2] != ("bench", "results")):
            yield relative


def test_every_cited_path_exists():
    files = list(_citing_files())
    assert len(files) > 100, f"found only {len(files)} files to read under {ROOT}"
    stale = sorted({f"{relative}: {cited}" for relative in files
                    for cited in CITED.findall((ROOT / relative).read_text(errors="replace"))
                    if "..." not in cited and not (ROOT / cited).exists()})  # "tests/...py": a pattern
    assert not stale, "paths cited but missing:\n" + "\n".join(stale)
