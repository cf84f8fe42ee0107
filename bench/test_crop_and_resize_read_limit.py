"""The read limit of crop_and_resize's forward in each layout: the cache lines its taps touch, each read once, with
nothing computed or written (``matrix.read_limit_cases``). Timed under the process's own allocator only: the timed
call allocates nothing of note. A matrix without CPU cases (``BENCH=gpu``) has none, and then no test is defined,
rather than one collected from an empty parameter set."""

import matrix
import pytest

CASES = matrix.read_limit_cases("crop_and_resize")

if CASES:

    @pytest.mark.parametrize(matrix.ARGNAMES, matrix.params(CASES))
    def test_crop_and_resize_read_limit(run_read_limit, op, backend, device, dtype, case, pass_):
        run_read_limit(op, backend, device, dtype, case, pass_)
