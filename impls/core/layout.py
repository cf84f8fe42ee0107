"""The memory-layout rule every backend of ours follows, as ``conv2d`` does: a forward returns the feature map's
layout (channels_last in, channels_last out), an input gradient the incoming gradient's layout (channels_last in a
channels_last network). A strided tensor that is neither counts as contiguous NCHW."""

from __future__ import annotations

import torch


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last for a 4-D tensor laid out channels last (and not also NCHW, as when C = 1), else NCHW: the
    choice ATen's ``suggest_memory_format`` makes in the C++ kernels for such tensors."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def like(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``t`` in ``x``'s memory format (a no-op when it already is)."""
    return t.contiguous(memory_format=memory_format(x))
