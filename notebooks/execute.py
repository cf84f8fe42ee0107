"""Execute the notebooks and save them with their outputs: ``python notebooks/execute.py [NOTEBOOK ...]``.

With no arguments, every ``notebooks/NN_*.ipynb`` runs at full size (``IMPLS_NOTEBOOK_SMALL=0``) in a fresh
kernel of this Python and is overwritten with its outputs (``make notebooks``). A notebook is saved only if it ran
on a quiet machine: other processes took at most ``QUIET_LIMIT`` cores (the benchmark report's rule,
``bench/cpu_share.py``) while it ran, since its timing cells would otherwise save a neighbour's noise; else the file
is left as it was and the run fails, saying how busy the machine was. ``tests/api/test_notebooks.py``
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
sys.path.insert(0, str(HERE.parent / "bench"))
from cpu_share import QUIET_LIMIT, CpuShare  # noqa: E402  (bench/ is not a package)

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
    # On a machine with a CUDA toolkit and no GPU (CI's), torch.compile's first import of cpp_extension logs "No CUDA
    # runtime is found, using CUDA_HOME=...": a fact about the machine, not the notebook; kept out of its outputs.
    env["TORCH_LOGS"] = ",".join(filter(None, (env.get("TORCH_LOGS"), "-torch.utils.cpp_extension")))
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
    busy = []
    for path in args.notebooks:
        start = time.perf_counter()
        with CpuShare(children=True) as share:
            notebook = execute(path.resolve(), small=False)
        if share.neighbour is not None and share.neighbour > QUIET_LIMIT:
            busy.append(f"{path.name}: other processes took {share.neighbour:.2f} cores while it ran "
                        f"(limit {QUIET_LIMIT}); not saved")
            print(busy[-1])
            continue
        nbformat.write(notebook, path)
        print(f"{path.name}: executed in {time.perf_counter() - start:.0f} s, "
              f"{path.stat().st_size / 1024:.0f} KiB with outputs")
    if busy:
        raise SystemExit("the machine was busy; run again when nothing else runs:\n" + "\n".join(busy))


if __name__ == "__main__":
    main()
