"""A seeded, randomized comparison of every backend with ``reference`` in float64: forward, input gradient and box
gradient of both operators, on boxes drawn the way they come in practice, integer corners included.

Integer corners matter: with a stride-4 map and sampling_ratio 2, a box from 129 to 204 px puts samples exactly on
pixel rows (e.g. 45.0), where the box gradient switches from one row pair's slope to the next. A backend whose
position expression differs from the reference's in the last bit (44.99999999999999) takes the other slope and
its box gradient is off by O(1), not by rounding. Every backend computes positions by the reference's
expressions, so float64's tolerance holds (and ``cpp`` is exact).
"""

import cases
import pytest
import torch

import impls

CASES = 40  # per op and device: a few seconds of reference time in all


def _roi_case(seed: int, device: str):
    g = torch.Generator().manual_seed(seed)
    n, c = int(torch.randint(1, 3, (1,), generator=g)), int(torch.randint(1, 4, (1,), generator=g))
    h, w = (int(v) for v in torch.randint(4, 24, (2,), generator=g))
    scale = (1.0, 0.5, 0.25, 1 / 3)[seed % 4]
    k = int(torch.randint(1, 6, (1,), generator=g))
    corners = torch.rand(k, 4, generator=g, dtype=torch.float64) * torch.tensor([w, h, w, h]) / scale * 1.2 - 1
    if seed % 2 == 0:
        corners = corners.round()  # integer pixel boxes: ground truth, the original port's boxes
    x1, x2 = torch.minimum(corners[:, 0], corners[:, 2]), torch.maximum(corners[:, 0], corners[:, 2])
    y1, y2 = torch.minimum(corners[:, 1], corners[:, 3]), torch.maximum(corners[:, 1], corners[:, 3])
    batch = torch.randint(0, n, (k,), generator=g).to(torch.float64)
    rois = torch.stack([batch, x1, y1, x2, y2], dim=1)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    kwargs = dict(output_size=tuple(int(v) for v in torch.randint(1, 8, (2,), generator=g)),
                  spatial_scale=scale, sampling_ratio=(0, 1, 2)[seed % 3], aligned=bool(seed % 5 < 3))
    grad = torch.randn(k, c, *kwargs["output_size"], generator=g, dtype=torch.float64)
    return x.to(device), rois.to(device), grad.to(device), kwargs


def _crop_case(seed: int, device: str):
    g = torch.Generator().manual_seed(seed)
    n, c = int(torch.randint(1, 3, (1,), generator=g)), int(torch.randint(1, 4, (1,), generator=g))
    h, w = (int(v) for v in torch.randint(2, 12, (2,), generator=g))
    k = int(torch.randint(1, 6, (1,), generator=g))
    boxes = torch.rand(k, 4, generator=g, dtype=torch.float64) * 1.4 - 0.2
    if seed % 2 == 0:  # pixel-aligned boxes: y * (H - 1) whole, so samples land on pixel rows
        boxes = (boxes * torch.tensor([h - 1, w - 1, h - 1, w - 1])).round() / torch.tensor(
            [max(h - 1, 1), max(w - 1, 1), max(h - 1, 1), max(w - 1, 1)])
    box_index = torch.randint(0, n, (k,), generator=g)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    crop = (int(torch.randint(1, 6, (1,), generator=g)), int(torch.randint(1, 6, (1,), generator=g)))
    grad = torch.randn(k, c, *crop, generator=g, dtype=torch.float64)
    return x.to(device), boxes.to(device), box_index.to(device), grad.to(device), crop


def _run(fn, x, boxes, grad):
    x = x.detach().requires_grad_()
    boxes = boxes.detach().requires_grad_()
    out = fn(x, boxes)
    out.backward(grad)
    return out.detach(), x.grad, boxes.grad


def _backends(op, device):
    """The backends compared with reference: every one of ours with float64 on ``device``."""
    return cases.backends_for(op, device, torch.float64, exclude=("reference",) + cases.PEERS)


@pytest.mark.parametrize("device", cases.DEVICES)
@pytest.mark.parametrize("seed", range(CASES))
def test_roi_align_random_cases(seed, device):
    x, rois, grad, kwargs = _roi_case(seed, device)
    want = _run(lambda a, b: impls.roi_align(a, b, **kwargs, backend="reference"), x.cpu(), rois.cpu(), grad.cpu())
    for backend in _backends("roi_align", device):
        got = _run(lambda a, b: impls.roi_align(a, b, **kwargs, backend=backend), x, rois, grad)
        tol = cases.tolerance(backend, torch.float64)
        for what, a, b in zip(("forward", "input gradient", "box gradient"), got, want):
            cases.assert_close(a, b, tol, f"{backend} {what} (seed {seed}, {kwargs})")


@pytest.mark.parametrize("device", cases.DEVICES)
def test_roi_align_box_on_pixel_rows(device):
    # A Mask R-CNN P4 box with integer corners: with 7 bins and sampling_ratio 2, sample (ph=1, iy=1) sits at
    # y = 27 + 6 = 33 exactly; computed in another order it is 32.99999999999999 and the box gradient's y2 term
    # takes the row pair below (0.045 off where the largest value is 3.66, before every backend used the
    # reference's expression).
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 4, 50, 76, generator=g, dtype=torch.float64).to(device)
    rois = torch.tensor([[0, 129.0, 110.0, 204.0, 206.0]], dtype=torch.float64, device=device)
    grad = torch.randn(1, 4, 7, 7, generator=g, dtype=torch.float64).to(device)
    kwargs = dict(output_size=7, spatial_scale=0.25, sampling_ratio=2, aligned=True)
    want = _run(lambda a, b: impls.roi_align(a, b, **kwargs, backend="reference"), x.cpu(), rois.cpu(), grad.cpu())
    for backend in _backends("roi_align", device):
        got = _run(lambda a, b: impls.roi_align(a, b, **kwargs, backend=backend), x, rois, grad)
        cases.assert_close(got[2], want[2], cases.tolerance(backend, torch.float64), f"{backend} box gradient")


@pytest.mark.parametrize("device", cases.DEVICES)
@pytest.mark.parametrize("seed", range(CASES))
def test_crop_and_resize_random_cases(seed, device):
    x, boxes, box_index, grad, crop = _crop_case(seed, device)
    method = "nearest" if seed % 4 == 3 else "bilinear"

    def call(backend):
        return lambda a, b: impls.crop_and_resize(a, b, box_index.to(a.device), crop, method, -0.5, backend=backend)

    want = _run(call("reference"), x.cpu(), boxes.cpu(), grad.cpu())
    for backend in _backends("crop_and_resize", device):
        got = _run(call(backend), x, boxes, grad)
        tol = cases.tolerance(backend, torch.float64)
        for what, a, b in zip(("forward", "input gradient", "box gradient"), got, want):
            cases.assert_close(a, b, tol, f"{backend} {what} (seed {seed}, crop {crop}, {method})")
