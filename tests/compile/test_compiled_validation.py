"""Bad box values raise the same exception with the same message in a graph compiled by ``torch.compile`` as in
eager mode (``tests/api/test_bad_input.py``), on every backend that compiles and on every device: a compiled graph
calls the value checks as one custom operator that reads the values at run time (``impls/ops/<op>/arguments.py``).
Before, compiled graphs accepted NaN boxes (crop_and_resize returned extrapolation values), a batch index of 0.5
(it became 0) and, for ``vectorized``, box_index = -1 (it read image N - 1); later, compiled CPU graphs raised
RuntimeError without the values found and compiled CUDA graphs checked nothing. After a rejected call the same
compiled function still gives the eager result on good boxes. On a GPU the CUDA-graph mode
(``mode="reduce-overhead"``) is checked too.

Each (op, backend, device, mode) is compiled once per process and every bad case runs on that compiled function,
good boxes before and after it.
"""

import functools

import cases
import pytest
import torch

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
    """``(backend, device, mode)`` for every compiled backend on every device: compiled, and on CUDA the CUDA-graph
    mode as well."""
    return [
        pytest.param(*param.values, mode, id=f"{param.id}-{mode}")
        for param in cases.backend_device_params(op, exclude=NOT_COMPILED)
        for mode in ("compiled",) + (("reduce-overhead",) if param.values[1] == "cuda" else ())
    ]


def _roi_op(backend):
    # float64, spatial_scale 1e2: the overflow case's 1e307 is finite, and inf once scaled.
    return lambda x, r: impls.roi_align(x, r, 2, 1e2, 2, True, backend=backend)


def _crop_op(backend):
    return lambda x, b, i: impls.crop_and_resize(x, b, i, 3, backend=backend)


@functools.cache
def _compiled(make_op, backend, device, mode):
    """``make_op(backend)`` compiled for ``mode``, once per process (Dynamo's caches reset first, so that earlier
    tests' graphs do not count towards its recompile limit)."""
    torch._dynamo.reset()
    return torch.compile(make_op(backend), fullgraph=True, mode=None if mode == "compiled" else mode)


@pytest.mark.parametrize("case", ROI_CASES)
@pytest.mark.parametrize("backend,device,mode", _modes("roi_align"))
def test_roi_align_bad_values_raise_in_every_mode(backend, device, mode, case):
    rows, error, message = ROI_CASES[case]
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, device=device)
    good = torch.tensor([[1, 0.01, 0.01, 0.05, 0.06]], dtype=torch.float64, device=device)
    fn, eager = _compiled(_roi_op, backend, device, mode), _roi_op(backend)
    torch.testing.assert_close(fn(x, good), eager(x, good), rtol=1e-5, atol=1e-6)  # good boxes first
    with pytest.raises(error, match=message):
        fn(x, torch.tensor(rows, dtype=torch.float64, device=device))
    torch.testing.assert_close(fn(x, good), eager(x, good), rtol=1e-5, atol=1e-6)  # still usable after the error


@pytest.mark.parametrize("case", CROP_CASES)
@pytest.mark.parametrize("backend,device,mode", _modes("crop_and_resize"))
def test_crop_and_resize_bad_values_raise_in_every_mode(backend, device, mode, case):
    rows, index, error, message = CROP_CASES[case]
    x = torch.randn(2, 3, 8, 8, device=device)
    good = (torch.tensor([[0.2, 0.2, 0.7, 0.9]], device=device), torch.tensor([1], device=device))
    fn, eager = _compiled(_crop_op, backend, device, mode), _crop_op(backend)
    torch.testing.assert_close(fn(x, *good), eager(x, *good), rtol=1e-5, atol=1e-6)
    with pytest.raises(error, match=message):
        fn(x, torch.tensor(rows, device=device), torch.tensor(index, device=device))
    torch.testing.assert_close(fn(x, *good), eager(x, *good), rtol=1e-5, atol=1e-6)
