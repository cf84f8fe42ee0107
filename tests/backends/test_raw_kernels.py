"""Each backend's raw kernels (``registered()[name].kernels[op]``: ``forward``, ``backward_input``,
``backward_boxes``, called directly: no validation, no autograd) on what they must handle themselves.

The public ops check every argument before any kernel runs (``tests/api/test_bad_input.py``), so what reaches a
kernel is either valid or comes from a caller that bypasses them:

* valid but empty: no boxes (K = 0), no channels (C = 0), no images and no boxes (N = K = 0). Every backend's
  kernels return the shapes and dtype of the contract (``impls/core/registry.py``), and zero gradients;
* a box whose image index is not an image of the batch (-1, N, far beyond, NaN): a kernel must not read another
  image. What it does instead is what its backend states (``NOT_AN_IMAGE``): the box's output is NaN and it adds
  nothing to either gradient (the other boxes' results are as without it), or the kernel raises.

Every backend runs on every device its record lists that this machine has, in float64 where it has it.
"""

import math

import cases
import pytest
import torch

from impls.core.determinism import deterministic_algorithms
from impls.core.registry import registered

# The operators whose raw kernels this module calls (their argument lists are written below); roi_align_rotated's
# raw kernels with a bad image index: tests/ops/roi_align_rotated/test_rotated_kernels.py (cpp, reference) and
# test_rotated_torch_backends.py (vectorized, triton).
RAW_OPS = ("crop_and_resize", "roi_align")

NAN = "nan"
# What each backend's kernels do with a box whose image index is not an image of the batch, as the backend's
# docstring states it: NAN (its output is NaN, it adds nothing to the image gradient and gets a zero box gradient)
# or (exception type, message) raised by all three kernels.
CPP_MESSAGES = {"crop_and_resize": r"box_index\[1\] = .* is out of range",
                "roi_align": r"rois\[1, 0\] = .* is not a batch index"}
NOT_AN_IMAGE = {
    "reference": (IndexError, CPP_MESSAGES),  # impls/backends/reference.py: the cpp kernels' messages
    "vectorized": NAN,  # impls/backends/_chunked.py, _image_index
    "compiled": NAN,  # the same chunk loop as vectorized
    "cpp": (RuntimeError, CPP_MESSAGES),  # csrc/<op>/*_cpu.cpp: check_box_index, RoiTables
    "cuda": NAN,  # csrc/<op>/*_cuda.cu: no check without a device synchronization; the box reads nothing
    "triton": NAN,  # impls/backends/triton/kernels.py, masks
    # tf.errors.OutOfRangeError (an Exception), raised by TensorFlow's own kernels.
    "tensorflow": (Exception, {"crop_and_resize": r"box_index has values outside \[0, batch_size\)"}),
}
# Backends whose kernels are not called with such an index, and why.
NOT_HELD = {
    # torchvision's kernels index the map with the batch column unchecked (an out-of-bounds read): only the public
    # op's validation stands between them and a bad index.
    "torchvision": "reads out of bounds",
    # OpenVINO's ROIAlign reads out of bounds for -1 (values of 1e22 seen) and raises for N; onnxruntime's raises.
    # Both are called by tests/peers/ with the public op's validated indices only.
    "onnxruntime": "its RoiAlign raises for an index outside [0, N)",
    "openvino": "reads out of bounds for -1",
    # The user's code it stands for trusts box_index: with one image every box is read from it.
    "grid_sample": "reads image 0 for any index when N = 1",
    # kornia takes box k on image k only: the kernel raises for any other box_index (tests/peers/test_kornia.py).
    "kornia": "one box per image",
}
# Image indices that are not an image of a batch of 2, by op (roi_align's column is a float).
BAD_INDICES = {"crop_and_resize": (-1, 2, 1 << 40), "roi_align": (-1.0, 2.0, math.nan, 1e30)}
# roi_align's batch column 0.5: the backends that take it by truncation, as C++ converts a float (image 0), and
# those that treat a fractional index as no image at all.
FRACTIONAL_BATCH = {"reference": "truncates", "cpp": "truncates", "cuda": "truncates", "triton": "truncates",
                    "torchvision": "truncates", "onnxruntime": "truncates", "openvino": "truncates",
                    "vectorized": NAN, "compiled": NAN}


def _kernels(backend, op):
    return registered()[backend].kernels[op]


def _crop_call(x, boxes, box_index, method="bilinear"):
    """Positional arguments of the three crop_and_resize kernels on ``x``, and the incoming gradient's shape."""
    N, C, H, W = x.shape
    return dict(
        forward=(x, boxes, box_index, 3, 4, method, -0.5),
        backward_input=lambda grad: (grad, boxes, box_index, 3, 4, N, C, H, W, method),
        backward_boxes=lambda grad: (grad, x, boxes, box_index, 3, 4, method),
        grad_shape=(boxes.shape[0], C, 3, 4),
    )


def _roi_call(x, rois, sampling_ratio=2, aligned=True):
    N, C, H, W = x.shape
    return dict(
        forward=(x, rois, 0.5, 3, 4, sampling_ratio, aligned),
        backward_input=lambda grad: (grad, rois, 0.5, 3, 4, N, C, H, W, sampling_ratio, aligned),
        backward_boxes=lambda grad: (grad, x, rois, 0.5, 3, 4, sampling_ratio, aligned),
        grad_shape=(rois.shape[0], C, 3, 4),
    )


def _boxes(op, k, device, dtype):
    """k boxes (crop_and_resize: normalized [k, 4] and box_index [k]; roi_align: [k, 5] on a stride-2 map) over
    the 9 x 11 map of cases.feature_map, images alternating 1, 0, 1..."""
    g = torch.Generator().manual_seed(5)
    images = torch.arange(k, dtype=torch.int64).add(1).remainder(2)
    if op == "crop_and_resize":
        boxes = torch.rand(k, 4, generator=g, dtype=torch.float64) * 1.2 - 0.1
        return boxes.to(device, dtype), images.to(device)
    xy = torch.rand(k, 2, generator=g, dtype=torch.float64) * 16
    wh = torch.rand(k, 2, generator=g, dtype=torch.float64) * 8 + 2
    return torch.cat([images[:, None].to(torch.float64), xy, xy + wh], dim=1).to(device, dtype), None


def _call(op, x, boxes, box_index, **options):
    return _crop_call(x, boxes, box_index, **options) if op == "crop_and_resize" else _roi_call(x, boxes, **options)


def _run(backend, op, x, boxes, box_index, grad, deterministic=False, **options):
    """(output, image gradient, box gradient or None) of the raw kernels."""
    kernels, call = _kernels(backend, op), _call(op, x, boxes, box_index, **options)
    out = kernels.forward(*call["forward"])
    with deterministic_algorithms(deterministic):
        grad_x = kernels.backward_input(*call["backward_input"](grad))
    grad_boxes = kernels.backward_boxes(*call["backward_boxes"](grad)) if kernels.boxes_grad else None
    return out, grad_x, grad_boxes


def _params(ops, where=lambda backend: True):
    """(op, backend, device, mode) for every op of ``ops`` and every backend that implements it (and for which
    ``where(backend)`` holds) on every device here; mode is the image gradient's ("atomic", "deterministic") where
    the backend has two, else "default"."""
    return [
        pytest.param(op, *p.values, mode, id=f"{op}-{p.id}-{mode}")
        for op in ops
        for p in cases.backend_device_params(op)
        if where(p.values[0])
        for mode in cases.backward_modes(*p.values, op) or ("default",)
    ]


def _gives_nan(backend) -> bool:
    return NOT_AN_IMAGE.get(backend) == NAN


def _raises(backend) -> bool:
    return isinstance(NOT_AN_IMAGE.get(backend), tuple)

OPTIONS = {
    "crop_and_resize": [pytest.param(dict(method=m), id=m) for m in ("bilinear", "nearest")],
    "roi_align": [pytest.param(dict(sampling_ratio=2, aligned=True), id="aligned_sr2"),
                  pytest.param(dict(sampling_ratio=0, aligned=False), id="unaligned_adaptive")],
}


def test_every_backend_states_what_a_bad_image_index_does():
    # A backend added to the registry must say which rule its kernels follow (or why they follow none).
    assert set(NOT_AN_IMAGE) | set(NOT_HELD) == set(registered())
    assert not set(NOT_AN_IMAGE) & set(NOT_HELD)
    roi_backends = {name for name, backend in registered().items() if "roi_align" in backend.kernels}
    assert set(FRACTIONAL_BATCH) == roi_backends


# ------------------------------------------------------------------------------------------------- empty inputs


@pytest.mark.parametrize("sizes", [(2, 3, 0), (2, 0, 3), (0, 3, 0)], ids=["K0", "C0", "N0K0"])
@pytest.mark.parametrize("op,backend,device,mode", _params(RAW_OPS))
def test_empty_inputs(op, backend, device, mode, sizes):
    N, C, K = sizes
    dtype = cases.best_dtype(backend)
    x = cases.feature_map(n=max(N, 1), c=max(C, 1))[:N, :C].to(device, dtype)  # [N, C, 9, 11]
    boxes, box_index = _boxes(op, K, device, dtype)
    grad = torch.ones(_call(op, x, boxes, box_index)["grad_shape"], dtype=dtype, device=device)
    for options in OPTIONS[op]:
        out, grad_x, grad_boxes = _run(backend, op, x, boxes, box_index, grad, mode == "deterministic",
                                       **options.values[0])
        what = f"{op} {options.id}"
        assert out.shape == grad.shape and out.dtype == dtype and out.device.type == device, what
        assert grad_x.shape == x.shape and grad_x.dtype == dtype and not grad_x.any(), what
        if grad_boxes is not None:
            assert grad_boxes.shape == boxes.shape and grad_boxes.dtype == dtype and not grad_boxes.any(), what


# --------------------------------------------------------------------------------- a box of no image of the batch


def _with_image(op, boxes, box_index, image):
    """``boxes`` and ``box_index`` with box 1's image index replaced by ``image``."""
    if op == "crop_and_resize":
        box_index = box_index.clone()
        box_index[1] = image
    else:
        boxes = boxes.clone()
        boxes[1, 0] = image
    return boxes, box_index


def _case(op, backend, device):
    """(x [2, 3, 9, 11], 3 boxes, box_index or None, grad) in the backend's best dtype."""
    dtype = cases.best_dtype(backend)
    x = cases.feature_map().to(device, dtype)
    boxes, box_index = _boxes(op, 3, device, dtype)
    g = torch.Generator().manual_seed(6)
    grad = torch.randn(_call(op, x, boxes, box_index)["grad_shape"], generator=g, dtype=torch.float64)
    return x, boxes, box_index, grad.to(device, dtype)


def _assert_reads_nothing(op, backend, device, mode, image):
    """Box 1, of image ``image``, has a NaN output and adds nothing to either gradient; boxes 0 and 2 give what
    they give without it."""
    x, boxes, box_index, grad = _case(op, backend, device)
    boxes, box_index = _with_image(op, boxes, box_index, image)
    deterministic = mode == "deterministic"
    out, grad_x, grad_boxes = _run(backend, op, x, boxes, box_index, grad, deterministic)
    keep = torch.tensor([0, 2], device=device)
    alone = _run(backend, op, x, boxes[keep], None if box_index is None else box_index[keep], grad[keep],
                 deterministic)
    tol = cases.tolerance(backend, x.dtype)
    # An image gradient summed in a fixed order (the deterministic mode; on the CPU, triton's interpreter, which runs
    # the programs one after another) gives the very bits it gives without the box.
    ordered = mode == "deterministic" or (mode == "atomic" and device == "cpu")
    assert out[1].isnan().all(), "the box of no image has a value"
    cases.assert_close(out[keep], alone[0], tol, "the other boxes' outputs")
    cases.assert_close(grad_x, alone[1], 0.0 if ordered else tol, "image gradient: the box of no image added to it")
    if grad_boxes is not None:
        assert not grad_boxes[1].any(), "the box of no image has a gradient"
        assert grad_boxes[keep].abs().sum() > 0, "the case must give the other boxes a gradient"
        cases.assert_close(grad_boxes[keep], alone[2], tol, "the other boxes' gradients")


@pytest.mark.parametrize("op,backend,device,mode", _params(RAW_OPS, _gives_nan))
def test_a_box_of_no_image_reads_nothing(op, backend, device, mode):
    for image in BAD_INDICES[op]:
        _assert_reads_nothing(op, backend, device, mode, image)


@pytest.mark.parametrize("op,backend,device,mode", _params(RAW_OPS, _raises))
def test_a_box_of_no_image_raises(op, backend, device, mode):
    error, messages = NOT_AN_IMAGE[backend]
    x, boxes, box_index, grad = _case(op, backend, device)
    kernels = _kernels(backend, op)
    for image in BAD_INDICES[op]:
        call = _call(op, x, *_with_image(op, boxes, box_index, image))
        with pytest.raises(error, match=messages[op]):
            kernels.forward(*call["forward"])
        with pytest.raises(error, match=messages[op]):
            kernels.backward_input(*call["backward_input"](grad))
        with pytest.raises(error, match=messages[op]):
            kernels.backward_boxes(*call["backward_boxes"](grad))


@pytest.mark.parametrize("op,backend,device,mode", _params(["roi_align"]))
def test_a_fractional_batch_index(op, backend, device, mode):
    # 0.5: image 0 for the backends that truncate, as C++ converts a float; no image for the others.
    if FRACTIONAL_BATCH[backend] == NAN:
        return _assert_reads_nothing(op, backend, device, mode, 0.5)
    x, rois, _, grad = _case(op, backend, device)
    deterministic = mode == "deterministic"
    got = _run(backend, op, x, _with_image(op, rois, None, 0.5)[0], None, grad, deterministic)
    want = _run(backend, op, x, _with_image(op, rois, None, 0.0)[0], None, grad, deterministic)
    tol = cases.tolerance(backend, x.dtype)
    for what, a, b in zip(("forward", "image gradient", "box gradient"), got, want):
        if b is not None:
            cases.assert_close(a, b, tol, f"{what}: batch 0.5 is not image 0")
