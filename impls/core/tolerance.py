"""How far a backend's results may be from the oracle's, per dtype: the one table the tests (``tests/cases.py``)
and the benchmark's checks (``bench/check.py``, ``bench/cuda_kernel_tour.py``) compare with.

An error is measured relative to the largest magnitude of the oracle's result (at least 1): ``|actual - expected|
<= TOLERANCE[dtype] * max(1, max|expected|)``. The oracle computes in float64 on the very values the backend
received (inputs rounded to the tested dtype first), so only the backend's own arithmetic is measured. The
bounds hold for sums of up to ~1e3 terms (an output or gradient element of the tests' maps); a check of larger
sums derives its bound from these, saying why, next to its use.
"""

from __future__ import annotations

import torch

# Terms summed into one result element that the bounds below allow for (see each reason).
TERMS = 1e3

TOLERANCE = {
    # Same formulas, other evaluation order (vectorized sums samples per tap, not per sample; CUDA box gradients
    # are tree reductions): a few ulps (2.2e-16 each) times the number of terms summed (< TERMS).
    torch.float64: 1e-12,
    # Coordinates are computed in float32: a position error of ~1e-6 px times |d value / d position| ~ 1,
    # accumulated over up to ~1e3 terms in a box gradient.
    torch.float32: 1e-4,
    # Inputs are rounded to 11 (float16) or 8 (bfloat16) mantissa bits before the oracle sees them, so only
    # the output rounding (2**-11, 2**-8 relative) and float32-accumulated sums remain.
    torch.float16: 4e-3,
    torch.bfloat16: 3e-2,
}
