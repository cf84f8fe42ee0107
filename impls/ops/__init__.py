"""One folder per operator, everything Python knows about it side by side: ``spec.py`` (schemas defined once, fake
kernels, the autograd Function), ``arguments.py`` (validation), ``op.py`` (the public function), ``module.py``
(its ``nn.Module``), ``reference.py`` (the oracle's kernels), ``onnx.py`` (the ONNX translation), and where the
operator's pure-torch kernels live in its folder, ``backends.py`` (they join the shared backend records there).
Importing this package defines every operator's schemas; the backends (``impls/backends/``) then register kernels
for them.

``OPS`` lists the operators a backend record may carry kernels for (``kernels[op]``); multi-level roi_align is
optional there: a backend without it pools level by level through its roi_align.
"""

from . import crop_and_resize, multiscale_roi_align, roi_align, roi_align_rotated  # noqa: F401  (each defines its schemas)

OPS = ("crop_and_resize", "roi_align", "multiscale_roi_align", "roi_align_rotated")
