"""The ``grid_sample`` peer (crop_and_resize as ``F.affine_grid`` + ``F.grid_sample(align_corners=True)``) against
our ``reference``: equal inside the image, and at the border exactly what CONVENTIONS.md §8.3 says it does instead of
TensorFlow's extrapolation: it blends the taps that lie inside with zeros for the others. The matrix
(tests/contract/test_backend_matrix.py) checks it, both gradients included, on boxes inside the image.
"""

import cases
import pytest
import torch
import torch.nn.functional as F

import impls

# float64 on both sides: grid_sample unnormalizes its grid ((g + 1)/2 * (W - 1)) where the reference scales the
# normalized box: positions agree to a few ulps of ~10 px, values to ~1e-14 on a standard-normal map.
TOLERANCE = 1e-12


def _grid_sample(image, boxes, box_index, crop_size, **kwargs):
    return impls.crop_and_resize(image, boxes, box_index, crop_size, backend="grid_sample", **kwargs)


def _reference(image, boxes, box_index, crop_size):
    return impls.crop_and_resize(image, boxes, box_index, crop_size, backend="reference")


def test_a_sample_just_outside_the_image_blends_its_inside_taps():
    # The 5x5 image 5*row + col; both crop rows at y = 2, columns at x = -0.25 and x = 4 (the last pixel).
    image = torch.arange(25, dtype=torch.float64).view(1, 1, 5, 5)
    boxes = torch.tensor([[0.5, -0.25 / 4, 0.5, 1.0]], dtype=torch.float64)
    box_index = torch.tensor([0])
    # TensorFlow: x = -0.25 is outside [0, 4], so extrapolation_value (0); grid_sample: tap 0 weighs 0.75 and tap
    # -1 (outside, read as 0) weighs 0.25: 0.75 * 10.
    assert _reference(image, boxes, box_index, (2, 2)).flatten().tolist() == [0.0, 14.0] * 2
    assert _grid_sample(image, boxes, box_index, (2, 2)).flatten().tolist() == [7.5, 14.0] * 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grid_sample_is_tensorflow_on_the_image_padded_with_one_zero_pixel(seed):
    # The difference in full: grid_sample's zero padding is TensorFlow's op (extrapolation value 0) on the image
    # with a border of one zero pixel, the boxes moved onto it. A sample within one pixel outside the image then
    # reads the zero pixel and the edge pixel, as grid_sample's taps do; a sample further out is 0 in both.
    image = cases.feature_map(seed=seed)  # [2, 3, 9, 11]
    boxes, box_index = cases.crop_boxes(k=8, seed=seed + 1)  # [8, 4] in [-0.2, 1.2): across the border
    _, _, height, width = image.shape
    scale = boxes.new_tensor([height - 1, width - 1, height - 1, width - 1])
    padded_boxes = (boxes * scale + 1) / (scale + 2)  # pixel i of the image is pixel i + 1 of the padded one
    padded = _reference(F.pad(image, (1, 1, 1, 1)), padded_boxes, box_index, (6, 7))
    got = _grid_sample(image, boxes, box_index, (6, 7))
    cases.assert_close(got, padded, TOLERANCE, "grid_sample against TensorFlow on the padded image")
    # ...which is not TensorFlow's op on the image itself: the border samples differ by O(1).
    assert (got - _reference(image, boxes, box_index, (6, 7))).abs().max() > 0.1


def test_equal_to_the_reference_inside_the_image_with_both_gradients():
    image = cases.feature_map(seed=4).requires_grad_()
    boxes, box_index = cases.crop_boxes(k=8, seed=5)
    boxes = boxes.clamp(0.02, 0.98).requires_grad_()  # every sample inside; random, so none on a pixel row
    grad = torch.randn(8, 3, 4, 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    results = []
    for backend in ("grid_sample", "reference"):
        out = impls.crop_and_resize(image, boxes, box_index, (4, 5), backend=backend)
        results.append((out, *torch.autograd.grad(out, (image, boxes), grad)))
    for what, got, want in zip(("forward", "image gradient", "box gradient"), *results):
        cases.assert_close(got, want, TOLERANCE, what)


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="nearest"), "method='bilinear' only"),  # grid_sample rounds half to even, TensorFlow away from 0
    (dict(extrapolation_value=-1.0), "extrapolation_value must be 0"),  # it pads with zeros
])
def test_what_grid_sample_cannot_express_raises(kwargs, match):
    image = cases.feature_map()
    boxes, box_index = cases.crop_boxes()
    with pytest.raises(ValueError, match=match):
        _grid_sample(image, boxes, box_index, (4, 5), **kwargs)
