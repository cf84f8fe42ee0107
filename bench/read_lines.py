"""The read-limit rows' loop (``read_lines.cpp``: one load from each listed cache line of a map, on torch's threads),
built on first use by torch's C++ extension builder (``torch.utils.cpp_extension.load``, into its cache directory)
for the machine that runs it (``-march=native``). A loop of loads, not a torch op: ``F.embedding_bag`` over the same
lines (a gather that sums them) took 1.1-1.5x as long in the default cases on a 2-core Xeon, 1.5x on the P3 batch in
NCHW, and would have set the limit that much too high."""

from __future__ import annotations

import functools
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "read_lines.cpp"


@functools.cache
def module():
    """The compiled module: ``read_lines(map, lines) -> float``."""
    from torch.utils.cpp_extension import load

    return load(name="bench_read_lines", sources=[str(SOURCE)], extra_cflags=["-O3", "-march=native", "-fopenmp"],
                extra_ldflags=["-fopenmp"])
