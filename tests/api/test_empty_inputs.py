"""Empty inputs work through the public ops on every backend, on every device its record lists: no boxes (a tensor
or a list of empty tensors), no images, no channels. The output has the right shape, dtype and device, and the
backward through autograd gives zero gradients of the inputs' shapes. (Each backend's kernels alone, on the same
sizes: ``tests/backends/test_raw_kernels.py``.)
"""

import cases
import pytest
import torch

import impls

# (backend, device) pairs, ids "backend-device": cuda-capable backends also run on "cuda" where a GPU exists.
CROP_BACKENDS = cases.backend_device_params("crop_and_resize")
ROI_BACKENDS = cases.backend_device_params("roi_align")


def _grads(op, backend, x, boxes, extra):
    x = x.detach().requires_grad_()
    boxes_grad = impls.core.registry.registered()[backend].kernels[op].boxes_grad
    boxes = boxes.detach().requires_grad_(boxes_grad)
    fn = getattr(impls, op)
    out = fn(x, boxes, *extra, backend=backend)
    out.sum().backward()
    return out, x.grad, boxes.grad if boxes_grad else torch.zeros_like(boxes)


@pytest.mark.parametrize("n", [2, 0], ids=["n2", "n0"])
@pytest.mark.parametrize("backend,device", CROP_BACKENDS)
def test_crop_and_resize_empty(backend, device, n):
    dtype = cases.best_dtype(backend)
    image = torch.randn(n, 3, 5, 6, dtype=dtype).to(device)
    out, d_image, d_boxes = _grads("crop_and_resize", backend, image, torch.zeros(0, 4, dtype=dtype, device=device),
                                   (torch.zeros(0, dtype=torch.int64, device=device), (2, 4)))
    assert out.shape == (0, 3, 2, 4) and out.dtype == dtype and out.device.type == device
    assert d_image.shape == image.shape and not d_image.any()
    assert d_boxes.shape == (0, 4)


@pytest.mark.parametrize("n", [2, 0], ids=["n2", "n0"])
@pytest.mark.parametrize("backend,device", ROI_BACKENDS)
def test_roi_align_empty(backend, device, n):
    dtype = cases.best_dtype(backend)
    x = torch.randn(n, 3, 5, 6, dtype=dtype).to(device)
    out, d_x, d_boxes = _grads("roi_align", backend, x, torch.zeros(0, 5, dtype=dtype, device=device), ((2, 4),))
    assert out.shape == (0, 3, 2, 4) and out.dtype == dtype and out.device.type == device
    assert d_x.shape == x.shape and not d_x.any()
    assert d_boxes.shape == (0, 5)


@pytest.mark.parametrize("backend,device", ROI_BACKENDS)
def test_roi_align_empty_list_of_boxes(backend, device):
    dtype = cases.best_dtype(backend)
    out = impls.roi_align(torch.randn(2, 3, 5, 6, dtype=dtype).to(device),
                          [torch.zeros(0, 4, dtype=dtype, device=device)] * 2, 3, backend=backend)
    assert out.shape == (0, 3, 3, 3) and out.device.type == device


@pytest.mark.parametrize("backend,device", CROP_BACKENDS)
def test_crop_and_resize_no_channels(backend, device):
    dtype = cases.best_dtype(backend)
    image = torch.randn(2, 0, 5, 6, dtype=dtype).to(device)  # [2, 0, 5, 6]
    boxes = torch.tensor([[0.1, 0.1, 0.9, 0.9], [0.2, -0.1, 0.7, 0.5], [0.9, 0.8, 0.1, 0.3]], dtype=dtype)
    out, d_image, d_boxes = _grads("crop_and_resize", backend, image, boxes.to(device),
                                   (torch.tensor([0, 1, 1], device=device), (2, 4)))
    assert out.shape == (3, 0, 2, 4) and out.dtype == dtype and out.device.type == device
    assert d_image.shape == image.shape
    assert d_boxes.shape == (3, 4) and not d_boxes.any()


@pytest.mark.parametrize("backend,device", ROI_BACKENDS)
def test_roi_align_no_channels(backend, device):
    dtype = cases.best_dtype(backend)
    x = torch.randn(2, 0, 5, 6, dtype=dtype).to(device)  # [2, 0, 5, 6]
    rois = torch.tensor([[0, 0.5, 0.5, 3.0, 4.0], [1, 1, 1, 2, 2], [1, -1, 0.5, 4, 6]], dtype=dtype)
    out, d_x, d_boxes = _grads("roi_align", backend, x, rois.to(device), ((2, 4),))
    assert out.shape == (3, 0, 2, 4) and out.dtype == dtype and out.device.type == device
    assert d_x.shape == x.shape
    assert d_boxes.shape == (3, 5) and not d_boxes.any()
