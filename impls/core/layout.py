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


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a kernel computes in: float64 for float64, float32 for float32 and the half types (``at::opmath``)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def channel_rows(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N*H*W, C], contiguous, in the compute dtype: the map as rows of channels, which the pure
    torch kernels gather from (a view of a channels_last float32/64 map, else one copy)."""
    N, C, H, W = x.shape
    return x.permute(0, 2, 3, 1).reshape(N * H * W, C).to(compute_dtype(x.dtype)).contiguous()


def cells_last(grad: torch.Tensor) -> torch.Tensor:
    """An incoming gradient [K, C, PH, PW] as contiguous [K, PH, PW, C] in the compute dtype."""
    return grad.permute(0, 2, 3, 1).to(compute_dtype(grad.dtype)).contiguous()
