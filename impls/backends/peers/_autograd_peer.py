"""What the pure-PyTorch peers share: their gradients are torch autograd's through their own forward.

``grid_sample`` and ``kornia`` are differentiable torch code, not kernels with a backward of their own; the
registry wants plain gradient kernels (``impls/core/registry.py``), so each gradient kernel re-runs the peer's forward
under autograd and asks ``torch.autograd.grad`` for the one gradient it returns. Their image gradient does not read the
image (``grid_sample`` is linear in it), so it is taken at a zero image of the right shape.
"""

from __future__ import annotations

from typing import Callable

import torch


def autograd_kernels(forward: Callable) -> tuple[Callable, Callable]:
    """``(backward_input, backward_boxes)`` in the registry's crop_and_resize signatures, for a differentiable
    ``forward(image, boxes, box_index, crop_height, crop_width, method, extrapolation_value)``."""

    def backward_input(grad, boxes, box_index, crop_height, crop_width, batch_size, channels, height, width, method):
        image = grad.new_zeros((batch_size, channels, height, width), requires_grad=True)
        with torch.enable_grad():
            out = forward(image, boxes.detach(), box_index, crop_height, crop_width, method, 0.0)
            return torch.autograd.grad(out, image, grad)[0]

    def backward_boxes(grad, image, boxes, box_index, crop_height, crop_width, method):
        boxes = boxes.detach().requires_grad_()
        with torch.enable_grad():
            out = forward(image.detach(), boxes, box_index, crop_height, crop_width, method, 0.0)
            return torch.autograd.grad(out, boxes, grad)[0]

    return backward_input, backward_boxes
