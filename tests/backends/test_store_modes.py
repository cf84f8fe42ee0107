"""The CPU kernels write some float32 outputs by cached stores where the output's pages are fresh from the OS, and by
streamed, non-temporal stores where they are already in memory (``pages_are_fresh``, ``vertical_lerp`` and
``stream_tiles16`` in csrc): crop_and_resize's channels_last forward, and crop_and_resize's and roi_align's NCHW image
gradients. Both stores must give the same values. An output above glibc's largest mmap threshold (32 MB) is always
mapped anew by glibc's malloc (this process's allocator), so its pages are fresh; the kernels never count an output
under two pages as fresh.

- crop_and_resize forward: one call with a 42 MB output (cached) against the same boxes two at a time (streamed), bit
  for bit, and the float64 reference on a few of the boxes (float32 rounding).
- Image gradients: a 42 MB NCHW gradient (cached) against the channels_last one, whose runs are always streamed: the
  same sums in the same order, bit for bit. The NCHW tiles' streamed stores are those of every gradient whose pages
  are in memory and of crop_and_resize's forward blocks (the other tests).
"""

import torch

import impls

OPS = torch.ops.impls

C, H, W = 16, 24, 40
CROP = (7, 7)
BIG_OUTPUT_BYTES = 42 << 20
SMALL_CALL = 2  # boxes: 2 x 16 x 7 x 7 x 4 B = 6272 B, under two 4 KB pages


def test_streamed_and_cached_stores_give_the_same_crops():
    k = BIG_OUTPUT_BYTES // (C * CROP[0] * CROP[1] * 4)
    g = torch.Generator().manual_seed(3)
    image = torch.randn(2, C, H, W, generator=g).contiguous(memory_format=torch.channels_last)
    y1, x1 = torch.rand(k, generator=g) * 0.8, torch.rand(k, generator=g) * 0.8
    side = 0.05 + torch.rand(k, generator=g) * 0.4
    boxes = torch.stack([y1, x1, y1 + side, x1 + side], dim=1)
    boxes[::4, 0] = -0.2  # rows above the map: extrapolated
    box_index = torch.randint(0, 2, (k,), generator=g)

    big = impls.crop_and_resize(image, boxes, box_index, CROP, extrapolation_value=-2.0, backend="cpp")
    assert big.is_contiguous(memory_format=torch.channels_last)
    assert big.numel() * 4 > 32 << 20, "the large call's output must be above glibc's largest mmap threshold"
    for k0 in range(0, k, SMALL_CALL):
        part = slice(k0, k0 + SMALL_CALL)
        small = impls.crop_and_resize(image, boxes[part], box_index[part], CROP, extrapolation_value=-2.0,
                                      backend="cpp")
        assert small.numel() * 4 < 2 * 4096
        assert torch.equal(big[part], small), f"boxes {k0}..: cached and streamed stores differ"

    few = slice(0, 8)
    want = impls.crop_and_resize(image.double(), boxes[few].double(), box_index[few], CROP, extrapolation_value=-2.0,
                                 backend="reference")
    assert (want == -2.0).any(), "the case must extrapolate some samples"
    # float32 against float64: three lerps of values of about 1, a few float32 roundings (1e-6), and sample
    # coordinates rounded to float32, which can move a tap next to an integer by as much.
    torch.testing.assert_close(big[few].double(), want, rtol=0, atol=1e-4)


def test_fresh_nchw_image_gradient_equals_channels_last():
    n, c, h, w, k, crop = 1, 256, 168, 256, 700, 8  # 700 x 8 x 8 x 4 taps >= 168 x 256 pixels: the dense (banded) path
    g = torch.Generator().manual_seed(5)
    ys = torch.rand(k, 2, generator=g)
    xs = torch.rand(k, 2, generator=g) * 1.2 - 0.1  # some columns outside the map, some boxes flipped
    boxes = torch.stack([ys[:, 0], xs[:, 0], ys[:, 1], xs[:, 1]], dim=1)
    box_index = torch.zeros(k, dtype=torch.int64)
    grad = torch.randn(k, c, crop, crop, generator=g)
    nchw = OPS.crop_and_resize_backward_input(grad, boxes, box_index, crop, crop, n, c, h, w, "bilinear")
    nhwc = OPS.crop_and_resize_backward_input(grad.contiguous(memory_format=torch.channels_last), boxes, box_index,
                                              crop, crop, n, c, h, w, "bilinear")
    assert nchw.numel() * 4 > 32 << 20, "the NCHW gradient must be above glibc's largest mmap threshold"
    assert nchw.is_contiguous() and nhwc.is_contiguous(memory_format=torch.channels_last)
    assert (nchw != 0).any()
    assert torch.equal(nchw, nhwc), "float32 image gradient: NCHW (cached stores) and channels_last differ"


def test_fresh_nchw_roi_align_gradient_equals_channels_last():
    n, c, h, w, k, pooled = 1, 256, 168, 256, 512, 7  # a 42 MB gradient
    g = torch.Generator().manual_seed(6)
    xy = torch.rand(k, 2, generator=g) * torch.tensor([w * 4.0, h * 4.0])  # image pixels, spatial_scale 1/4
    side = 16 + torch.rand(k, 2, generator=g) * 96
    rois = torch.cat([torch.zeros(k, 1), xy, xy + side], dim=1)  # some boxes reach past the map
    grad = torch.randn(k, c, pooled, pooled, generator=g)
    args = (rois, 0.25, pooled, pooled, n, c, h, w, 2, True)
    nchw = OPS.roi_align_backward_input(grad, *args)
    nhwc = OPS.roi_align_backward_input(grad.contiguous(memory_format=torch.channels_last), *args)
    assert nchw.numel() * 4 > 32 << 20, "the NCHW gradient must be above glibc's largest mmap threshold"
    assert nchw.is_contiguous() and nhwc.is_contiguous(memory_format=torch.channels_last)
    assert (nchw != 0).any()
    assert torch.equal(nchw, nhwc), "float32 roi_align input gradient: NCHW (cached stores) and channels_last differ"
