"""crop_and_resize's cases for the generic suites (``tests/cases.py`` gathers every ``tests/ops/<op>/op_cases.py``):
its configurations, its inputs and how the public op is called."""

import cases

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
