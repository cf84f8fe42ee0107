"""The peers, wrapped as backends for cross-checks and benchmarks: other projects' kernels, not ours.

Each runs its project's own code and keeps that project's limits; its record says ``peer=True``. One module per
peer: ``torchvision`` and ``tensorflow`` (their kernels, forward and backward called directly, no autograd of
theirs); the deployment runtimes ``onnxruntime`` and ``openvino`` (roi_align forward only); ``grid_sample`` and
``kornia``, crop_and_resize in pure PyTorch, whose gradients are torch autograd's (``_autograd_peer``).
"""

# NB: torchvision is imported first, so that it is always loaded before tensorflow: loaded after tensorflow in the
# same process, its roi_align kernel crashes the interpreter (SIGSEGV; seen with tensorflow-cpu 2.21 and
# torchvision 0.29.1).
from . import torchvision  # noqa: F401,I001  (each registers its backend)
from . import tensorflow  # noqa: F401
from . import onnxruntime, openvino, grid_sample, kornia  # noqa: F401
