"""Bad input raises a clear Python exception naming the argument, before any backend's kernel runs.

The checks are the public op's, the same whatever the backend, so each case runs once per device, through a
backend whose kernels fail the test if they are ever called (``unreachable``): what raises is the public op, never
a kernel. Elsewhere: that a misspelled backend is the first error, whatever else is wrong
(``tests/api/test_backends.py``); what each backend's kernels do with input the public ops would have stopped
(``tests/backends/test_raw_kernels.py``); the same errors from a compiled graph
(``tests/compile/test_compiled_validation.py``).
"""

import cases
import pytest
import torch

import impls
from impls.core import registry as _registry
from impls.ops import OPS


def _kernel_reached(*args):
    raise AssertionError("a kernel ran: the public op did not reject the input before the backend")


@pytest.fixture
def unreachable(monkeypatch) -> str:
    """The name of a backend, registered for this test, that implements both ops on every device and dtype with
    kernels that fail the test when called."""
    kernels = _registry.OpKernels(_kernel_reached, _kernel_reached, _kernel_reached)
    backend = _registry.Backend(name="unreachable", summary="kernels that must not run", devices=("cpu", "cuda"),
                                dtypes=_registry.FLOAT_DTYPES, kernels={op: kernels for op in OPS})
    monkeypatch.setitem(_registry._BACKENDS, backend.name, backend)
    return backend.name


def _on(device, args: dict) -> dict:
    """``args`` with every tensor (and every tensor of a list) moved to ``device``; other values as they are."""
    def move(v):
        if isinstance(v, torch.Tensor):
            return v.to(device)
        if isinstance(v, list):
            return [move(t) for t in v]
        return v
    return {name: move(v) for name, v in args.items()}


def _crop_args(**change):
    args = dict(
        image=torch.zeros(2, 3, 5, 6), boxes=torch.tensor([[0.1, 0.1, 0.9, 0.9]] * 3),
        box_index=torch.tensor([0, 1, 1]), crop_size=(2, 2),
    )
    args.update(change)
    return args


CROP_ERRORS = {
    "image_3d": (dict(image=torch.zeros(3, 5, 6)), ValueError, "image must be 4-D"),
    "image_int": (dict(image=torch.zeros(2, 3, 5, 6, dtype=torch.int64)), TypeError, "image must be a floating"),
    "image_empty_plane": (dict(image=torch.zeros(2, 3, 0, 6)), ValueError, "H > 0 and W > 0"),
    "boxes_k3": (dict(boxes=torch.zeros(3, 3)), ValueError, r"boxes must be a Tensor\[K, 4\]"),
    "boxes_dtype": (dict(boxes=torch.zeros(3, 4, dtype=torch.float64)), TypeError, "cast boxes to torch.float32"),
    # A half-precision map with float32 boxes: the message points at autocast, not at rounding the boxes to float16.
    "boxes_dtype_half_map": (dict(image=torch.zeros(2, 3, 5, 6, dtype=torch.float16)), TypeError,
                             "keep boxes in torch.float32 and call the op under torch.autocast"),
    "boxes_nan": (dict(boxes=torch.tensor([[0.1, 0.1, float("nan"), 0.9]] * 3)), ValueError, "boxes must be finite"),
    "boxes_inf": (dict(boxes=torch.tensor([[0.1, 0.1, float("inf"), 0.9]] * 3)), ValueError, "boxes must be finite"),
    "box_index_float": (dict(box_index=torch.tensor([0.0, 1.0, 1.0])), TypeError, "box_index must be int32 or int64"),
    "box_index_2d": (dict(box_index=torch.tensor([[0, 1, 1]])), ValueError, r"box_index must be a Tensor\[K\]"),
    "box_index_count": (dict(box_index=torch.tensor([0, 1])), ValueError, "box_index has 2 entries but boxes has 3"),
    "box_index_high": (dict(box_index=torch.tensor([0, 2, 1])), IndexError, r"box_index must be in \[0, 2\)"),
    "box_index_negative": (dict(box_index=torch.tensor([0, -1, 1])), IndexError, r"box_index must be in \[0, 2\)"),
    "crop_size_zero": (dict(crop_size=(0, 2)), ValueError, "crop_size must be positive"),
    "crop_size_float": (dict(crop_size=(2.0, 2)), TypeError, "crop_size must be an int or a pair"),
    "method": (dict(method="bicubic"), ValueError, "method must be one of"),
    "extrapolation_value": (dict(extrapolation_value="0"), TypeError, "extrapolation_value must be a number"),
}


@pytest.mark.parametrize("case", CROP_ERRORS)
@pytest.mark.parametrize("device", cases.DEVICES)
def test_crop_and_resize_rejects(device, case, unreachable):
    change, error, message = CROP_ERRORS[case]
    with pytest.raises(error, match=message):
        impls.crop_and_resize(**_on(device, _crop_args(**change)), backend=unreachable)


def _roi_args(**change):
    args = dict(input=torch.zeros(2, 3, 5, 6), boxes=torch.tensor([[0, 0.5, 0.5, 3.0, 4.0], [1, 1, 1, 2, 2]]),
                output_size=(2, 2))
    args.update(change)
    return args


ROI_ERRORS = {
    "input_5d": (dict(input=torch.zeros(1, 2, 3, 5, 6)), ValueError, "input must be 4-D"),
    "input_not_tensor": (dict(input=[[1.0]]), TypeError, r"input must be a Tensor\[N, C, H, W\]"),
    "boxes_k4": (dict(boxes=torch.zeros(2, 4)), ValueError, r"boxes must be a Tensor\[K, 5\]"),
    "boxes_list_k5": (dict(boxes=[torch.zeros(2, 5)]), ValueError, r"boxes\[0\] must be a Tensor\[L, 4\]"),
    "boxes_list_too_long": (dict(boxes=[torch.zeros(1, 4)] * 3), IndexError, "list of 3 tensors but input has only 2"),
    "boxes_dtype": (dict(boxes=torch.zeros(2, 5, dtype=torch.float64)), TypeError, "cast boxes to torch.float32"),
    "boxes_dtype_half_map": (dict(input=torch.zeros(2, 3, 5, 6, dtype=torch.bfloat16)), TypeError,
                             "keep boxes in torch.float32 and call the op under torch.autocast"),
    "boxes_not_tensor": (dict(boxes="boxes"), TypeError, "boxes must be a Tensor"),
    "batch_index_high": (dict(boxes=torch.tensor([[2.0, 0, 0, 1, 1]])), IndexError, r"batch index\) must be in"),
    "batch_index_fraction": (dict(boxes=torch.tensor([[0.5, 0, 0, 1, 1]])), ValueError, "whole numbers"),
    "boxes_nan": (dict(boxes=torch.tensor([[0.0, 0, float("nan"), 1, 1]])), ValueError, "boxes must be finite"),
    "output_size_negative": (dict(output_size=-1), ValueError, "output_size must be positive"),
    "output_size_triple": (dict(output_size=(2, 2, 2)), TypeError, "output_size must be an int or a pair"),
    "spatial_scale_zero": (dict(spatial_scale=0.0), ValueError, "spatial_scale must be a positive number"),
    "spatial_scale_inf": (
        dict(spatial_scale=float("inf")), ValueError, "spatial_scale must be a positive number, and finite"
    ),
    # Finite boxes that leave float64 once scaled: no backend can place their samples.
    "boxes_overflow_when_scaled": (
        dict(boxes=torch.tensor([[0.0, 0, 0, 1e300, 1e300]], dtype=torch.float64),
             input=torch.zeros(2, 3, 5, 6, dtype=torch.float64), spatial_scale=1e10),
        ValueError, r"boxes \* spatial_scale .* overflows",
    ),
    "sampling_ratio_float": (dict(sampling_ratio=1.5), TypeError, "sampling_ratio must be an int"),
    "aligned_int": (dict(aligned=1), TypeError, "aligned must be a bool"),
}


@pytest.mark.parametrize("case", ROI_ERRORS)
@pytest.mark.parametrize("device", cases.DEVICES)
def test_roi_align_rejects(device, case, unreachable):
    change, error, message = ROI_ERRORS[case]
    with pytest.raises(error, match=message):
        impls.roi_align(**_on(device, _roi_args(**change)), backend=unreachable)


if "cuda" in cases.DEVICES:  # needs two devices: defined only where it can run, no skipped test on a CPU machine

    def test_tensors_on_two_devices_are_rejected():
        crop = _on("cuda", _crop_args())
        with pytest.raises(ValueError, match="move both to one device"):
            impls.crop_and_resize(**dict(crop, boxes=crop["boxes"].cpu()), backend="cuda")
        with pytest.raises(ValueError, match="box_index is on cpu but image is on cuda"):
            impls.crop_and_resize(**dict(crop, box_index=crop["box_index"].cpu()), backend="cuda")
        roi = _on("cuda", _roi_args())
        with pytest.raises(ValueError, match="move both to one device"):
            impls.roi_align(**dict(roi, boxes=roi["boxes"].cpu()), backend="cuda")
        with pytest.raises(ValueError, match="move both to one device"):
            impls.roi_align(**dict(roi, boxes=[roi["boxes"][:1, 1:], roi["boxes"][1:, 1:].cpu()]), backend="cuda")


def test_modules_reject_bad_sizes_and_boxes():
    with pytest.raises(ValueError, match=r"\(crop_height, crop_width\) must be positive"):
        impls.CropAndResize(0, 3)
    with pytest.raises(TypeError, match=r"\(crop_height, crop_width\) must be an int or a pair"):
        impls.RoIAlign(2.5, 3)
    with pytest.raises(ValueError, match=r"boxes must be a Tensor\[K, 4\] of pixel"):
        impls.RoIAlign(2, 2)(torch.zeros(1, 1, 4, 4), torch.zeros(1, 5), torch.tensor([0]))
