"""crop_and_resize's float32 image gradient on the CPU adds each crop row's taps with the accumulators of the two image
columns under its cells held in registers (``add_row_corners16`` in csrc, AVX-512, 16 channels or more), where the
other types add each tap into memory. Each accumulator must still receive its contributions one by one in the
reference's order (box, cell, then corner tl, tr, bl, br), so the result is that of the plain loops, bit for bit.

The oracle is those loops written here in numpy float32, with the kernel's own coordinate arithmetic (TensorFlow's
rule, ``CONVENTIONS.md``): every operation is one IEEE float32 operation, so the sums are exact to compare. Both
layouts are checked (NCHW: the gradient transposed per crop row; channels_last: read in place). The boxes walk the
columns every way the kernel distinguishes: many cells per column (upsampling), integer coordinates (both taps on one
column), steps of one and of several columns, right to left (flipped boxes), and columns outside the map. 151
channels give the kernel a full 64-channel register pass, 16-channel ones and a masked tail of 7.
"""

import numpy as np
import pytest
import torch

import impls  # noqa: F401  (registers torch.ops.impls)

OPS = torch.ops.impls

N, C, H, W = 2, 151, 28, 28  # H - 1 = W - 1 = 27: a box side of 0.25 samples a 28-long crop at exact quarters
F32 = np.float32


def _axis(lo: float, hi: float, crop: int, size: int) -> list[tuple[bool, int, int, np.float32]]:
    """(valid, lo, hi, lerp) of each sample along one side, in float32 as the kernel computes them."""
    lo, hi = F32(lo), F32(hi)
    taps = []
    for i in range(crop):
        if crop > 1:
            scale = (hi - lo) * F32(size - 1) / F32(crop - 1)
            v = lo * F32(size - 1) + F32(i) * scale
        else:
            v = F32(0.5) * (lo + hi) * F32(size - 1)
        f = np.floor(v)
        taps.append((bool(F32(0) <= v <= F32(size - 1)), int(f), int(np.ceil(v)), v - f))
    return taps


def _image_grad(grad: np.ndarray, boxes: np.ndarray, box_index: np.ndarray) -> np.ndarray:
    """The image gradient [N, H, W, C] by the reference's loops: box, cell, corner, each add one float32 add."""
    _, _, ch, cw = grad.shape
    out = np.zeros((N, H, W, C), dtype=F32)
    one = F32(1)
    for k, (y1, x1, y2, x2) in enumerate(boxes):
        n = box_index[k]
        xs = _axis(x1, x2, cw, W)
        for py, (y_ok, top, bottom, yl) in enumerate(_axis(y1, y2, ch, H)):
            if not y_ok:
                continue
            for px, (x_ok, left, right, xl) in enumerate(xs):
                if not x_ok:
                    continue
                g = grad[k, :, py, px]
                out[n, top, left] += (one - xl) * ((one - yl) * g)
                out[n, top, right] += xl * ((one - yl) * g)
                out[n, bottom, left] += (one - xl) * (yl * g)
                out[n, bottom, right] += xl * (yl * g)
    return out


def _boxes(generator: torch.Generator) -> torch.Tensor:
    side = 0.1 + torch.rand(16, 2, generator=generator) * 0.4  # 3 to 14 pixels: several cells per column at 28
    corner = torch.rand(16, 2, generator=generator) * (1 - side)
    random = torch.cat([corner, corner + side], dim=1)
    walks = torch.tensor([
        [0.5, 0.0, 0.75, 0.25],  # exact quarters: integer coordinates, both taps on one column
        [0.0, 0.25, 0.25, 0.5],
        [0.0, 0.0, 1.0, 1.0],  # the whole map: a step of about one column
        [0.1, 0.9, 0.6, 0.2],  # flipped: right to left
        [0.7, 0.6, 0.2, 0.3],  # flipped both ways
        [-0.2, -0.3, 0.5, 0.4],  # columns and rows left of and above the map
        [0.3, 0.7, 1.3, 1.2],  # right of and below it
        [0.2, 0.4, 0.2, 0.4],  # a point: every cell on one sample
    ])
    return torch.cat([random[:, [1, 0, 3, 2]], walks]).float()


@pytest.mark.parametrize("crop", [(28, 28), (9, 9), (14, 28)], ids=["28x28", "9x9", "14x28"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_register_adds_equal_the_reference_loops_in_float32(crop, layout):
    g = torch.Generator().manual_seed(11)
    boxes = _boxes(g)
    k = boxes.shape[0]
    box_index = torch.arange(k) % N
    grad = torch.randn(k, C, *crop, generator=g)
    want = _image_grad(grad.numpy(), boxes.numpy(), box_index.numpy())
    assert (want != 0).any()
    if layout == "channels_last":
        grad = grad.contiguous(memory_format=torch.channels_last)
    got = OPS.crop_and_resize_backward_input(grad, boxes, box_index, *crop, N, C, H, W, "bilinear")
    assert k * crop[0] * crop[1] * 4 >= N * H * W, "NCHW: the taps must outnumber the pixels (the banded path)"
    assert torch.equal(got, torch.from_numpy(want).permute(0, 3, 1, 2)), f"{layout} {crop}: sums differ"
