"""Bad box values raise the same exception with the same message in a graph compiled by ``torch.compile`` as in
eager mode, on every backend that compiles and on every device: a compiled graph calls the value checks as one
custom operator that reads the values at run time (``impls/_validation.py``). Before, compiled graphs accepted NaN
boxes (crop_and_resize returned extrapolation values), a batch index of 0.5 (it became 0) and, for ``vectorized``,
box_index = -1 (it read image N - 1); later, compiled CPU graphs raised RuntimeError without the values found and
compiled CUDA graphs checked nothing. After a rejected call the same compiled function still gives the eager
result on good boxes. On a GPU the CUDA-graph mode (``mode="reduce-overhead"``) is checked too.
"""

import pytest
import torch

import cases
import impls

# reference (Python loops over every sample) and tensorflow (not torch) are not compiled.
NOT_COMPILED = ("reference", "tensorflow")
NAN = float("nan")

ROI_CASES = {
    "nan_box": ([[0, 1.0, NAN, 4.0, 5.0]], ValueError, "boxes must be finite"),
    "inf_box": ([[0, 1.0, 1.0, float("inf"), 5.0]], ValueError, "boxes must be finite"),
    "fractional_batch": ([[0.5, 1.0, 1.0, 4.0, 5.0]], ValueError, "must hold whole numbers"),
    "batch_out_of_range": ([[2.0, 1.0, 1.0, 4.0, 5.0]], IndexError,
                           r"batch index\) must be in \[0, 2\), found values in \[2, 2\]"),
    "overflow": ([[0, 1.0, 1.0, 1e307, 5.0]], ValueError, r"overflows to inf"),
}
CROP_CASES = {
    "nan_box": ([[0.1, NAN, 0.5, 0.5]], [0], ValueError, "boxes must be finite"),
    "box_index_negative": ([[0.1, 0.1, 0.5, 0.5]], [-1], IndexError, r"box_index must be in \[0, 2\).*\[-1, -1\]"),
    "box_index_high": ([[0.1, 0.1, 0.5, 0.5]], [2], IndexError, r"box_index must be in \[0, 2\).*\[2, 2\]"),
}


def _modes(op: str) -> list:
    """``(backend, device, mode)`` for every compiled backend on every device: eager, compiled, and on CUDA the
    CUDA-graph mode as well."""
    return [
        pytest.param(*param.values, mode, id=f"{param.id}-{mode}")
        for param in cases.backend_device_params(op, exclude=NOT_COMPILED)
        for mode in ("eager", "compiled") + (("reduce-overhead",) if param.values[1] == "cuda" else ())
    ]


def _in_mode(fn, mode):
    if mode == "eager":
        return fn
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, mode=None if mode == "compiled" else mode)


@pytest.mark.parametrize("case", ROI_CASES)
@pytest.mark.parametrize("backend,device,mode", _modes("roi_align"))
def test_roi_align_bad_values_raise_in_every_mode(backend, device, mode, case):
    rows, error, message = ROI_CASES[case]

    # float64, spatial_scale 1e2: the overflow case's 1e307 is finite, and inf once scaled.
    def op(x, r):
        return impls.roi_align(x, r, 2, 1e2, 2, True, backend=backend)

    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, device=device)
    good = torch.tensor([[1, 0.01, 0.01, 0.05, 0.06]], dtype=torch.float64, device=device)
    fn = _in_mode(op, mode)
    fn(x, good)  # the same graph first runs on good boxes
    with pytest.raises(error, match=message):
        fn(x, torch.tensor(rows, dtype=torch.float64, device=device))
    torch.testing.assert_close(fn(x, good), op(x, good), rtol=1e-5, atol=1e-6)  # still usable after the error


@pytest.mark.parametrize("case", CROP_CASES)
@pytest.mark.parametrize("backend,device,mode", _modes("crop_and_resize"))
def test_crop_and_resize_bad_values_raise_in_every_mode(backend, device, mode, case):
    rows, index, error, message = CROP_CASES[case]

    def op(x, b, i):
        return impls.crop_and_resize(x, b, i, 3, backend=backend)

    x = torch.randn(2, 3, 8, 8, device=device)
    good = (torch.tensor([[0.2, 0.2, 0.7, 0.9]], device=device), torch.tensor([1], device=device))
    fn = _in_mode(op, mode)
    fn(x, *good)
    with pytest.raises(error, match=message):
        fn(x, torch.tensor(rows, device=device), torch.tensor(index, device=device))
    torch.testing.assert_close(fn(x, *good), op(x, *good), rtol=1e-5, atol=1e-6)


# The kernels called directly (a caller bypassing the public ops) with bad image indices: the box's output is NaN
# and it gives no gradient, as the cuda extension's and triton's kernels do (tests/test_triton_backend.py), instead
# of reading another image (-1 used to read image N - 1 in vectorized, through Python's negative indexing).
KERNEL_BACKENDS = ("vectorized", "compiled")


@pytest.mark.parametrize("bad", [-1.0, 2.0, 0.5])
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_roi_align_kernels_give_nan_for_a_bad_image_index(backend, bad):
    kernels = impls._registry.kernels(backend, "roi_align", torch.device("cpu"), torch.float32)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 8, 8, generator=g)
    rois = torch.tensor([[1, 1.0, 1.0, 5.0, 6.0], [bad, 1.0, 1.0, 5.0, 6.0]])
    grad = torch.randn(2, 3, 2, 2, generator=g)
    args = (1.0, 2, 2, 2, True)  # spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned
    out = kernels.forward(x, rois, *args)
    assert out[1].isnan().all() and not out[0].isnan().any()
    grad_input = kernels.backward_input(grad, rois, 1.0, 2, 2, 2, 3, 8, 8, 2, True)
    alone = kernels.backward_input(grad[:1], rois[:1], 1.0, 2, 2, 2, 3, 8, 8, 2, True)
    torch.testing.assert_close(grad_input, alone)  # the bad box adds nothing
    grad_boxes = kernels.backward_boxes(grad, x, rois, *args)
    assert torch.equal(grad_boxes[1], torch.zeros(5)) and grad_boxes[0].abs().sum() > 0


@pytest.mark.parametrize("bad", [-1, 2])
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_crop_and_resize_kernels_give_nan_for_a_bad_image_index(backend, bad):
    kernels = impls._registry.kernels(backend, "crop_and_resize", torch.device("cpu"), torch.float32)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 8, 8, generator=g)
    boxes = torch.tensor([[0.1, 0.2, 0.7, 0.9], [0.1, 0.2, 0.7, 0.9]])
    box_index = torch.tensor([1, bad])
    grad = torch.randn(2, 3, 3, 3, generator=g)
    out = kernels.forward(x, boxes, box_index, 3, 3, "bilinear", 0.0)
    assert out[1].isnan().all() and not out[0].isnan().any()
    grad_image = kernels.backward_input(grad, boxes, box_index, 3, 3, 2, 3, 8, 8, "bilinear")
    alone = kernels.backward_input(grad[:1], boxes[:1], box_index[:1], 3, 3, 2, 3, 8, 8, "bilinear")
    torch.testing.assert_close(grad_image, alone)
    grad_boxes = kernels.backward_boxes(grad, x, boxes, box_index, 3, 3, "bilinear")
    assert torch.equal(grad_boxes[1], torch.zeros(4)) and grad_boxes[0].abs().sum() > 0
