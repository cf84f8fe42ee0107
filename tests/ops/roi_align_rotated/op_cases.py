"""roi_align_rotated's cases for the generic suites (``tests/cases.py`` gathers every ``tests/ops/<op>/op_cases.py``):
its configurations, its inputs and how the public op is called."""

import cases
import torch

import impls

OP = "roi_align_rotated"
SIZE_ARGUMENT = "output_size"
CASES = (
    cases.OpCase("roi_align_rotated-sr2_ccw", OP,
                 (("clockwise", False), ("output_size", (3, 4)), ("sampling_ratio", 2), ("spatial_scale", 0.5))),
    cases.OpCase("roi_align_rotated-adaptive_cw", OP,
                 (("clockwise", True), ("output_size", 3), ("sampling_ratio", 0), ("spatial_scale", 1.0))),
    # Fixed sampling: the grid_sample peer (CONVENTIONS.md §8.6) has no adaptive grid.
    cases.OpCase("roi_align_rotated-interior", OP,
                 (("clockwise", False), ("output_size", (2, 3)), ("sampling_ratio", 2), ("spatial_scale", 1.0)),
                 boxes="interior"),
)


def rotated_boxes(k: int = 6, seed: int = 3, n: int = 2, h: int = 9, w: int = 11, scale: float = 1.0):
    """[K, 6] (batch, cx, cy, w, h, angle in degrees) in image coordinates: centres up to a pixel beyond the map,
    sides 0.3 px to 80% of the map, any angle; random, so no sample lands on a pixel edge where the derivative
    jumps. Box 0 is smaller than a pixel."""
    g = torch.Generator().manual_seed(seed)
    cx = torch.rand(k, generator=g, dtype=torch.float64) * (w + 2) - 1
    cy = torch.rand(k, generator=g, dtype=torch.float64) * (h + 2) - 1
    bw = torch.rand(k, generator=g, dtype=torch.float64) * w * 0.8 + 0.3
    bh = torch.rand(k, generator=g, dtype=torch.float64) * h * 0.8 + 0.3
    bw[0], bh[0] = 0.37, 0.61
    angle = torch.rand(k, generator=g, dtype=torch.float64) * 360 - 180
    batch = torch.randint(0, n, (k,), generator=g).to(torch.float64)
    rois = torch.stack([batch, cx, cy, bw, bh, angle], dim=1)  # [K, 6]
    return rois / torch.tensor([1, scale, scale, scale, scale, 1], dtype=torch.float64)


def interior_rotated_boxes(n: int = 2, seed: int = 4) -> torch.Tensor:
    """One box per image, every sample and tap inside the 9 x 11 map at scale 1: centres within 2 px of the map's
    centre, sides 1-3 px (half-diagonal at most 2.2 px), any angle."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.tensor([5.5, 4.5], dtype=torch.float64) + torch.rand(n, 2, generator=g, dtype=torch.float64) - 0.5
    sides = torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 + 1
    angle = torch.rand(n, 1, generator=g, dtype=torch.float64) * 360 - 180
    return torch.cat([torch.arange(n, dtype=torch.float64)[:, None], centre, sides, angle], dim=1)  # [N, 6]


def inputs(case, seed: int):
    """float64 (feature map, rois [K, 6], None) for ``case``."""
    x = cases.feature_map(seed)
    if case.boxes == "interior":
        return x, interior_rotated_boxes(seed=seed + 4), None
    return x, rotated_boxes(seed=seed + 3, scale=case.params["spatial_scale"]), None


def call(case, backend, x, boxes, box_index):
    return impls.roi_align_rotated(x, boxes, backend=backend, **case.params)


def operator_args(pass_: str, x: torch.Tensor, grad: torch.Tensor) -> tuple:
    """The raw operator's arguments, ``impls::roi_align_rotated_<pass_>``, on ``x`` [2, 3, 9, 11] and ``grad``
    [2, 3, 2, 2] (float64, one device): two boxes (batch, cx, cy, w, h, degrees), one crossing the border, adaptive
    grid."""
    rois = torch.tensor([[0, 4.0, 3.5, 6.0, 3.0, 30.0], [1, 9.0, 2.0, 5.0, 4.0, -120.0]], dtype=x.dtype,
                        device=x.device)
    return {
        "forward": (x, rois, 0.5, 2, 2, 0, False),
        "backward_input": (grad, rois, 0.5, 2, 2, *x.shape, 0, True),
        "backward_boxes": (grad, x, rois, 0.5, 2, 2, 0, False),
    }[pass_]
