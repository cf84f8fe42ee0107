"""Every ``crop_and_resize`` backend of ours equals TensorFlow's (``tf.image.crop_and_resize`` and its registered
gradients through ``tf.GradientTape``, called directly, not through impls): forward, image gradient, box gradient.

Boxes include flipped ones, ones reaching outside [0, 1] (extrapolated samples), 1-pixel crops (the box centre)
and, for ``nearest``, the image gradient. TensorFlow computes in float32, so ours run in float32 too.
"""

import cases
import numpy as np
import optional_deps
import pytest
import torch

import impls

tf = optional_deps.require("tensorflow")  # skips this module only under IMPLS_GPU_RUN=1 (tests/optional_deps.py)

# TensorFlow and ours both compute sample positions in float32 (relative error ~6e-8 on coordinates up to 10 px)
# and multiply by value differences of O(1); box gradients sum up to K*C*ch*cw ~ 1e3 such terms, and TF's
# float32 sums drift by ~1e3 * 6e-8 relative.
TOLERANCE = 1e-4
# Without it TensorFlow's multi-threaded CPU image gradient races (see impls/backends/peers/tensorflow.py).
tf.config.experimental.enable_op_determinism()
BACKENDS = cases.backends_for("crop_and_resize", dtype=torch.float32, exclude=["tensorflow"])
CROPS = {"4x5": (4, 5), "1x1": (1, 1), "1x3": (1, 3)}


def _tensorflow(image, boxes, box_index, crop_size, method, grad):
    """TensorFlow's output, image gradient and box gradient, converted to NCHW torch tensors."""
    tf_image = tf.constant(image.permute(0, 2, 3, 1).numpy())  # [N, H, W, C]
    tf_boxes = tf.constant(boxes.numpy())
    with tf.GradientTape() as tape:
        tape.watch([tf_image, tf_boxes])
        out = tf.image.crop_and_resize(tf_image, tf_boxes, box_index.numpy().astype(np.int32), crop_size,
                                       method=method)  # [K, ch, cw, C]
    d_image, d_boxes = tape.gradient(out, [tf_image, tf_boxes], output_gradients=tf.constant(
        grad.permute(0, 2, 3, 1).numpy()))
    return _nchw(out), _nchw(d_image), torch.from_numpy(d_boxes.numpy())


def _nchw(t) -> torch.Tensor:
    return torch.from_numpy(t.numpy()).permute(0, 3, 1, 2)


def _ours(backend, image, boxes, box_index, crop_size, method, grad):
    image = image.detach().requires_grad_()
    boxes = boxes.detach().requires_grad_()
    out = impls.crop_and_resize(image, boxes, box_index, crop_size, method=method, backend=backend)
    out.backward(grad)
    return out.detach(), image.grad, boxes.grad


def _inputs(crop_size, seed=11):
    image = cases.feature_map(seed=seed).float()  # [2, 3, 9, 11]
    boxes, box_index = cases.crop_boxes(k=7, seed=seed + 1)  # [7, 4] in [-0.2, 1.2)
    boxes = boxes.float()
    assert (boxes[:, 0] > boxes[:, 2]).any() and ((boxes < 0) | (boxes > 1)).any(), "need flipped and outside"
    grad = torch.randn(boxes.shape[0], image.shape[1], *crop_size, generator=torch.Generator().manual_seed(seed))
    return image, boxes, box_index, grad


@pytest.mark.parametrize("crop", CROPS, ids=lambda c: f"crop{c}")
@pytest.mark.parametrize("backend", BACKENDS)
def test_bilinear_equals_tensorflow(backend, crop):
    image, boxes, box_index, grad = _inputs(CROPS[crop])
    want = _tensorflow(image, boxes, box_index, CROPS[crop], "bilinear", grad)
    got = _ours(backend, image, boxes, box_index, CROPS[crop], "bilinear", grad)
    for what, g, w in zip(("forward", "image gradient", "boxes gradient"), got, want):
        cases.assert_close(g, w, TOLERANCE, what)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nearest_equals_tensorflow(backend):
    # Nearest rounds half away from zero; random boxes keep samples off the .5 ties where float32 rounding of
    # the coordinate could pick the other pixel.
    image, boxes, box_index, grad = _inputs((4, 5), seed=21)
    want = _tensorflow(image, boxes, box_index, (4, 5), "nearest", grad)
    got = _ours(backend, image, boxes, box_index, (4, 5), "nearest", grad)
    cases.assert_close(got[0], want[0], TOLERANCE, "forward")
    cases.assert_close(got[1], want[1], TOLERANCE, "image gradient")
    # The one documented difference: a nearest crop is piecewise constant in the boxes, so ours is zero;
    # TensorFlow returns its bilinear box gradient for either method.
    assert torch.equal(got[2], torch.zeros_like(got[2])), "nearest box gradient must be zero"
    bilinear = _tensorflow(image, boxes, box_index, (4, 5), "bilinear", grad)
    assert want[2].abs().max() > 0
    cases.assert_close(want[2], bilinear[2], 0.0, "TensorFlow's nearest box gradient vs its bilinear one")
