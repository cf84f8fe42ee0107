"""RoIAlign on Mask R-CNN heads: every available backend, forward and forward + backward (``matrix.py``)."""

import matrix
import pytest


@pytest.mark.parametrize(matrix.ARGNAMES, matrix.params(matrix.head_cases("roi_align")))
def test_roi_align(run_case, op, backend, device, dtype, case, pass_):
    run_case(op, backend, device, dtype, case, pass_)
