"""roi_align's cases for the generic suites (``tests/cases.py`` gathers every ``tests/ops/<op>/op_cases.py``): its
configurations, its inputs and how the public op is called."""

import cases
import torch

import impls

OP = "roi_align"
SIZE_ARGUMENT = "output_size"
CASES = (
    cases.OpCase("roi_align-aligned_sr2", OP,
                 (("aligned", True), ("output_size", (3, 4)), ("sampling_ratio", 2), ("spatial_scale", 0.5))),
    cases.OpCase("roi_align-unaligned_adaptive", OP,
                 (("aligned", False), ("output_size", 3), ("sampling_ratio", 0), ("spatial_scale", 1.0))),
)


def inputs(case, seed: int):
    """float64 (feature map, rois [K, 5], None) for ``case``."""
    return cases.feature_map(seed), cases.roi_boxes(seed=seed + 2, scale=case.params["spatial_scale"]), None


def call(case, backend, x, boxes, box_index):
    return impls.roi_align(x, boxes, backend=backend, **case.params)


def operator_args(pass_: str, x: torch.Tensor, grad: torch.Tensor) -> tuple:
    """The raw operator's arguments, ``impls::roi_align_<pass_>``, on ``x`` [2, 3, 9, 11] and ``grad``
    [2, 3, 2, 2] (float64, one device): two boxes, one reaching over the border, adaptive grid."""
    rois = torch.tensor([[0, 1.0, 1.5, 6.0, 7.0], [1, 2.0, 0.5, 9.0, 5.0]], dtype=x.dtype, device=x.device)
    return {
        "forward": (x, rois, 0.5, 2, 2, 0, True),
        "backward_input": (grad, rois, 0.5, 2, 2, *x.shape, 0, True),
        "backward_boxes": (grad, x, rois, 0.5, 2, 2, 0, True),
    }[pass_]
