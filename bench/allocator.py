"""The second allocator of ``make bench``: one that keeps freed pages, under which the crop_and_resize rows are timed
again (issue 29).

glibc's malloc serves an allocation above its mmap threshold (which grows with the sizes freed, up to 32 MiB) with
new pages from the kernel and gives them back on free, so an op whose output is that large writes to pages never
touched before, and each first write is a page fault: the cost of a fresh output is paid on every call, before any
work. TensorFlow's allocator keeps its buffers from one call to the next. An allocator that keeps freed pages takes
that cost away from every row alike, so ``bench/run.py`` times the crop_and_resize rows under both: the process's
own allocator, then one of these, loaded with ``LD_PRELOAD`` in a second pytest process (``import impls`` never
changes the allocator: that choice is the user's):

* ``BENCH_ALLOCATOR``: the path of a malloc library, or ``none`` (no second run);
* jemalloc as Debian and Ubuntu ship it (``apt install libjemalloc2``): ``/usr/lib/<multiarch>/libjemalloc.so.2``;
* mimalloc from PyPI (``pip install cmeel-mimalloc``, in pyproject's ``bench`` extra, so ``make bench`` installs
  it): ``<site-packages>/cmeel.prefix/lib/libmimalloc.so``.

Each runs with the setting that makes it keep freed pages (``KEEP_SETTINGS``; a variable the user set already is
left as it is). jemalloc 5.3, in its default settings and with a long decay time alike, gave a freed 100 MB buffer
back to the kernel before the next allocation; with ``dirty_decay_ms:-1`` (dirty pages never purged) it keeps it.
mimalloc purges freed pages ``purge_delay`` (10 ms) after the free; -1 never does.

``keeps_pages`` checks the choice in a child process before the run: the minor page faults of a second
``torch.empty`` + fill after the first of the same size was freed. ``in_use`` says which allocator this process runs
under, from the libraries mapped into it (every row records it: ``conftest.py``).
"""

from __future__ import annotations

import glob
import os
import platform
import subprocess
import sys
import sysconfig
from pathlib import Path

ENV_VAR = "BENCH_ALLOCATOR"
# Library file name -> the allocator's name.
KNOWN = {"libjemalloc": "jemalloc", "libmimalloc": "mimalloc", "libtcmalloc": "tcmalloc"}
# The allocator's name -> the environment that makes it keep freed pages (module docstring).
KEEP_SETTINGS = {
    "jemalloc": {"MALLOC_CONF": "dirty_decay_ms:-1"},
    "mimalloc": {"MIMALLOC_PURGE_DELAY": "-1"},
    "tcmalloc": {"TCMALLOC_RELEASE_RATE": "0"},
}
DEBIAN_JEMALLOC = "/usr/lib/*/libjemalloc.so.2"
PYPI_MIMALLOC = "cmeel.prefix/lib/libmimalloc.so"
# How a user gets each one, for the report.
HOW_TO_GET = {
    "jemalloc": "`apt install libjemalloc2`, then `LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 "
                "MALLOC_CONF=dirty_decay_ms:-1`",
    "mimalloc": "`pip install cmeel-mimalloc`, then `LD_PRELOAD=<site-packages>/cmeel.prefix/lib/libmimalloc.so "
                "MIMALLOC_PURGE_DELAY=-1`",
}
# The probe: faults of a first and a second 64 MiB allocation + fill, the first freed before the second.
PROBE_BYTES = 64 * 2**20
PROBE = f"""
import resource, torch
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
counts = []
for _ in range(2):
    before = faults()
    torch.empty({PROBE_BYTES // 4}).fill_(1.0)
    counts.append(faults() - before)
print(*counts)
"""


def name_of(library: str | os.PathLike) -> str:
    """``jemalloc`` for ``.../libjemalloc.so.2``; the file's own stem for a library of no known allocator."""
    stem = Path(library).name.split(".so")[0]
    for prefix, name in KNOWN.items():
        if stem.startswith(prefix):
            return name
    return stem.removeprefix("lib")


def in_use() -> dict:
    """The allocator this process runs under: ``{"name", "library"}``, the library a known allocator mapped into the
    process (``/proc/self/maps``), else the C library's malloc (``library`` None)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/" in line}
    except OSError:
        paths = set()
    for path in sorted(paths):
        if any(Path(path).name.startswith(prefix) for prefix in KNOWN):
            return {"name": name_of(path), "library": path}
    return {"name": platform.libc_ver()[0] or "libc", "library": None}


def candidates() -> list[tuple[str, str]]:
    """The libraries ``find`` picks from (not ``BENCH_ALLOCATOR``) that this machine has, in its order of preference:
    ``(path, how it was found)``."""
    debian = [(path, "Debian's libjemalloc2") for path in sorted(glob.glob(DEBIAN_JEMALLOC))]
    sites = dict.fromkeys(Path(sysconfig.get_paths()[key]) for key in ("purelib", "platlib"))
    return debian + [(str(site / PYPI_MIMALLOC), "the PyPI package cmeel-mimalloc") for site in sites
                     if (site / PYPI_MIMALLOC).is_file()]


def find() -> tuple[str | None, str]:
    """``(library, how it was found)``; library None when there is none (or ``BENCH_ALLOCATOR=none``), and the
    second item says why."""
    chosen = os.environ.get(ENV_VAR)
    if chosen:
        if chosen.lower() == "none":
            return None, f"{ENV_VAR}=none"
        if not Path(chosen).is_file():
            return None, f"{ENV_VAR}={chosen}: no such file"
        return chosen, ENV_VAR
    found = candidates()
    if found:
        return found[0]
    return None, ("no allocator that keeps freed pages found (neither Debian's libjemalloc2 nor the PyPI package "
                  f"cmeel-mimalloc; {ENV_VAR}=<path> names another)")


def environment(library: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with ``library`` preloaded and its ``KEEP_SETTINGS`` (those
    the environment does not set already)."""
    env = dict(os.environ if base is None else base)
    env["LD_PRELOAD"] = " ".join(p for p in (library, env.get("LD_PRELOAD", "")) if p)
    for key, value in KEEP_SETTINGS.get(name_of(library), {}).items():
        env.setdefault(key, value)
    return env


def settings(library: str, env: dict[str, str]) -> dict[str, str]:
    """The variables of ``env`` that configure ``library``'s allocator (what the rows record)."""
    keys = set(KEEP_SETTINGS.get(name_of(library), {})) | {"LD_PRELOAD"}
    return {key: env[key] for key in sorted(keys) if key in env}


def probe(env: dict[str, str] | None = None) -> tuple[int, int]:
    """Minor page faults of a first and a second ``torch.empty`` + fill of ``PROBE_BYTES``, the first freed before the
    second, in a child Python under ``env`` (default: this process's)."""
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    first, second = (int(n) for n in out.stdout.split())
    return first, second


def keeps_pages(faults: tuple[int, int]) -> bool:
    """Whether the second allocation of ``probe`` reused the first's pages: under a quarter of its faults (fresh
    pages fault once per page, or once per huge page)."""
    first, second = faults
    return first > 0 and 4 * second < first


def choose() -> dict:
    """The second allocator for ``bench/run.py``: ``{"name", "library", "found", "settings", "probe_faults"}``;
    ``{"name": None, "reason"}`` when there is none, it is the process's own already, or it does not keep the
    probe's pages."""
    library, found = find()
    if library is None:
        return {"name": None, "reason": found}
    env = environment(library)
    name = name_of(library)
    if in_use()["name"] == name:
        return {"name": None, "reason": f"the main run already runs under {name} (LD_PRELOAD)"}
    try:
        faults = probe(env)
    except (subprocess.CalledProcessError, ValueError) as error:
        return {"name": None, "reason": f"{library} ({found}) failed the probe: {error}"}
    if not keeps_pages(faults):
        return {"name": None, "reason": f"{library} ({found}) does not keep freed pages: {faults[1]} page faults "
                                        f"on reuse, {faults[0]} when fresh"}
    return {"name": name, "library": library, "found": found, "settings": settings(library, env),
            "probe_faults": list(faults)}
