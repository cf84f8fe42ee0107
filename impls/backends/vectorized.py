"""``vectorized``: pure torch, no loops over samples, any device torch runs on.

Both operators are chunk loops over boxes (``_chunked.py``, shared with ``compiled``): per chunk, the samples'
geometry and one step of gathers, weights and sums (``sample_step``), ``index_put_`` (``scatter_step``, the image
gradient) or reductions (``box_grad_step``, the box gradient). This backend runs those steps eagerly.

Cost: a feature map that is not channels_last float32/64 is copied once to ``[N*H*W, C]`` rows; then about five
gathered tensors of ``chunk x samples x C`` per chunk (``_chunked._CHUNK_ELEMENTS`` bounds them, ~100 MB), however
many boxes there are. Half types are computed in float32. Mirrors ``reference`` expression for expression in the
sample positions; the sums run in another order, so float results agree to rounding, not bit for bit.
"""

from __future__ import annotations

from ..core.registry import FLOAT_DTYPES, Backend, register
from . import _chunked

EAGER = _chunked.Steps("vectorized", _chunked.sample_step, _chunked.scatter_step, _chunked.box_grad_step)

BACKEND = register(
    Backend(
        name="vectorized",
        summary="pure torch gathers and index_put_, chunked over boxes; any torch device",
        devices=("cpu", "cuda"),
        dtypes=FLOAT_DTYPES,
        kernels=_chunked.kernels_with(EAGER),
    )
)
