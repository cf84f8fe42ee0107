"""RoIAlign and crop_and_resize, six ways: the ``reference``, ``vectorized``, ``compiled``, ``cpp``, ``cuda`` and
``triton`` backends (``impls/backends/``) under one autograd interface, plus the peers ``torchvision``,
``tensorflow`` and others wrapped for comparison.

Public API: :func:`crop_and_resize`, :func:`roi_align`, :func:`multiscale_roi_align`, :func:`roi_align_rotated`,
the modules :class:`CropAndResize`, :class:`RoIAlign`, :class:`MultiScaleRoIAlign` and :class:`RoIAlignRotated`,
:func:`backends` (what is registered and whether it runs here), :func:`resolve_backend` (what ``"auto"`` picks) and
:func:`onnx_translation_table` (ONNX export). Layout: ``impls/core/`` (what every operator shares),
``impls/ops/<op>/`` (one folder per operator), ``impls/backends/`` (the backend records and their glue).
"""

import torch

from . import backends as _backends  # noqa: F401  (registers every backend)
from . import ops as _ops  # noqa: F401  (defines every operator's schemas)
from .core.dispatch import resolve_backend
from .core.registry import BackendUnavailableError, backends
from .ops.crop_and_resize import CropAndResize, RoIAlign, crop_and_resize
from .ops.multiscale_roi_align import MultiScaleRoIAlign, multiscale_roi_align
from .ops.roi_align import roi_align
from .ops.roi_align_rotated import RoIAlignRotated, roi_align_rotated

# torch.fx leaves: a model that calls impls.roi_align(...) etc. is traced with each call as one node, as
# torchvision's ops are (each operator's module.py does the same for its modules).
torch.fx.wrap("crop_and_resize")
torch.fx.wrap("roi_align")
torch.fx.wrap("multiscale_roi_align")
torch.fx.wrap("roi_align_rotated")


def onnx_translation_table() -> dict:
    """The translations of our operators for ``torch.onnx.export(model, args, dynamo=True,
    custom_translation_table=impls.onnx_translation_table())`` (``impls/core/onnx_export.py``; needs onnxscript)."""
    from .core.onnx_export import onnx_translation_table as table

    return table()


__all__ = [
    "BackendUnavailableError",
    "CropAndResize",
    "MultiScaleRoIAlign",
    "RoIAlign",
    "RoIAlignRotated",
    "backends",
    "crop_and_resize",
    "multiscale_roi_align",
    "onnx_translation_table",
    "resolve_backend",
    "roi_align",
    "roi_align_rotated",
]
