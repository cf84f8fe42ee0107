"""The ``kornia`` peer (``kornia.geometry.transform.crop_and_resize``) against our ``reference``: its corner
convention (CONVENTIONS.md §8.4), its border (``grid_sample``'s, §8.3), and the calls outside its API, which raise
naming the argument. The matrix (tests/contract/test_backend_matrix.py) checks it, both gradients included, on one
box per image inside the image.
"""

import cases
import optional_deps
import pytest
import torch

import impls

kornia = optional_deps.require("kornia")

# float64: kornia solves a 8x8 system for the homography from the corners, then samples through grid_sample:
# positions agree with the reference's to ~1e-14 px, values (standard-normal map) to ~1e-13.
TOLERANCE = 1e-12
pytestmark = pytest.mark.needs_peers("kornia")


def _kornia(image, boxes, box_index, crop_size, **kwargs):
    return impls.crop_and_resize(image, boxes, box_index, crop_size, backend="kornia", **kwargs)


def test_kornia_corners_are_the_first_and_last_sample_centres():
    # kornia's own example: on a 4x4 image the corners (1, 1) and (2, 2) (x, y, inclusive pixels) give the 2x2
    # block of pixels 1..2. In our normalized convention that box is (1/3, 1/3, 2/3, 2/3), i.e. pixel / (H - 1).
    image = torch.arange(16, dtype=torch.float64).view(1, 1, 4, 4)  # 4*row + col
    corners = torch.tensor([[[1.0, 1.0], [2.0, 1.0], [2.0, 2.0], [1.0, 2.0]]], dtype=torch.float64)
    block = [[[[5.0, 6.0], [9.0, 10.0]]]]
    assert kornia.geometry.transform.crop_and_resize(image, corners, (2, 2)).tolist() == block
    boxes = torch.tensor([[1 / 3, 1 / 3, 2 / 3, 2 / 3]], dtype=torch.float64)
    cases.assert_close(impls.crop_and_resize(image, boxes, torch.tensor([0]), (2, 2), backend="reference"),
                       torch.tensor(block), TOLERANCE, "ours on the normalized box")
    # The same numbers read as roi_align's box edges (aligned=True, pixel i covers [i, i+1)) give other samples.
    rois = torch.tensor([[0, 1.0, 1.0, 2.0, 2.0]], dtype=torch.float64)
    edges = impls.roi_align(image, rois, 2, 1.0, 1, aligned=True, backend="reference")
    assert edges.flatten().tolist() == [3.75, 4.25, 5.75, 6.25]


@pytest.mark.parametrize("seed", [0, 1])
def test_kornia_blends_at_the_border_as_grid_sample_does(seed):
    image = cases.feature_map(seed=seed)  # [2, 3, 9, 11]
    # One box per image, both across the border (the second flipped), corners off the pixel grid.
    boxes = torch.tensor([[-0.15, 0.1, 0.7, 1.07], [1.12, 0.93, 0.21, -0.08]], dtype=torch.float64)
    box_index = torch.arange(2)
    got = _kornia(image, boxes, box_index, (4, 5))
    grid_sample = impls.crop_and_resize(image, boxes, box_index, (4, 5), backend="grid_sample")
    cases.assert_close(got, grid_sample, TOLERANCE, "kornia against grid_sample")
    reference = impls.crop_and_resize(image, boxes, box_index, (4, 5), backend="reference")
    assert (got - reference).abs().max() > 0.1  # not TensorFlow's extrapolation


def test_kornia_gives_nan_for_a_crop_side_of_1():
    # Why the peer refuses crop_size 1: kornia maps the box corners onto the crop's, which coincide, and its
    # homography is singular.
    image = torch.arange(25.0).view(1, 1, 5, 5)
    corners = torch.tensor([[[1.0, 1.0], [3.0, 1.0], [3.0, 3.0], [1.0, 3.0]]])
    assert kornia.geometry.transform.crop_and_resize(image, corners, (1, 3)).isnan().all()


@pytest.mark.parametrize("box_index,crop_size,boxes,kwargs,match", [
    ([0, 0], (4, 5), None, {}, r"one box per image: box_index must be \[0, 1, ..., N-1\]"),
    ([1, 0], (4, 5), None, {}, r"one box per image: box_index must be"),
    ([0, 1], (1, 5), None, {}, r"crop_size >= 2"),
    ([0, 1], (4, 5), [[0.2, 0.3, 0.2, 0.6], [0.1, 0.1, 0.9, 0.9]], {}, r"boxes of nonzero height and width"),
    ([0, 1], (4, 5), None, dict(method="nearest"), r"method='bilinear' only"),
    ([0, 1], (4, 5), None, dict(extrapolation_value=2.0), r"extrapolation_value must be 0"),
], ids=["two_boxes_one_image", "boxes_swapped", "crop_side_1", "zero_height_box", "nearest", "extrapolation"])
def test_calls_outside_kornias_api_raise_naming_the_argument(box_index, crop_size, boxes, kwargs, match):
    image = cases.feature_map()  # [2, 3, 9, 11]
    boxes = cases.interior_crop_boxes()[0] if boxes is None else torch.tensor(boxes, dtype=torch.float64)
    with pytest.raises(ValueError, match=match):
        _kornia(image, boxes, torch.tensor(box_index), crop_size, **kwargs)
