"""Execute the notebooks and save them with their outputs: ``python notebooks/execute.py [NOTEBOOK ...]``.

With no arguments, every ``notebooks/NN_*.ipynb`` runs at full size (``IMPLS_NOTEBOOK_SMALL=0``) in a fresh
kernel of this Python and is overwritten with its outputs (``make notebooks``). ``tests/api/test_notebooks.py``
imports :func:`execute` to run the same notebooks at small size without writing them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
NOTEBOOKS = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
KERNEL = "python3"
SMALL_ENV = "IMPLS_NOTEBOOK_SMALL"  # "1": the notebooks shrink their inputs (CI); every cell still runs
CELL_TIMEOUT_S = 600


def _check_kernel() -> None:
    """Fail unless the ``python3`` kernel runs this interpreter (the one ``impls`` is installed in)."""
    argv0 = KernelSpecManager().get_kernel_spec(KERNEL).argv[0]
    # jupyter_client replaces a bare "python", "python3" or "python3.X" with sys.executable.
    bare = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}
    if argv0 not in bare and Path(argv0).resolve() != Path(sys.executable).resolve():
        raise RuntimeError(
            f"the {KERNEL!r} kernel runs {argv0}, not this Python ({sys.executable}); "
            f"install ipykernel here and remove the other {KERNEL!r} kernelspec (`jupyter kernelspec list`)"
        )


def execute(path: Path, small: bool) -> nbformat.NotebookNode:
    """Run the notebook at ``path`` top to bottom and return it with outputs; the file is not written.

    Raises ``nbclient.exceptions.CellExecutionError`` (with the cell's traceback) if a cell raises.
    """
    _check_kernel()
    notebook = nbformat.read(path, as_version=4)
    env = {**os.environ, SMALL_ENV: "1" if small else "0"}
    env.pop("MPLBACKEND", None)  # a non-interactive backend set outside would hide the figures
    client = NotebookClient(
        notebook,
        kernel_name=KERNEL,
        # Output written by C++ code (TensorFlow's start-up log) stays on this terminal, out of the notebooks.
        extra_arguments=["--IPKernelApp.capture_fd_output=False"],
        timeout=CELL_TIMEOUT_S,
        record_timing=False,  # no timestamps in the saved files: re-running changes only what the cells print
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute(env=env)
    return notebook


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, default=NOTEBOOKS, help="default: all of notebooks/")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        start = time.perf_counter()
        notebook = execute(path.resolve(), small=False)
        nbformat.write(notebook, path)
        print(f"{path.name}: executed in {time.perf_counter() - start:.0f} s, "
              f"{path.stat().st_size / 1024:.0f} KiB with outputs")


if __name__ == "__main__":
    main()
