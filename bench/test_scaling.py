"""How cost grows: the P2 box head over the number of boxes, and a fixed set of boxes over the feature-map size.

The report plots these log-log, with the head cases of the same shape as extra points (``report.py``).
"""

import matrix
import pytest


@pytest.mark.parametrize(
    matrix.ARGNAMES, matrix.params(matrix.sweep_cases("roi_align") + matrix.sweep_cases("crop_and_resize"))
)
def test_scaling(run_case, op, backend, device, dtype, case, pass_):
    run_case(op, backend, device, dtype, case, pass_)
