"""crop_and_resize's benchmark facts (``bench/operators/__init__.py``): its inputs are the head workloads' boxes
normalized as the original port does (``workloads.crop_and_resize_inputs``)."""

from __future__ import annotations

import functools
from typing import Callable

import torch
from workloads import crop_and_resize_inputs as inputs  # noqa: F401  (this operator's fact)


def inside(call_inputs) -> torch.Tensor:
    """The boxes of ``call_inputs`` (``calls.Inputs``) whose corners lie in [0, 1], bool [K]."""
    return ((call_inputs.boxes >= 0) & (call_inputs.boxes <= 1)).all(1)


def grid_sample_forward(call_inputs) -> Callable:
    """The user's pure-PyTorch crop_and_resize (``impls/backends/peers/grid_sample.py``) on (image, boxes)."""
    from impls.backends.peers import grid_sample

    return functools.partial(grid_sample.crop_and_resize, box_index=call_inputs.box_index,
                             crop_size=call_inputs.kwargs["crop_size"])
