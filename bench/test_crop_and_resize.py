"""crop_and_resize on the same proposals as the RoIAlign heads, with a 2x crop (``workloads.py``), on batches of
maps and of RGB images, and the write-bandwidth limit of each case's outputs (``matrix.limit_cases``).

``make bench`` runs this file a second time under an allocator that keeps freed pages (``bench/run.py``)."""

import matrix
import pytest


@pytest.mark.parametrize(matrix.ARGNAMES, matrix.params(matrix.head_cases("crop_and_resize")))
def test_crop_and_resize(run_case, op, backend, device, dtype, case, pass_):
    run_case(op, backend, device, dtype, case, pass_)


@pytest.mark.parametrize(matrix.ARGNAMES, matrix.params(matrix.limit_cases("crop_and_resize")))
def test_crop_and_resize_limit(run_limit, op, backend, device, dtype, case, pass_):
    run_limit(op, backend, device, dtype, case, pass_)
