"""Bad box values give the same message in a compiled graph as in eager mode.

Eager mode reads the values once and raises ValueError/IndexError; a graph compiled by ``torch.compile`` cannot
read values while tracing, so on the CPU the same checks are assertions inside the graph, raising RuntimeError
with the same message (``impls/_validation.py``). Before, compiled graphs accepted NaN boxes (crop_and_resize
returned extrapolation values), a batch index of 0.5 (it became 0) and, for ``vectorized``, box_index = -1
(it read image N - 1). ``compiled`` runs ``vectorized``'s validation and loop, with its steps compiled inside the
user's graph.
"""

import pytest
import torch

import impls

BACKENDS = ("vectorized", "compiled", "cpp")
NAN = float("nan")

ROI_CASES = {
    "nan_box": ([[0, 1.0, NAN, 4.0, 5.0]], "boxes must be finite"),
    "inf_box": ([[0, 1.0, 1.0, float("inf"), 5.0]], "boxes must be finite"),
    "fractional_batch": ([[0.5, 1.0, 1.0, 4.0, 5.0]], "must hold whole numbers"),
    "batch_out_of_range": ([[2.0, 1.0, 1.0, 4.0, 5.0]], r"batch index\) must be in \[0, 2\)"),
}
CROP_CASES = {
    "nan_box": ([[0.1, NAN, 0.5, 0.5]], [0], "boxes must be finite"),
    "box_index_negative": ([[0.1, 0.1, 0.5, 0.5]], [-1], r"box_index must be in \[0, 2\)"),
    "box_index_high": ([[0.1, 0.1, 0.5, 0.5]], [2], r"box_index must be in \[0, 2\)"),
}


def _modes(fn):
    torch._dynamo.reset()
    return {"eager": fn, "compiled": torch.compile(fn)}


@pytest.mark.parametrize("mode", ("eager", "compiled"))
@pytest.mark.parametrize("case", ROI_CASES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_roi_align_bad_values_raise_in_both_modes(backend, case, mode):
    rows, message = ROI_CASES[case]
    x = torch.randn(2, 3, 8, 8)
    good = torch.tensor([[1, 1.0, 1.0, 5.0, 6.0]])
    fn = _modes(lambda x, r: impls.roi_align(x, r, 2, 1.0, 2, True, backend=backend))[mode]
    fn(x, good)  # the same graph first runs on good boxes
    with pytest.raises((ValueError, IndexError, RuntimeError), match=message):
        fn(x, torch.tensor(rows))


@pytest.mark.parametrize("mode", ("eager", "compiled"))
@pytest.mark.parametrize("case", CROP_CASES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_crop_and_resize_bad_values_raise_in_both_modes(backend, case, mode):
    rows, index, message = CROP_CASES[case]
    x = torch.randn(2, 3, 8, 8)
    fn = _modes(lambda x, b, i: impls.crop_and_resize(x, b, i, 3, backend=backend))[mode]
    fn(x, torch.tensor([[0.2, 0.2, 0.7, 0.9]]), torch.tensor([1]))
    with pytest.raises((ValueError, IndexError, RuntimeError), match=message):
        fn(x, torch.tensor(rows), torch.tensor(index))


# A graph compiled for CUDA cannot check values (impls/_validation.py), so there the kernels themselves receive bad
# image indices. Calling the kernels directly on the CPU shows what they do with them: the box's output is NaN and
# it gives no gradient, as the cuda extension's kernels do, instead of reading another image (-1 used to read image
# N - 1 in vectorized, through Python's negative indexing).
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
