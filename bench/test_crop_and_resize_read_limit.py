"""The read limit of crop_and_resize's forward in each layout: the cache lines its taps touch, each read once, with
nothing computed or written (``matrix.read_limit_cases``). Timed under the process's own allocator only: nothing
in the timed region allocates more than a sum per bag."""

import matrix
import pytest


@pytest.mark.parametrize(matrix.ARGNAMES, matrix.params(matrix.read_limit_cases("crop_and_resize")))
def test_crop_and_resize_read_limit(run_read_limit, op, backend, device, dtype, case, pass_):
    run_read_limit(op, backend, device, dtype, case, pass_)
