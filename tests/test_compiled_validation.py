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
