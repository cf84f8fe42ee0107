"""crop_and_resize's channels_last forward writes its output by cached stores where the output's pages are fresh from
the OS, and by streamed, non-temporal stores where they are already in memory (``pages_are_fresh`` and
``vertical_lerp`` in csrc). Both must give the same values: the case is one call with a 42 MB output, which glibc's
malloc (this process's allocator) always maps anew, being above its largest mmap threshold (32 MB), so that its pages
are fresh; and the same boxes again two at a time, each output under two pages, which the kernel never counts as
fresh, so that they stream.

The oracles: the small calls, bit for bit (the same expressions, only the stores differ), and the float64 reference on
a few of the boxes (float32 rounding).
"""

import torch

import impls

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
