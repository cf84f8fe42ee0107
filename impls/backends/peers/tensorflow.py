"""``tensorflow``: ``tf.image.crop_and_resize`` and its gradient ops. crop_and_resize only, CPU, float32 (TensorFlow
computes box coordinates and outputs in float32 whatever the image dtype); NHWC, so each call transposes to and
from NCHW. For ``method="nearest"`` TensorFlow returns the bilinear box gradient; ``impls`` defines it as zero."""

from __future__ import annotations

import functools

import torch

from ...core.registry import Backend, OpKernels, register
from ._installed import missing


@functools.cache
def _tf():
    import tensorflow as tf

    # NB: without op determinism TensorFlow's multi-threaded CPU CropAndResizeGradImage races and returns wrong
    # pixels (up to 12% of the largest gradient on a P2 call). Slower, but correct.
    tf.config.experimental.enable_op_determinism()
    return tf


def _to_tf_nhwc(x: torch.Tensor):
    return _tf().constant(x.detach().permute(0, 2, 3, 1).contiguous().numpy())


def _tf_args(boxes, box_index):
    tf = _tf()
    # TensorFlow takes int32 indices: one beyond int32 (only a caller of the kernels can pass one; the public ops
    # reject it) is clamped, so that TensorFlow rejects it too instead of reading the image it would wrap to.
    int32 = torch.iinfo(torch.int32)
    return (
        tf.constant(boxes.detach().to(torch.float32).numpy()),
        tf.constant(box_index.clamp(int32.min, int32.max).to(torch.int32).numpy()),
    )


def _tensorflow_forward(image, boxes, box_index, crop_height, crop_width, method, extrapolation_value):
    tf = _tf()
    tf_boxes, tf_index = _tf_args(boxes, box_index)
    out = tf.image.crop_and_resize(
        _to_tf_nhwc(image), tf_boxes, tf_index, (crop_height, crop_width),
        method=method, extrapolation_value=extrapolation_value,
    )  # [K, ch, cw, C] float32
    return torch.from_numpy(out.numpy()).permute(0, 3, 1, 2).to(image.dtype)


def _tensorflow_backward_input(
    grad, boxes, box_index, crop_height, crop_width, batch_size, channels, height, width, method
):
    tf = _tf()
    tf_boxes, tf_index = _tf_args(boxes, box_index)
    g = tf.raw_ops.CropAndResizeGradImage(
        grads=_to_tf_nhwc(grad.to(torch.float32)), boxes=tf_boxes, box_ind=tf_index,
        image_size=tf.constant([batch_size, height, width, channels], tf.int32), T=tf.float32, method=method,
    )  # [N, H, W, C]
    return torch.from_numpy(g.numpy()).permute(0, 3, 1, 2).to(grad.dtype)


def _tensorflow_backward_boxes(grad, image, boxes, box_index, crop_height, crop_width, method):
    tf = _tf()
    tf_boxes, tf_index = _tf_args(boxes, box_index)
    g = tf.raw_ops.CropAndResizeGradBoxes(
        grads=_to_tf_nhwc(grad.to(torch.float32)), image=_to_tf_nhwc(image.to(torch.float32)), boxes=tf_boxes,
        box_ind=tf_index,
    )  # [K, 4]
    return torch.from_numpy(g.numpy()).to(boxes.dtype)


register(
    Backend(
        name="tensorflow",
        peer=True,
        summary="peer: tf.image.crop_and_resize and its gradient ops (CPU, float32, NHWC)",
        devices=("cpu",),
        dtypes=(torch.float32,),
        kernels={
            "crop_and_resize": OpKernels(
                _tensorflow_forward, _tensorflow_backward_input, _tensorflow_backward_boxes
            )
        },
        unavailable_reason=missing("tensorflow", "tensorflow"),
    )
)
