"""``cpp`` and ``cuda`` backends: glue to the compiled extension ``impls._C`` (``csrc/``).

The extension registers six operators, ``torch.ops.impls.{crop_and_resize,roi_align}_{forward,backward_input,
backward_boxes}`` (one operator per gradient), and multi-level roi_align's three (``multiscale_roi_align_*``: one
call pools every level), with CPU kernels (``csrc/<op>/*_cpu.cpp``, parallel over boxes x channels,
float64 bit-exact with ``reference``) and, when built with a CUDA toolkit, CUDA kernels (``csrc/<op>/*_cuda.cu``). This
module binds the op handles once, gives the ops their fake kernels (``impls/_op_schemas.py``) so that they trace
under ``torch.compile``, and registers the two backends. The package still imports when the extension is not
built: the backends then report why they are unavailable.
"""

from __future__ import annotations

import torch

from .. import _op_schemas
from ..core.registry import FLOAT_DTYPES, Backend, OpKernels, register

try:
    from .. import _C  # noqa: F401  (loading the library runs its TORCH_LIBRARY registrations)

    _IMPORT_ERROR = None
except (ImportError, OSError) as e:  # not built, or built against another torch
    _IMPORT_ERROR = f"{type(e).__name__}: {e}"

if _IMPORT_ERROR is None:
    _crop_forward = torch.ops.impls.crop_and_resize_forward.default
    _crop_backward_input = torch.ops.impls.crop_and_resize_backward_input.default
    _crop_backward_boxes = torch.ops.impls.crop_and_resize_backward_boxes.default
    _roi_forward = torch.ops.impls.roi_align_forward.default
    _roi_backward_input = torch.ops.impls.roi_align_backward_input.default
    _roi_backward_boxes = torch.ops.impls.roi_align_backward_boxes.default
    _multiscale_forward = torch.ops.impls.multiscale_roi_align_forward.default
    _multiscale_backward_input = torch.ops.impls.multiscale_roi_align_backward_input.default
    _multiscale_backward_boxes = torch.ops.impls.multiscale_roi_align_backward_boxes.default

    for _name, _fake in _op_schemas.FAKES.items():
        torch.library.register_fake(f"impls::{_name}")(_fake)


def _cpp_reason():
    if _IMPORT_ERROR is None:
        return None
    return (
        f"the C++ extension impls._C is not built ({_IMPORT_ERROR}); "
        "build it with `pip install --no-build-isolation -e .`"
    )


def _cuda_reason():
    reason = _cpp_reason()
    if reason is not None:
        return reason
    if not torch._C._dispatch_has_kernel_for_dispatch_key("impls::roi_align_forward", "CUDA"):
        return (
            "impls._C was built without CUDA kernels (no CUDA toolkit found at build time); "
            "rebuild with CUDA_HOME pointing at a toolkit"
        )
    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine"
    return None


def crop_and_resize_forward(image, boxes, box_index, crop_height, crop_width, method, extrapolation_value):
    return _crop_forward(
        image, boxes, box_index, crop_height, crop_width, method, float(extrapolation_value)
    )


def crop_and_resize_backward_input(
    grad, boxes, box_index, crop_height, crop_width, batch_size, channels, height, width, method
):
    return _crop_backward_input(
        grad, boxes, box_index, crop_height, crop_width, batch_size, channels, height, width, method
    )


def crop_and_resize_backward_boxes(grad, image, boxes, box_index, crop_height, crop_width, method):
    return _crop_backward_boxes(grad, image, boxes, box_index, crop_height, crop_width, method)


def roi_align_forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    return _roi_forward(
        input, rois, float(spatial_scale), pooled_height, pooled_width, int(sampling_ratio), bool(aligned)
    )


def roi_align_backward_input(
    grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width, sampling_ratio,
    aligned,
):
    return _roi_backward_input(
        grad, rois, float(spatial_scale), pooled_height, pooled_width, batch_size, channels, height, width,
        int(sampling_ratio), bool(aligned),
    )


def roi_align_backward_boxes(grad, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    return _roi_backward_boxes(
        grad, input, rois, float(spatial_scale), pooled_height, pooled_width, int(sampling_ratio), bool(aligned)
    )


def multiscale_roi_align_forward(features, rois, levels, scales, pooled_height, pooled_width, sampling_ratio,
                                 aligned):
    return _multiscale_forward(features, rois, levels, scales, pooled_height, pooled_width, int(sampling_ratio),
                               bool(aligned))


def multiscale_roi_align_backward_input(grad, rois, levels, scales, pooled_height, pooled_width, batch_size,
                                        channels, heights, widths, sampling_ratio, aligned):
    return _multiscale_backward_input(grad, rois, levels, scales, pooled_height, pooled_width, batch_size, channels,
                                      heights, widths, int(sampling_ratio), bool(aligned))


def multiscale_roi_align_backward_boxes(grad, features, rois, levels, scales, pooled_height, pooled_width,
                                        sampling_ratio, aligned):
    return _multiscale_backward_boxes(grad, features, rois, levels, scales, pooled_height, pooled_width,
                                      int(sampling_ratio), bool(aligned))


_KERNELS = {
    "crop_and_resize": OpKernels(
        crop_and_resize_forward, crop_and_resize_backward_input, crop_and_resize_backward_boxes
    ),
    "roi_align": OpKernels(roi_align_forward, roi_align_backward_input, roi_align_backward_boxes),
    "multiscale_roi_align": OpKernels(multiscale_roi_align_forward, multiscale_roi_align_backward_input,
                                      multiscale_roi_align_backward_boxes),
}

CPP = register(
    Backend(
        name="cpp",
        summary="C++ extension (csrc/<op>/*_cpu.cpp): parallel over boxes x channels; float64 bit-exact with reference",
        devices=("cpu",),
        dtypes=FLOAT_DTYPES,
        kernels=_KERNELS,
        unavailable_reason=_cpp_reason,
        bit_exact_dtypes=(torch.float64,),
    )
)

CUDA = register(
    Backend(
        name="cuda",
        summary="CUDA extension (csrc/<op>/*_cuda.cu): one thread per output; deterministic image gradient when "
        "torch.use_deterministic_algorithms(True)",
        devices=("cuda",),
        dtypes=FLOAT_DTYPES,
        kernels=_KERNELS,
        unavailable_reason=_cuda_reason,
        image_grad_modes=("atomic", "deterministic"),
    )
)
