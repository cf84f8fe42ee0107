"""crop_and_resize on the same proposals as the RoIAlign heads, with a 2x crop (``workloads.py``)."""

import pytest

import matrix


@pytest.mark.parametrize(matrix.ARGNAMES, matrix.params(matrix.head_cases("crop_and_resize")))
def test_crop_and_resize(run_case, op, backend, device, dtype, case, pass_):
    run_case(op, backend, device, dtype, case, pass_)
