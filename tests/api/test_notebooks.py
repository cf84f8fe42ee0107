"""Every notebook runs top to bottom at small size (IMPLS_NOTEBOOK_SMALL=1): a cell that raises, including a
notebook's own assertion of its claim, fails the test. The committed files are not touched; the executed copy is
written to the test's temporary folder for inspection."""

import importlib.util
import re
from pathlib import Path

import optional_deps
import pytest

# notebooks/execute.py needs nbclient and a Jupyter kernel; missing, they skip this module only under IMPLS_GPU_RUN=1.
nbformat = optional_deps.require("nbformat")
for _module in ("nbclient", "ipykernel"):
    optional_deps.require(_module)

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
# Listed by name, not globbed, so that a missing notebook fails instead of vanishing from the test.
NOTEBOOKS = ("01_bilinear_sampling.ipynb", "02_box_conventions.ipynb", "03_backends_compared.ipynb",
             "04_box_gradients_and_porting.ipynb", "05_how_the_fast_kernels_are_made.ipynb",
             "06_benchmarking_fairly.ipynb", "07_rotated_roi_align.ipynb")


def _load_runner():
    spec = importlib.util.spec_from_file_location("notebooks_execute", NOTEBOOK_DIR / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path):
    path = NOTEBOOK_DIR / name
    assert path.is_file(), f"{path} is missing"
    notebook = _load_runner().execute(path, small=True)
    nbformat.write(notebook, tmp_path / name)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells and all(cell.execution_count for cell in code_cells), "a code cell did not run"
    # No log line of torch's (``W1205 18:05:39.18 ... file.py:183] ...``) saved in an output.
    logged = [line for cell in code_cells for out in cell.outputs if out.output_type == "stream"
              for line in out.text.splitlines() if re.match(r"[WE]\d{4} \d\d:\d\d:", line)]
    assert not logged, logged


@pytest.mark.parametrize("neighbour,saved", [(0.05, True), (0.6, False)])
def test_a_notebook_run_beside_a_busy_neighbour_is_not_saved(neighbour, saved, tmp_path, monkeypatch):
    # ``make notebooks`` keeps the committed outputs when other processes took more than the report's quiet limit
    # (0.2 cores) while a notebook ran, and fails saying so; a quiet run is saved.
    runner = _load_runner()
    path = tmp_path / "00_probe.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")]), path)
    before = path.read_text()

    class Share:
        def __init__(self, children):
            assert children, "the kernel is a child process: its CPU is the notebook's own"

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.neighbour = neighbour
            return False

    monkeypatch.setattr(runner, "CpuShare", Share)
    if saved:
        runner.main([str(path)])
        assert nbformat.read(path, as_version=4).cells[0].outputs, "the quiet run was not saved"
    else:
        with pytest.raises(SystemExit, match="busy"):
            runner.main([str(path)])
        assert path.read_text() == before, "a busy run overwrote the notebook"


EXCERPT_CALL = re.compile(r'excerpt\("([^"]+)", "([^"]+)"\)')


def _notebook_excerpt(cells):
    """The notebook's own ``excerpt(path, name)`` (defined in a code cell: it prints a definition of the repository
    with its line numbers), run here on the current tree; None if the notebook has none."""
    for cell in cells:
        source = cell.source if cell.cell_type == "code" else ""
        if "def excerpt(" in source:
            definition = source[source.index("def excerpt("):]
            end = re.search(r"\n(?=\S)", definition)
            namespace = {"REPO": NOTEBOOK_DIR.parent, "re": re}
            exec(definition if end is None else definition[:end.start() + 1], namespace)
            return namespace["excerpt"]
    return None


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_saved_source_excerpts_are_the_current_source(name, capsys):
    # A notebook that prints the kernels' source (05) saves that print: a kernel changed later leaves the saved
    # excerpt stale, line numbers included, although the notebook still runs. Each excerpt printed now from the tree
    # must appear in the saved output of the cell that prints it.
    cells = nbformat.read(NOTEBOOK_DIR / name, as_version=4).cells
    excerpt = _notebook_excerpt(cells)
    calls = [(cell, call) for cell in cells if cell.cell_type == "code" for call in EXCERPT_CALL.findall(cell.source)]
    assert (excerpt is None) == (not calls), "excerpt( calls without the function, or the function without calls"
    for cell, (path, definition) in calls:
        excerpt(path, definition)
        printed = capsys.readouterr().out
        saved = "".join(out.get("text", "") for out in cell.outputs if out.output_type == "stream")
        assert printed in saved, f"{name}: the saved excerpt of {definition} ({path}) is not the current source"
