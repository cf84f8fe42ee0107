"""crop_and_resize's channels_last forward writes its output by cached stores where the output stays in the
last-level cache (at most half of it) and by streamed, non-temporal stores where it does not (``stays_in_cache`` and
``vertical_lerp`` in csrc). Both must give the same values: the case is one call whose output is larger than half the
cache, so that it streams, and the same boxes again in calls small enough to store through the cache. Where the C
library does not say how large the cache is, both stream, and the test still compares them.

The oracles: the small calls, bit for bit (the same expressions, only the stores differ), and the float64 reference on
a few of the boxes (float32 rounding).
"""

import math
import subprocess

import torch

import impls

C, H, W = 256, 24, 40
CROP = (14, 14)
SMALL_CALL = 64  # boxes: 64 x 256 x 14 x 14 x 4 B = 12.8 MB, within half of any current server's L3


def _last_level_cache_bytes() -> int:
    """What the kernel reads, glibc's sysconf(_SC_LEVEL3_CACHE_SIZE), as glibc's getconf prints it (Python's
    os.sysconf does not know the name); 0 where it is not known."""
    try:
        done = subprocess.run(["getconf", "LEVEL3_CACHE_SIZE"], capture_output=True, text=True, check=True)
        return max(int(done.stdout.strip() or 0), 0)
    except (OSError, ValueError, subprocess.CalledProcessError):
        return 0


def test_streamed_and_cached_stores_give_the_same_crops():
    crop_bytes = C * CROP[0] * CROP[1] * 4
    k = max(2 * SMALL_CALL, math.ceil((_last_level_cache_bytes() // 2 + 1) / crop_bytes))
    g = torch.Generator().manual_seed(3)
    image = torch.randn(2, C, H, W, generator=g).contiguous(memory_format=torch.channels_last)
    y1, x1 = torch.rand(k, generator=g) * 0.8, torch.rand(k, generator=g) * 0.8
    side = 0.05 + torch.rand(k, generator=g) * 0.4
    boxes = torch.stack([y1, x1, y1 + side, x1 + side], dim=1)
    boxes[::4, 0] = -0.2  # rows above the map: extrapolated
    box_index = torch.randint(0, 2, (k,), generator=g)

    big = impls.crop_and_resize(image, boxes, box_index, CROP, extrapolation_value=-2.0, backend="cpp")
    assert big.is_contiguous(memory_format=torch.channels_last)
    assert big.numel() * 4 > _last_level_cache_bytes() // 2, "the large call must be one that streams"
    for k0 in range(0, k, SMALL_CALL):
        part = slice(k0, k0 + SMALL_CALL)
        small = impls.crop_and_resize(image, boxes[part], box_index[part], CROP, extrapolation_value=-2.0,
                                      backend="cpp")
        assert torch.equal(big[part], small), f"boxes {k0}..: streamed and cached stores differ"

    few = slice(0, 8)
    want = impls.crop_and_resize(image.double(), boxes[few].double(), box_index[few], CROP, extrapolation_value=-2.0,
                                 backend="reference")
    assert (want == -2.0).any(), "the case must extrapolate some samples"
    # float32 against float64: three lerps of values of about 1, a few float32 roundings (1e-6), and sample
    # coordinates rounded to float32, which can move a tap next to an integer by as much.
    torch.testing.assert_close(big[few].double(), want, rtol=0, atol=1e-4)
