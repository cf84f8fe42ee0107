"""How much work one call does: bilinear samples and bytes moved, to turn a time into a rate.

* Samples: per channel, per forward call. roi_align: ``C * PH * PW * sum over boxes of gh * gw`` with the grid of
  semantics.md section 3 (``sampling_ratio``, or adaptive ``ceil(roi_size / output_size)`` per box); the P2 box
  head is 512 * 256 * 49 * 4 = 25.7M. crop_and_resize: ``K * C * crop_height * crop_width``. A ``fwdbwd`` call is
  credited with the same samples (its backward revisits each one).
* Bytes moved: the compulsory traffic, each tensor read or written once: the feature map, the boxes and the output
  (plus, with a backward, the upstream gradient read and the image and box gradients written). Real kernels move
  more (four corners per sample, partly from cache), so this is a lower bound: bytes / time is an achieved
  bandwidth to set against the memory's peak, not a measurement of it.
"""

from __future__ import annotations

import torch

from calls import Inputs


def samples(inputs: Inputs) -> int:
    """Bilinear samples (per channel) in one forward call."""
    _, channels, _, _ = inputs.image.shape
    if inputs.op == "crop_and_resize":
        crop_h, crop_w = inputs.kwargs["crop_size"]
        return inputs.boxes.shape[0] * channels * crop_h * crop_w
    out_h, out_w = inputs.kwargs["output_size"]
    ratio = inputs.kwargs["sampling_ratio"]
    if ratio > 0:
        return inputs.boxes.shape[0] * channels * out_h * out_w * ratio * ratio
    rois = inputs.boxes.detach().cpu().to(torch.float64) * inputs.kwargs["spatial_scale"]  # [K, 5]
    # aligned=True (every workload): the box sides are not clamped to 1 before the adaptive grid is chosen.
    assert inputs.kwargs["aligned"], "the adaptive grid below assumes aligned=True"
    grid_h = torch.ceil((rois[:, 4] - rois[:, 2]) / out_h)  # [K]
    grid_w = torch.ceil((rois[:, 3] - rois[:, 1]) / out_w)  # [K]
    return int((grid_h * grid_w).sum()) * channels * out_h * out_w


def bytes_moved(inputs: Inputs, pass_: str) -> int:
    """Compulsory bytes of one call (see the module docstring)."""
    def size(t: torch.Tensor) -> int:
        return t.numel() * t.element_size()

    output = inputs.grad_output  # the output's shape and dtype
    total = size(inputs.image) + size(inputs.boxes) + size(output)
    if inputs.box_index is not None:
        total += size(inputs.box_index)
    if pass_ != "fwd":
        total += size(inputs.grad_output) + size(inputs.image)
    if pass_ == "fwdbwd_boxes":
        total += size(inputs.boxes)
    return total


def peak_bandwidth(device: torch.device) -> float | None:
    """The memory's peak bytes per second (double data rate x bus width), or None where unknown (CPUs)."""
    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    clock_khz = getattr(props, "memory_clock_rate", 0)
    bus_bits = getattr(props, "memory_bus_width", 0)
    if not (clock_khz and bus_bits):
        return None
    return 2 * clock_khz * 1e3 * bus_bits / 8
