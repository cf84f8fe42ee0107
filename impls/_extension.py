"""``cpp`` and ``cuda`` backends: glue to the compiled extension ``impls._C`` (``csrc/``).

The extension registers four operators, ``torch.ops.impls.{crop_and_resize,roi_align}_{forward,backward}``,
with CPU kernels (``csrc/cpu``, parallel over boxes x channels, float64 bit-exact with ``reference``) and, when
built with a CUDA toolkit, CUDA kernels (``csrc/cuda``). This module binds the op handles once, registers fake
kernels so the ops trace under ``torch.compile``, and registers the two backends. The package still imports
when the extension is not built: the backends then report why they are unavailable.
"""

from __future__ import annotations

import torch

from ._registry import Backend, OpKernels, register

try:
    from . import _C  # noqa: F401  (loading the library runs its TORCH_LIBRARY registrations)

    _IMPORT_ERROR = None
except (ImportError, OSError) as e:  # not built, or built against another torch
    _IMPORT_ERROR = f"{type(e).__name__}: {e}"

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

if _IMPORT_ERROR is None:
    _ops = torch.ops.impls
    _crop_fwd = _ops.crop_and_resize_forward.default
    _crop_bwd = _ops.crop_and_resize_backward.default
    _roi_fwd = _ops.roi_align_forward.default
    _roi_bwd = _ops.roi_align_backward.default

    @torch.library.register_fake("impls::crop_and_resize_forward")
    def _(image, boxes, box_index, crop_height, crop_width, method, extrapolation_value):
        return image.new_empty((boxes.shape[0], image.shape[1], crop_height, crop_width))

    @torch.library.register_fake("impls::crop_and_resize_backward")
    def _(grad, image, boxes, box_index, crop_height, crop_width, method, image_grad, boxes_grad):
        return (
            image.new_empty(image.shape if image_grad else (0,)),
            boxes.new_empty(boxes.shape if boxes_grad else (0,)),
        )

    @torch.library.register_fake("impls::roi_align_forward")
    def _(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
        return input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))

    @torch.library.register_fake("impls::roi_align_backward")
    def _(grad, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned, input_grad,
          rois_grad):
        return (
            input.new_empty(input.shape if input_grad else (0,)),
            rois.new_empty(rois.shape if rois_grad else (0,)),
        )


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
    return _crop_fwd(image, boxes, box_index, crop_height, crop_width, method, float(extrapolation_value))


def crop_and_resize_backward(grad, image, boxes, box_index, crop_height, crop_width, method, image_grad,
                             boxes_grad):
    grad_image, grad_boxes = _crop_bwd(
        grad, image, boxes, box_index, crop_height, crop_width, method, bool(image_grad), bool(boxes_grad)
    )
    return (grad_image if image_grad else None), (grad_boxes if boxes_grad else None)


def roi_align_forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    return _roi_fwd(input, rois, float(spatial_scale), pooled_height, pooled_width, int(sampling_ratio),
                    bool(aligned))


def roi_align_backward(grad, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned,
                       input_grad, rois_grad):
    grad_input, grad_rois = _roi_bwd(
        grad, input, rois, float(spatial_scale), pooled_height, pooled_width, int(sampling_ratio), bool(aligned),
        bool(input_grad), bool(rois_grad),
    )
    return (grad_input if input_grad else None), (grad_rois if rois_grad else None)


_KERNELS = {
    "crop_and_resize": OpKernels(crop_and_resize_forward, crop_and_resize_backward),
    "roi_align": OpKernels(roi_align_forward, roi_align_backward),
}

CPP = register(
    Backend(
        name="cpp",
        summary="C++ extension (csrc/cpu): parallel over boxes x channels; float64 bit-exact with reference",
        devices=("cpu",),
        dtypes=_DTYPES,
        kernels=_KERNELS,
        unavailable_reason=_cpp_reason,
    )
)

CUDA = register(
    Backend(
        name="cuda",
        summary="CUDA extension (csrc/cuda): one thread per output; deterministic image gradient when "
        "torch.use_deterministic_algorithms(True)",
        devices=("cuda",),
        dtypes=_DTYPES,
        kernels=_KERNELS,
        unavailable_reason=_cuda_reason,
    )
)
