"""Multi-level RoIAlign: Mask R-CNN's FPN poolers, ours against ``torchvision.ops.MultiScaleRoIAlign`` (issue 21;
``matrix.multiscale_cases``)."""

import matrix
import pytest


@pytest.mark.parametrize(matrix.ARGNAMES, matrix.params(matrix.multiscale_cases()))
def test_multiscale_roi_align(run_case, op, backend, device, dtype, case, pass_):
    run_case(op, backend, device, dtype, case, pass_)
