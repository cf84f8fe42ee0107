"""Rotated RoIAlign on oriented boxes of a DOTA-like aerial image: every backend with the op's kernels against
OpenVINO's ROIAlignRotated and the pure-PyTorch ``grid_sample`` version, forward and forward + backward
(``matrix.own_cases``: ``bench/operators/roi_align_rotated.py``). Alone:
``python bench/run.py -k roi_align_rotated``."""

import matrix
import pytest


@pytest.mark.parametrize(matrix.ARGNAMES, matrix.params(matrix.own_cases("roi_align_rotated")))
def test_roi_align_rotated(run_case, op, backend, device, dtype, case, pass_):
    run_case(op, backend, device, dtype, case, pass_)
