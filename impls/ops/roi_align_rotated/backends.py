"""roi_align_rotated's kernels on the backends whose records other operators share: ``vectorized`` and ``compiled``
(this folder's ``vectorized.py``, eager or with its steps compiled), ``triton`` (``impls/backends/triton/
roi_align_rotated_kernels.py``) and the peers ``grid_sample`` and ``openvino`` (``impls/backends/peers/
*_rotated.py``). ``reference`` and the extension (``cpp``, ``cuda``) find every operator's kernels themselves.

Imported by ``impls/backends/__init__.py`` once every backend is registered; nothing here is imported by a backend.
"""

from __future__ import annotations

import torch

from ...backends.compiled import CompiledStep
from ...backends.peers import grid_sample_rotated, openvino_rotated
from ...backends.triton import roi_align_rotated_kernels as triton_kernels
from ...backends.triton.launcher import compilable
from ...core.registry import OpKernels, add_kernels
from . import traced_adaptive as _traced_adaptive  # noqa: F401  (the operators its kernels call while traced)
from . import vectorized
from .spec import NAME

COMPILED_STEPS = vectorized.Steps("compiled", *(CompiledStep(step, vectorized.FREE_DIMS) for step in (
    vectorized.sample_step, vectorized.scatter_step, vectorized.box_grad_step)))

add_kernels("vectorized", NAME, vectorized.kernels(vectorized.EAGER))
add_kernels("compiled", NAME, vectorized.kernels(COMPILED_STEPS))
add_kernels("triton", NAME, OpKernels(
    compilable(triton_kernels.forward, name=f"{NAME}_forward"),
    # As roi_align's: the deterministic image gradient reads a length back with the adaptive grid.
    compilable(triton_kernels.backward_input, tags=(torch.Tag.cudagraph_unsafe,), name=f"{NAME}_backward_input"),
    compilable(triton_kernels.backward_boxes, name=f"{NAME}_backward_boxes"),
))
add_kernels("grid_sample", NAME, OpKernels(grid_sample_rotated.forward, grid_sample_rotated.backward_input,
                                           grid_sample_rotated.backward_boxes, differs="CONVENTIONS.md §8.6"))
add_kernels("openvino", NAME, OpKernels(openvino_rotated.forward))
