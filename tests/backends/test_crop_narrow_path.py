"""crop_and_resize's narrow NCHW forward (csrc/crop_and_resize/crop_and_resize_narrow_boxes.h): float32 bilinear crops
at most 32 columns wide, the planes' rows read in registers, with AVX-512 builds (the x86-64 machines that have it).

The case mixes every kind of box the kernel tells apart: windows of at most 16 columns (one register a row), 17 to 32
(two), and a few it gathers tap by tap (wider than 32 columns, or near the plane's end, where a register's load would
pass it), at most 1 box in 8 of those, as the kernel requires before it takes the call. Where the planes start on
cache lines, a row's loads start at the line of the window's first column when the window fits in the lines loaded
from there, else at that column: the maps below give rows that all share one shift from their line (W = 48), rows
that alternate between two (W = 56), and planes that do not start on a line (a map one float past one, and
H * W = 37 * 45), which take no line loads. Boxes reach outside the map (extrapolated rows and columns), some are
flipped, one lies wholly outside, and 19 channels make four whole groups of 4 planes and three single planes. The
oracles: the channels_last kernel, which computes each value with the same expressions in the same order (bit for
bit), and the float64 reference on the same inputs (float32 rounding).
"""

import math

import pytest
import torch

import impls

N, C = 2, 19
GATHERED_SHARE = 8  # kGatheredShare
MAPS = {  # (H, W, floats from a cache line's start to the map's first value)
    "rows one shift": (40, 48, 0),
    "rows two shifts": (40, 56, 0),
    "map off its line": (40, 48, 1),
    "planes off their lines": (37, 45, 0),
}


def _taps(lo: float, hi: float, crop: int, size: int) -> list[int]:
    """The pixels a box side's valid samples read (their floors and ceilings), the coordinates computed in float32 as
    the kernel computes them."""
    lo32, hi32 = (torch.tensor(v, dtype=torch.float32) for v in (lo, hi))
    if crop > 1:
        scale = (hi32 - lo32) * (size - 1) / (crop - 1)
        coords = [float(lo32 * (size - 1) + i * scale) for i in range(crop)]
    else:
        coords = [float(0.5 * (lo32 + hi32) * (size - 1))]
    return [t for v in coords if 0 <= v <= size - 1 for t in (math.floor(v), math.ceil(v))]


def _loads(box, crop, H, W, aligned) -> tuple[str, bool]:
    """How the kernel fetches a box's taps (NarrowTables::taps_of), and whether some row's loads start at its line
    (NarrowTables::row_shift): the rules restated from the kernel's comments."""
    y1, x1, y2, x2 = box.tolist()
    columns, rows = _taps(x1, x2, crop[1], W), _taps(y1, y2, crop[0], H)
    first, width = (min(columns), max(columns) + 1 - min(columns)) if columns else (0, 0)
    for registers, kind in ((1, "one register"), (2, "two registers")):
        shifts = []
        for r in range(min(rows), max(rows) + 1) if rows else ():
            start, shift = r * W + first, (r * W + first) % 16
            if aligned and shift + width <= 16 * registers and start - shift + 16 * registers <= H * W:
                shifts.append(shift)
            elif start + 16 * registers <= H * W:
                shifts.append(0)
            else:
                break
        else:
            if width <= 16 * registers:
                return kind, any(shifts)
    return "gathered", False


def _case(H, W, offset):
    g = torch.Generator().manual_seed(7)

    def boxes(count, width_px, y_range=(-0.1, 0.9), x_range=(-0.1, 0.8)):
        y1 = torch.empty(count).uniform_(*y_range, generator=g)
        x1 = torch.empty(count).uniform_(*x_range, generator=g)
        h = torch.empty(count).uniform_(2, 14, generator=g) / (H - 1)
        w = torch.empty(count).uniform_(*width_px, generator=g) / (W - 1)
        return torch.stack([y1, x1, y1 + h, x1 + w], dim=1)

    narrow = boxes(24, (2, 14))
    narrow[::5] = narrow[::5, [2, 3, 0, 1]]  # flipped
    two = boxes(8, (17, 30), x_range=(0.0, 0.3))
    wide = boxes(2, (36, 44), x_range=(0.0, 0.05))
    corner = torch.tensor([[0.9, 0.85, 1.0, 0.97]])  # the last rows, near the plane's end
    outside = torch.tensor([[1.2, 1.3, 1.5, 1.6]])
    all_boxes = torch.cat([narrow, two, wide, corner, outside]).float()
    box_index = torch.randint(0, N, (all_boxes.shape[0],), generator=g)
    values = torch.randn(N * C * H * W, generator=g)
    storage = torch.empty(N * C * H * W + 32)
    first = (-storage.data_ptr() // 4) % 16 + offset  # a cache line's start, then offset floats on
    image = storage[first:first + values.numel()].view(N, C, H, W)
    image.copy_(values.view(N, C, H, W))
    return image, all_boxes, box_index


CROPS = [(14, 14), (7, 7), (4, 5), (3, 16), (2, 17), (5, 28), (6, 32), (1, 1)]


@pytest.mark.parametrize("layout", MAPS)
@pytest.mark.parametrize("crop", CROPS, ids=lambda c: f"{c[0]}x{c[1]}")
def test_narrow_nchw_forward_equals_channels_last_and_reference(crop, layout):
    H, W, offset = MAPS[layout]
    image, boxes, box_index = _case(H, W, offset)
    aligned = image.data_ptr() % 64 == 0 and H * W % 16 == 0
    assert aligned == (layout in ("rows one shift", "rows two shifts")), layout
    loads = [_loads(b, crop, H, W, aligned) for b in boxes]
    kinds = [kind for kind, _ in loads]
    if crop[1] > 1:  # a one-column crop reads one or two columns of every box
        assert {"one register", "two registers", "gathered"} <= set(kinds), kinds
    assert any(from_line for _, from_line in loads) == aligned, "line loads where, and only where, planes allow them"
    assert kinds.count("gathered") * GATHERED_SHARE <= len(kinds), "the kernel would not take this call"
    out = impls.crop_and_resize(image, boxes, box_index, crop, extrapolation_value=-3.5, backend="cpp")
    nhwc = impls.crop_and_resize(image.contiguous(memory_format=torch.channels_last), boxes, box_index, crop,
                                 extrapolation_value=-3.5, backend="cpp")
    assert out.is_contiguous()
    assert (out == -3.5).any() and (out != -3.5).any(), "the case must extrapolate some samples and not others"
    assert torch.equal(out, nhwc), "float32 NCHW narrow path and channels_last differ"
    want = impls.crop_and_resize(image.double(), boxes.double(), box_index, crop, extrapolation_value=-3.5,
                                 backend="reference")
    # float32 against float64: each value is three lerps of values of about 1, a few float32 roundings (1e-6); the
    # sample coordinates are rounded to float32 first here, so a tap next to an integer may move by as much.
    torch.testing.assert_close(out.double(), want, rtol=0, atol=1e-4)
