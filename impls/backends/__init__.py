"""Every implementation, one module or package per backend, named after it (the README's table of backends):

* ``reference``: plain Python loops, the oracle;
* ``vectorized``: pure torch, chunked over boxes; ``compiled``: the same with its steps compiled by torch.compile
  (both run the kernels of ``_chunked``; ``_adaptive_ops`` makes the adaptive grid traceable; ``_roi_geometry``
  holds roi_align's per-box geometry, which ``triton`` uses too);
* ``extension``: ``cpp`` and ``cuda``, the compiled extension ``impls._C`` (``csrc/``);
* ``triton/``: hand-written Triton kernels (``kernels``), their launcher and the geometry table they read;
* ``peers/``: other projects' kernels wrapped for comparison, one module per peer.

Importing this package registers every backend (``impls/core/registry.py``), then imports each operator's
``backends.py`` where it has one: an operator whose kernels live in its own folder adds them to these records there.
"""

import importlib
import importlib.util

# The registration order is the order impls.backends() lists them in.
# isort: off
from . import reference, vectorized, compiled, _adaptive_ops, extension  # noqa: F401  (each registers)
from .triton import launcher  # noqa: F401  (registers "triton": cuda, or cpu under TRITON_INTERPRET=1)
from . import peers  # noqa: F401
# isort: on
from ..ops import OPS  # noqa: E402

for _op in OPS:
    if importlib.util.find_spec(f"impls.ops.{_op}.backends") is not None:
        importlib.import_module(f"impls.ops.{_op}.backends")
