"""crop_and_resize's cases for the generic suites (``tests/cases.py`` gathers every ``tests/ops/<op>/op_cases.py``):
its configurations, its inputs and how the public op is called."""

import cases
import torch

import impls

OP = "crop_and_resize"
SIZE_ARGUMENT = "crop_size"
CASES = (
    cases.OpCase("crop_and_resize-bilinear", OP, (("crop_size", (4, 5)), ("extrapolation_value", -1.5))),
    cases.OpCase("crop_and_resize-nearest", OP, (("crop_size", (3, 4)), ("method", "nearest"))),
    cases.OpCase("crop_and_resize-interior", OP, (("crop_size", (4, 5)),), boxes="interior"),
)


def inputs(case, seed: int):
    """float64 (feature map, boxes, box_index) for ``case``."""
    x = cases.feature_map(seed)
    if case.boxes == "interior":
        return (x, *cases.interior_crop_boxes(seed=seed + 1))
    return (x, *cases.crop_boxes(seed=seed + 1))


def call(case, backend, x, boxes, box_index):
    return impls.crop_and_resize(x, boxes, box_index, backend=backend, **case.params)


def operator_args(pass_: str, x: torch.Tensor, grad: torch.Tensor) -> tuple:
    """The raw operator's arguments, ``impls::crop_and_resize_<pass_>``, on ``x`` [2, 3, 9, 11] and ``grad``
    [2, 3, 2, 2] (float64, one device): two boxes, the second flipped and crossing the border."""
    boxes = torch.tensor([[0.1, 0.2, 0.7, 0.9], [0.9, 0.0, 0.2, 1.1]], dtype=x.dtype, device=x.device)
    index = torch.tensor([0, 1], device=x.device)
    return {
        "forward": (x, boxes, index, 2, 2, "bilinear", 0.5),
        "backward_input": (grad, boxes, index, 2, 2, *x.shape, "bilinear"),
        "backward_boxes": (grad, x, boxes, index, 2, 2, "bilinear"),
    }[pass_]
