"""How the two operators relate (CONVENTIONS.md §4), checked per backend and across the two peers:

* the original port's ``RoIAlign(transform_fpcoor=True)`` samples where ``roi_align(aligned=True,
  sampling_ratio=1)`` does, so on interior boxes (no clamping, no extrapolation) the two are equal;
* a crop at ``k`` times the output size, average-pooled by ``k``, is ``roi_align(aligned=True, sampling_ratio=k)``.
"""

import cases
import pytest
import torch
import torch.nn.functional as F

import impls

# float64's tolerance (cases.TOLERANCE) holds: the two paths compute the same sample positions by different
# formulas (normalize, then denormalize), which differ by a few ulps of a coordinate ~10 px.
TOLERANCE = cases.TOLERANCE[torch.float64]
# The peers in float32: positions agree to ~1e-6 px, values are O(1).
PEER_TOLERANCE = 1e-5
# (backend, device) for the backends that implement both ops on that device, in float64.
BOTH_OPS = [
    pytest.param(b, d, id=f"{b}-{d}")
    for d in cases.DEVICES
    for b in cases.backends_for("roi_align", d, torch.float64)
    if b in cases.backends_for("crop_and_resize", d, torch.float64)
]


def _interior_boxes(k=6, h=9, w=11, seed=51):
    """Pixel (x1, y1, x2, y2) [K, 4] well inside the map: every sample of both ops lies in [0, size - 1]."""
    g = torch.Generator().manual_seed(seed)
    x1 = 0.6 + torch.rand(k, generator=g, dtype=torch.float64) * (w - 6)
    y1 = 0.6 + torch.rand(k, generator=g, dtype=torch.float64) * (h - 6)
    bw = 1 + torch.rand(k, generator=g, dtype=torch.float64) * 3.5
    bh = 1 + torch.rand(k, generator=g, dtype=torch.float64) * 3.5
    return torch.stack([x1, y1, x1 + bw, y1 + bh], dim=1)


def _rois(boxes, box_index):
    return torch.cat([box_index.to(boxes.dtype)[:, None], boxes], dim=1)  # [K, 5]


def _pair(crop_backend, roi_backend, dtype, k, device="cpu"):
    x = cases.feature_map(seed=52).to(device, dtype)  # [2, 3, 9, 11]
    boxes = _interior_boxes().to(device, dtype)
    box_index = torch.tensor([0, 1, 1, 0, 1, 0], device=device)
    size = (3, 4)
    crop = impls.RoIAlign(k * size[0], k * size[1], transform_fpcoor=True, backend=crop_backend)(x, boxes, box_index)
    pooled = F.avg_pool2d(crop, k)  # [K, C, 3, 4]
    roi = impls.roi_align(x, _rois(boxes, box_index), size, sampling_ratio=k, aligned=True, backend=roi_backend)
    return pooled, roi


@pytest.mark.parametrize("k", [1, 2, 3], ids=lambda k: f"k{k}")
@pytest.mark.parametrize("backend,device", BOTH_OPS)
def test_fpcoor_crop_pooled_equals_aligned_roi_align(backend, device, k):
    pooled, roi = _pair(backend, backend, torch.float64, k, device)
    assert pooled.device.type == device and roi.device.type == device
    cases.assert_close(pooled, roi, TOLERANCE, f"RoIAlign({k}x size) + avg_pool2d({k}) vs roi_align(sr={k})")


@pytest.mark.needs_peers("tensorflow", "torchvision")
@pytest.mark.parametrize("k", [1, 2], ids=lambda k: f"k{k}")
def test_identity_holds_between_tensorflow_and_torchvision(k):
    pooled, roi = _pair("tensorflow", "torchvision", torch.float32, k)
    cases.assert_close(pooled, roi, PEER_TOLERANCE, "tensorflow crop + pool vs torchvision roi_align")


@pytest.mark.parametrize("backend,device", BOTH_OPS)
def test_the_identity_needs_interior_boxes(backend, device):
    # A box over the border breaks it: crop_and_resize extrapolates (0) where roi_align clamps in [-1, H].
    x = cases.feature_map(seed=53).to(device)
    boxes = torch.tensor([[-0.8, 2.0, 3.0, 5.0]], dtype=torch.float64, device=device)
    box_index = torch.tensor([0], device=device)
    crop = impls.RoIAlign(2, 2, backend=backend)(x, boxes, box_index)
    roi = impls.roi_align(x, _rois(boxes, box_index), 2, sampling_ratio=1, aligned=True, backend=backend)
    assert (crop - roi).abs().max() > 0.1
