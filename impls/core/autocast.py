"""How the public ops behave under ``torch.autocast``: they run in float32 and return the feature map's dtype.

This is torchvision's rule for its ``roi_align`` (an autocast kernel that casts to float32 and back), applied to
both ops and every backend, so that a detector trained with mixed precision can swap one for the other. Under
autocast a feature map comes out of a convolution in float16 or bfloat16 while boxes usually stay float32; the
op casts float16/bfloat16 arguments to float32 (float64 is left alone, as autocast leaves it), computes with
autocast off, and casts the output back to the feature map's dtype. Gradients flow through the casts, so the map
gets a gradient in its own dtype and the boxes in theirs.

Why not the map's dtype: the kernels take boxes in the map's dtype, and casting float32 boxes down to bfloat16
rounds their corners to 8 mantissa bits (a corner at x = 700 px moves by up to 2 px): on a P2 box head the
result is then wrong by about the values' own size, where float32 is off by one bfloat16 rounding. The price of
float32 is one float32 copy of the map and float32 loads instead of half-precision ones; kernels taking float32
boxes beside a half-precision map would remove it.
"""

from __future__ import annotations

from typing import Optional

import torch


def active_device_type(x: torch.Tensor) -> Optional[str]:
    """The device type whose autocast is on for ``x``, or None."""
    device_type = x.device.type
    return device_type if torch.is_autocast_enabled(device_type) else None


def to_float32(t):
    """A float16/bfloat16 tensor (or a list of them) as float32; anything else unchanged."""
    if isinstance(t, (list, tuple)):
        return [to_float32(b) for b in t]
    if isinstance(t, torch.Tensor) and t.dtype in (torch.float16, torch.bfloat16):
        return t.float()
    return t
