"""Each operator's own benchmark facts, one module per operator (``bench/operators/<op>.py``), read by the generic
modules through ``of(op)``; an operator's module has what applies to it, and nothing else names the operator:

* ``inputs(workload)`` -> ``(boxes, box_index or None, kwargs)``, float64 boxes of the workload's fixed seed and
  the op's keyword arguments (``calls.make_inputs``);
* ``inside(inputs)`` -> bool [K]: the boxes whose samples all lie inside the map, where a peer whose record
  ``differs`` at the border computes our op (``check.interior``); ``BOX_GRADIENT_OUTLIERS``: (peer, dtype) -> the
  share of boxes whose box gradient may miss the check's tolerance (``check.check_against_peer``);
* ``adaptive_sides(rois, kwargs)`` -> the box sides (map pixels) its adaptive grid divides; ``touched_pixels(...)``
  where the rows x columns count does not apply (``work.py``);
* ``grid_sample_forward(inputs)`` and ``openvino_model()``: the peers' native calls of the op (``calls.py``);
  ``PEER_TIMED``: peer -> what its timer holds, where ``calls.timed_region``'s general words do not say it;
* ``workloads(mode)`` and ``HEADLINE``: the op's own cases, instead of the detector-head ones (``matrix.own_cases``,
  run by ``bench/test_<op>.py``); ``FIXED_SAMPLING_ONLY``: peers that take a fixed sampling ratio only;
* ``REPORT_TITLE`` and ``report_section(rows, runs)``: a section of its own in the report instead of a head table.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from types import ModuleType

from impls.ops import OPS


@functools.cache
def of(op: str) -> ModuleType | None:
    """``op``'s module, or None where it has none (``multiscale_roi_align``: its facts are the pyramid's). Looked up
    once per op: the matrix asks for every case it builds."""
    name = f"{__name__}.{op}"
    return importlib.import_module(name) if importlib.util.find_spec(name) is not None else None


def fact(op: str, name: str, default=None):
    """The fact ``name`` of ``op``'s module, else ``default``."""
    module = of(op)
    return getattr(module, name, default) if module is not None else default


def with_fact(name: str) -> list[str]:
    """The operators whose module has the fact ``name``, in ``impls.ops.OPS`` order."""
    return [op for op in OPS if fact(op, name) is not None]
