"""Loads ``impls`` (and with it torchvision) before any test module imports tensorflow: torchvision loaded after
tensorflow crashes in its roi_align kernel (see impls/peers.py)."""

import impls  # noqa: F401
