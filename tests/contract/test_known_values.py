"""Values worked out by hand (CONVENTIONS.md §1.7 and §3.5), for every backend on every device it runs on."""

import cases
import pytest
import torch

import impls

IMAGE_5X5 = torch.arange(25.0).view(1, 1, 5, 5)


@pytest.mark.parametrize("backend,device", cases.backend_device_params("crop_and_resize"))
@pytest.mark.parametrize(
    "box,size,expected",
    [
        # A flipped box over the whole image: rows come out bottom-up, every other pixel.
        ([1, 0, 0, 1], (3, 3), [[20, 22, 24], [10, 12, 14], [0, 2, 4]]),
        # A 1x1 crop samples the box centre: pixel (2, 2) = 12.
        ([0, 0, 1, 1], (1, 1), [[12]]),
        # Box from pixel (1, 1) to (2, 2): row 1 is 6..7 in steps of 1/3, row 4 is 11..12.
        ([0.25, 0.25, 0.5, 0.5], (4, 4),
         [[6, 6 + 1 / 3, 6 + 2 / 3, 7], [7 + 2 / 3, 8, 8 + 1 / 3, 8 + 2 / 3],
          [9 + 1 / 3, 9 + 2 / 3, 10, 10 + 1 / 3], [11, 11 + 1 / 3, 11 + 2 / 3, 12]]),
    ],
)
def test_crop_and_resize_5x5(backend, device, box, size, expected):
    dtype = cases.best_dtype(backend)
    out = impls.crop_and_resize(IMAGE_5X5.to(device, dtype), torch.tensor([box], dtype=dtype, device=device),
                                torch.tensor([0], device=device), size, backend=backend)
    assert out.device.type == device
    torch.testing.assert_close(out[0, 0].cpu(), torch.tensor(expected, dtype=dtype), rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend,device", cases.backend_device_params("crop_and_resize"))
def test_crop_and_resize_extrapolates_outside(backend, device):
    # Box rows -0.25 .. 1.25 on 5 rows: samples at pixel rows -1, 2, 5 -> only the middle row is inside.
    dtype = cases.best_dtype(backend)
    out = impls.crop_and_resize(IMAGE_5X5.to(device, dtype),
                                torch.tensor([[-0.25, 0, 1.25, 1]], dtype=dtype, device=device),
                                torch.tensor([0], device=device), (3, 2), extrapolation_value=-7, backend=backend)
    expected = torch.tensor([[-7, -7], [10, 14], [-7, -7]], dtype=dtype)
    assert out.device.type == device
    torch.testing.assert_close(out[0, 0].cpu(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend,device", cases.backend_device_params("roi_align"))
def test_roi_align_one_bin_by_hand(backend, device):
    # aligned=False, box (0.5, 0.5)-(2.5, 2.5) on the 5x5 ramp v(y, x) = 5y + x, one 1x1 bin, sampling_ratio 2:
    # samples at y, x in {1.0, 2.0}; bilinear of a linear ramp is exact: mean of 5y + x = 5*1.5 + 1.5 = 9.
    # aligned=True shifts every sample by -0.5: 9 - 3 = 6.
    dtype = cases.best_dtype(backend)
    boxes = torch.tensor([[0, 0.5, 0.5, 2.5, 2.5]], dtype=dtype, device=device)
    for aligned, expected in ((False, 9.0), (True, 6.0)):
        out = impls.roi_align(IMAGE_5X5.to(device, dtype), boxes, 1, sampling_ratio=2, aligned=aligned,
                              backend=backend)
        assert out.shape == (1, 1, 1, 1) and out.device.type == device
        assert abs(out.item() - expected) < 1e-6, (aligned, out.item())


@pytest.mark.parametrize("backend,device", cases.backend_device_params("roi_align"))
def test_roi_align_clamps_in_minus_one_to_h(backend, device):
    # A sample at y = -0.5 (inside [-1, H]) is clamped onto row 0; one at y = -1.5 is zero.
    # Box y from -1 to 0 with one bin, sampling_ratio 1, aligned=False: the sample sits at y = -0.5, x = 2 -> v = 2.
    dtype = cases.best_dtype(backend)
    image = IMAGE_5X5.to(device, dtype)
    inside = impls.roi_align(image, torch.tensor([[0, 1.5, -1, 2.5, 0]], dtype=dtype, device=device), 1,
                             sampling_ratio=1, backend=backend)
    outside = impls.roi_align(image, torch.tensor([[0, 1.5, -2, 2.5, -1]], dtype=dtype, device=device), 1,
                              sampling_ratio=1, backend=backend)
    assert abs(inside.item() - 2.0) < 1e-6
    assert outside.item() == 0.0
