"""roi_align_rotated's oracle and C++ CPU kernels (``CONVENTIONS.md §3b``), called directly: no validation, no autograd.

* ``reference`` against values worked out by hand on a 4x4 ramp, against the identities the contract states (angle
  0 is roi_align with ``aligned=True``; 180 degrees flips the crop; 90 degrees on a square box rotates it), its box
  gradient against finite differences and its image gradient as the forward's transpose;
* ``cpp`` against ``reference``: float64 bit for bit (forward, both gradients, NCHW and channels_last, fixed and
  adaptive sampling, both rotation senses, boxes partly outside the map), float32/float16/bfloat16 within the
  tolerances stated below; the image gradient the same bits for 1 and 2 threads; a bad batch index raises.

The three operator schemas are defined here when the package has not defined them yet (SPEC: defined once, in
Python); the C++ kernels registered for them in ``impls._C`` then become callable.
"""

import math

import pytest
import torch

import impls
from impls.ops.roi_align_rotated import reference

SCHEMAS = {
    "roi_align_rotated_forward": (
        "(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
        "int sampling_ratio, bool clockwise) -> Tensor"
    ),
    "roi_align_rotated_backward_input": (
        "(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
        "SymInt batch_size, SymInt channels, SymInt height, SymInt width, int sampling_ratio, bool clockwise) "
        "-> Tensor"
    ),
    "roi_align_rotated_backward_boxes": (
        "(Tensor grad, Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
        "int sampling_ratio, bool clockwise) -> Tensor"
    ),
}


def _define_schemas():
    for name, schema in SCHEMAS.items():
        try:
            torch._C._dispatch_find_schema_or_throw(f"impls::{name}", "")
        except RuntimeError:
            torch.library.define(f"impls::{name}", schema)


_define_schemas()
OPS = torch.ops.impls

# ------------------------------------------------------------------------------------------------ helpers


def _ramp():
    """The 4x4 map v(y, x) = 4y + x: bilinear sampling reads 4y + x at any in-range position inside it."""
    return torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4)


def _rois(rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype).reshape(-1, 6)


def _random_rois(gen, K, N, H, W, max_size=8.0, margin=2.0):
    """Boxes whose centres range from ``margin`` outside the map to as far beyond it, any angle: many are partly
    outside, a few wholly."""
    b = torch.randint(0, N, (K,), generator=gen).double()
    cx = torch.rand(K, generator=gen, dtype=torch.float64) * (W + 2 * margin) - margin
    cy = torch.rand(K, generator=gen, dtype=torch.float64) * (H + 2 * margin) - margin
    w = torch.rand(K, generator=gen, dtype=torch.float64) * max_size
    h = torch.rand(K, generator=gen, dtype=torch.float64) * max_size
    angle = torch.rand(K, generator=gen, dtype=torch.float64) * 720 - 360
    return torch.stack([b, cx, cy, w, h, angle], 1)


def _axis_aligned(rois):
    """roi_align's boxes (batch, x1, y1, x2, y2) for the angle-0 rotated boxes (batch, cx, cy, w, h, angle)."""
    b, cx, cy, w, h = rois[:, :5].unbind(1)
    return torch.stack([b, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


# ------------------------------------------------------------------------------------------- the reference


def test_reference_ramp_by_hand():
    """The 4x4 ramp v = 4y + x, box centre (2, 2), 2x2, one sample per bin (sampling_ratio 1), scale 1.

    Centre on the map: (2 - 0.5, 2 - 0.5) = (1.5, 1.5); bins of 1 pixel; sample offsets yy, xx in {-0.5, 0.5}.
    * 0 degrees: y = 1.5 + yy in {1, 2}, x = 1.5 + xx in {1, 2}: [[4+1, 4+2], [8+1, 8+2]] = [[5, 6], [9, 10]].
    * 90 degrees (cos = 6e-17, sin = 1): y = 1.5 - xx, x = 1.5 + yy. Bin (0, 0): y = 2, x = 1 -> 9; bin (0, 1):
      y = 1, x = 1 -> 5; bin (1, 0): y = 2, x = 2 -> 10; bin (1, 1): 6. [[9, 5], [10, 6]]: the 0-degree crop
      turned a quarter clockwise as displayed (row 0 on top): the box turned counter-clockwise, so what it reads
      appears turned the other way.
    * 90 degrees, clockwise=True (sin = -1): y = 1.5 + xx, x = 1.5 - yy: [[6, 10], [5, 9]], as -90 degrees.
    * At the border: centre (0.5, 2), w 2, h 1, one row of 2 bins: y = 1.5; x = -0.5 (in [-1, 0]: clamped to 0,
      value 6) and x = 0.5 (value 6.5).
    * w = 0 with the adaptive grid: ceil(0 / 2) = 0 samples per bin, the mean divides by max(0, 1): zeros.
    """
    ramp = _ramp()
    box = _rois([[0, 2, 2, 2, 2, 0], [0, 2, 2, 2, 2, 90]])
    out = reference.forward(ramp, box, 1.0, 2, 2, 1, False)
    assert out.tolist() == [[[[5, 6], [9, 10]]], [[[9, 5], [10, 6]]]]
    out = reference.forward(ramp, _rois([[0, 2, 2, 2, 2, 90], [0, 2, 2, 2, 2, -90]]), 1.0, 2, 2, 1, True)
    assert out.tolist() == [[[[6, 10], [5, 9]]], [[[9, 5], [10, 6]]]]
    out = reference.forward(ramp, _rois([[0, 0.5, 2, 2, 1, 0]]), 1.0, 1, 2, 1, False)
    assert out.tolist() == [[[[6.0, 6.5]]]]
    out = reference.forward(ramp, _rois([[0, 2, 2, 0, 2, 30]]), 1.0, 2, 2, 0, False)
    assert out.tolist() == [[[[0.0, 0.0], [0.0, 0.0]]]]


def test_reference_box_gradient_by_hand():
    """d out / d (cx, cy, w, h, angle) on the ramp, where d v / d y = 4 and d v / d x = 1.

    * Box (2, 2, 2, 2, 0), 2x2 bins, one sample each, gradient 1 on bin (0, 0) only: its sample sits at
      yy = xx = -0.5, fractions fy = fx = -0.25 of the box side. d/dcx = 1, d/dcy = 4, d/dw = fx * 1 = -0.25,
      d/dh = fy * 4 = -1, d/dangle = (4 * -(yy sin + xx cos) + (yy cos - xx sin)) * pi/180 = (2 - 0.5) * pi/180.
    * The border box (0.5, 2, 2, 1, 0), gradient 1 on both bins: the first sample's x was clamped (-0.5 -> 0), so
      only the second moves with cx: d/dcx = 1, not 2; d/dcy = 4 + 4; d/dw = 0.25 (second sample, fx = 0.25);
      d/dh = 0 (fy = 0); d/dangle = 4 * (0.5 - 0.5) * pi/180 = 0.
    """
    ramp = _ramp()
    grad = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    grad[0, 0, 0, 0] = 1
    got = reference.backward_boxes(grad, ramp, _rois([[0, 2, 2, 2, 2, 0]]), 1.0, 2, 2, 1, False)
    # Rounding only: each entry is one or two products of exact values with pi/180.
    torch.testing.assert_close(got, _rois([[0, 1, 4, -0.25, -1, 1.5 * math.pi / 180]]), rtol=1e-15, atol=1e-15)
    grad = torch.ones(1, 1, 1, 2, dtype=torch.float64)
    got = reference.backward_boxes(grad, ramp, _rois([[0, 0.5, 2, 2, 1, 0]]), 1.0, 1, 2, 1, False)
    torch.testing.assert_close(got, _rois([[0, 1, 8, 0.25, 0, 0]]), rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("sampling_ratio", [2, 0], ids=["ratio2", "adaptive"])
def test_reference_angle0_is_roi_align_aligned(sampling_ratio):
    """Angle 0 samples where roi_align with aligned=True samples on the box (cx -+ w/2, cy -+ h/2). With boxes on
    an eighth-pixel grid, scale 0.5 and a power-of-two grid every position is exact in both formulas: equal bit for
    bit. Elsewhere (random boxes, the adaptive grid's divisions by 3 or 5) the two formulas round differently:
    equal to rounding (1e-12 on values of about 1)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 12, 14, dtype=torch.float64, generator=gen)
    rois = _random_rois(gen, 8, 2, 24, 28, max_size=14.0)
    rois[:, 5] = 0
    if sampling_ratio == 2:
        rois[:, 1:5] = (rois[:, 1:5] * 8).round() / 8
    got = reference.forward(x, rois, 0.5, 4, 4, sampling_ratio, False)
    want = impls.roi_align(x, _axis_aligned(rois), (4, 4), 0.5, sampling_ratio, True, backend="reference")
    if sampling_ratio == 2:
        assert torch.equal(got, want)
    else:
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_reference_180_flips_and_90_rotates():
    """180 degrees: y = cy - yy, x = cx - xx (cos = -1, sin = 1e-16), so bin (ph, pw) reads the 0-degree crop's bin
    (PH-1-ph, PW-1-pw): the crop flipped along both output axes. 90 degrees on a square box (PH = PW): y = cy - xx,
    x = cx + yy, so bin (ph, pw) reads the 0-degree bin (PW-1-pw, ph): the crop transposed, then flipped along its
    last axis (torch.rot90(crop, -1)). Equal to rounding: sin(pi) and cos(pi/2) are not exactly 0, and the samples of
    a bin add in another order (1e-12 on values of about 1)."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 16, 16, dtype=torch.float64, generator=gen)
    rois = _random_rois(gen, 6, 1, 16, 16)
    rois[:, 4] = rois[:, 3]  # square boxes
    for sampling_ratio in (2, 0):
        crop = reference.forward(x, rois.index_fill(1, torch.tensor([5]), 0.0), 1.0, 3, 3, sampling_ratio, False)
        turned = reference.forward(x, rois.index_fill(1, torch.tensor([5]), 180.0), 1.0, 3, 3, sampling_ratio, False)
        quarter = reference.forward(x, rois.index_fill(1, torch.tensor([5]), 90.0), 1.0, 3, 3, sampling_ratio, False)
        torch.testing.assert_close(turned, crop.flip(-2, -1), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(quarter, crop.transpose(-2, -1).flip(-1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("clockwise", [False, True], ids=["ccw", "cw"])
def test_reference_box_gradient_finite_differences(clockwise):
    """Central differences of the forward in float64, boxes inside the map (no clamping) at any angle. The sampled
    value is bilinear, a quadratic in the position within a pixel cell, so a central difference is exact there; the
    error left is rounding, about 1e-16 / 1e-6 = 1e-10 per unit of output. The seed's samples stay 1e-6 away from
    every pixel line and the adaptive grid away from its ceil steps (checked: a sample crossing a pixel line would
    show as an error of about 1e-1)."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 16, 16, dtype=torch.float64, generator=gen)
    K = 4
    rois = torch.stack([
        torch.tensor([0.0, 1.0, 1.0, 0.0]),
        torch.rand(K, generator=gen, dtype=torch.float64) * 4 + 6,
        torch.rand(K, generator=gen, dtype=torch.float64) * 4 + 6,
        torch.rand(K, generator=gen, dtype=torch.float64) * 4 + 2,
        torch.rand(K, generator=gen, dtype=torch.float64) * 4 + 2,
        torch.rand(K, generator=gen, dtype=torch.float64) * 360 - 180,
    ], 1)
    grad = torch.randn(K, 2, 3, 2, dtype=torch.float64, generator=gen)
    eps = 1e-6
    for sampling_ratio in (2, 0):
        got = reference.backward_boxes(grad, x, rois, 1.25, 3, 2, sampling_ratio, clockwise)
        want = torch.zeros_like(got)
        for k in range(K):
            for j in range(1, 6):
                up, down = rois.clone(), rois.clone()
                up[k, j] += eps
                down[k, j] -= eps
                f_up = reference.forward(x, up, 1.25, 3, 2, sampling_ratio, clockwise)
                f_down = reference.forward(x, down, 1.25, 3, 2, sampling_ratio, clockwise)
                want[k, j] = ((f_up - f_down) * grad).sum() / (2 * eps)
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-7)


def test_reference_input_gradient_is_the_transpose():
    """<grad, forward(x)> = <backward_input(grad), x> for any x: the image gradient is the forward's transpose
    (rounding: 1e-12 on sums of about 10)."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64, generator=gen)
    rois = _random_rois(gen, 5, 2, 9, 11)
    for sampling_ratio, clockwise in ((2, False), (0, True)):
        out = reference.forward(x, rois, 0.8, 3, 2, sampling_ratio, clockwise)
        grad = torch.randn(out.shape, dtype=torch.float64, generator=gen)
        g_in = reference.backward_input(grad, rois, 0.8, 3, 2, 2, 3, 9, 11, sampling_ratio, clockwise)
        torch.testing.assert_close((grad * out).sum(), (g_in * x).sum(), rtol=1e-12, atol=1e-12)


# -------------------------------------------------------------------------------------------------- cpp


def _problem(dtype=torch.float64, C=3, K=10, seed=5):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, C, 9, 11, dtype=torch.float64, generator=gen)
    rois = _random_rois(gen, K, 2, 9 / 0.7, 11 / 0.7)
    rois[0, 3] = 0.0  # a box of zero width: no samples with the adaptive grid, its centre line with a fixed one
    rois[1, 5] = 90.0  # exactly on a quarter turn
    grad = torch.randn(K, C, 3, 4, dtype=torch.float64, generator=gen)
    return x.to(dtype), rois.to(dtype), grad.to(dtype)


def _all_three(x, rois, grad, sampling_ratio, clockwise, run):
    """forward, backward_input and backward_boxes of ``run`` (``OPS`` names or the ``reference`` module)."""
    N, C, H, W = x.shape
    return (
        run.roi_align_rotated_forward(x, rois, 0.7, 3, 4, sampling_ratio, clockwise),
        run.roi_align_rotated_backward_input(grad, rois, 0.7, 3, 4, N, C, H, W, sampling_ratio, clockwise),
        run.roi_align_rotated_backward_boxes(grad, x, rois, 0.7, 3, 4, sampling_ratio, clockwise),
    )


class _Reference:
    roi_align_rotated_forward = staticmethod(reference.forward)
    roi_align_rotated_backward_input = staticmethod(reference.backward_input)
    roi_align_rotated_backward_boxes = staticmethod(reference.backward_boxes)


LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


# (layout, sampling_ratio, clockwise, channels): every layout x grid x sense with 3 channels, and 67 channels (two
# channel slices of the CPU kernels, 64 + 3) once per layout: the reference is slow.
BIT_EXACT_CASES = [
    pytest.param(layout, ratio, clockwise, 3, id=f"{layout}-{ratio_id}-{'cw' if clockwise else 'ccw'}-c3")
    for layout in LAYOUTS
    for ratio, ratio_id in ((0, "adaptive"), (2, "ratio2"), (3, "ratio3"))
    for clockwise in (False, True)
] + [pytest.param(layout, 0, False, 67, id=f"{layout}-adaptive-ccw-c67") for layout in LAYOUTS]


@pytest.mark.parametrize("layout, sampling_ratio, clockwise, channels", BIT_EXACT_CASES)
def test_cpp_float64_bit_exact(layout, sampling_ratio, clockwise, channels):
    """Same expressions in the same order, no FP contraction: cpp float64 is the reference bit for bit, in the
    input's layout (forward) and the incoming gradient's (input gradient)."""
    x, rois, grad = _problem(C=channels)
    x = x.contiguous(memory_format=LAYOUTS[layout])
    grad = grad.contiguous(memory_format=LAYOUTS[layout])
    got = _all_three(x, rois, grad, sampling_ratio, clockwise, OPS)
    want = _all_three(x, rois, grad, sampling_ratio, clockwise, _Reference)
    for name, g, w in zip(("forward", "backward_input", "backward_boxes"), got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, name
        assert torch.equal(g, w), f"{name}: max difference {(g - w).abs().max().item()}"
    assert got[0].is_contiguous(memory_format=LAYOUTS[layout])
    assert got[1].is_contiguous(memory_format=LAYOUTS[layout])


@pytest.mark.parametrize("layout", LAYOUTS, ids=list(LAYOUTS))
def test_cpp_image_without_boxes_gets_zero_gradient(layout):
    """An image that no box samples gets an exactly zero input gradient beside images that do. The NCHW result is
    not zeroed beforehand (each task writes its channel slice of its image whole), so a task that skipped the image
    would leave whatever the memory held: freed NaN-filled tensors of the result's size are offered to the allocator
    first, and the result is compared with the reference bit for bit."""
    x, rois, grad = _problem(C=20)
    _, C, H, W = x.shape
    N = 3  # the boxes of image 1 move to image 2: image 1 of 3 has none
    rois[:, 0] = torch.where(rois[:, 0] == 1, 2.0, rois[:, 0])
    grad = grad.contiguous(memory_format=LAYOUTS[layout])
    want = reference.backward_input(grad, rois, 0.7, 3, 4, N, C, H, W, 0, False)
    for _ in range(3):
        torch.full((N, C, H, W), math.nan, dtype=torch.float64).contiguous(memory_format=LAYOUTS[layout])
        got = OPS.roi_align_rotated_backward_input(grad, rois, 0.7, 3, 4, N, C, H, W, 0, False)
        assert torch.equal(got[1], torch.zeros_like(got[1])), "the image without boxes"
        assert torch.equal(got, want), f"max difference {(got - want).abs().max().item()}"


# (rtol, share of the largest reference value used as atol). Every dtype computes in float32 (the geometry in
# float64, as the reference) and rounds once to the output dtype: float16 and bfloat16 are then off by at most half
# an ulp of the result, 2**-11 and 2**-8 relative, and rtol is one ulp. float32 sums up to a few hundred products
# whose weights were rounded to float32 (2**-24 each): measured 1.3e-6 on box gradients of 10 (1.3e-7 of the
# largest), 1.1e-7 on outputs of about 1; 1e-5 and 1e-6 of the largest leave a margin of about 8. The same float32
# sums sit under the half types' rounding, and near-zero results of long sums with cancellation need the atol share.
HALF_TOLERANCE = {torch.float32: (1e-5, 1e-6), torch.float16: (2**-10, 1e-5), torch.bfloat16: (2**-7, 1e-5)}


@pytest.mark.parametrize("dtype", HALF_TOLERANCE, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("layout", LAYOUTS, ids=list(LAYOUTS))
def test_cpp_lower_precision(dtype, layout):
    """float32, float16 and bfloat16 against the reference run in float64 on the same (rounded) values, with the
    adaptive grid and clockwise boxes; the results keep the input's dtype."""
    x, rois, grad = _problem(dtype)
    x = x.contiguous(memory_format=LAYOUTS[layout])
    grad = grad.contiguous(memory_format=LAYOUTS[layout])
    got = _all_three(x, rois, grad, 0, True, OPS)
    want = _all_three(x.double(), rois.double(), grad.double(), 0, True, _Reference)
    rtol, share = HALF_TOLERANCE[dtype]
    for name, g, w in zip(("forward", "backward_input", "backward_boxes"), got, want):
        assert g.dtype == dtype, name
        torch.testing.assert_close(g.double(), w, rtol=rtol, atol=share * w.abs().max().item(), msg=name)


@pytest.mark.parametrize("layout", LAYOUTS, ids=list(LAYOUTS))
def test_cpp_gradients_independent_of_thread_count(layout):
    """Each image-gradient element takes its taps in the reference's order whatever the split over threads, and
    each box sums its own gradient: float32 (where the order shows in the last bits) gives the same bits for 1 and
    2 threads. Many overlapping boxes on 2 images, 70 channels (a slice split that depends on the thread count)."""
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 70, 8, 8, generator=gen).contiguous(memory_format=LAYOUTS[layout])
    rois = _random_rois(gen, 40, 2, 8, 8, max_size=6.0).float()
    grad = torch.randn(40, 70, 3, 3, generator=gen).contiguous(memory_format=LAYOUTS[layout])
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append([
                OPS.roi_align_rotated_backward_input(grad, rois, 1.0, 3, 3, 2, 70, 8, 8, 0, False),
                OPS.roi_align_rotated_backward_boxes(grad, x, rois, 1.0, 3, 3, 0, False),
            ])
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(*results):
        assert torch.equal(one, two)


@pytest.mark.parametrize("batch_index", [-1.0, 2.0, math.nan, 1e30], ids=["minus1", "N", "nan", "huge"])
def test_bad_batch_index_raises(batch_index):
    """Called directly (the public op's validation bypassed) with a batch column that is no image of the batch of
    2, every cpp kernel raises before reading, with the reference's message (the reference raises IndexError)."""
    x, rois, grad = _problem()
    rois[1, 0] = batch_index
    message = r"rois\[1, 0\] = .* is not a batch index in \[0, 2\)"
    N, C, H, W = x.shape
    calls = [
        lambda run: run.roi_align_rotated_forward(x, rois, 0.7, 3, 4, 2, False),
        lambda run: run.roi_align_rotated_backward_input(grad, rois, 0.7, 3, 4, N, C, H, W, 2, False),
        lambda run: run.roi_align_rotated_backward_boxes(grad, x, rois, 0.7, 3, 4, 2, False),
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match=message):
            call(OPS)
        with pytest.raises(IndexError, match=message):
            call(_Reference)


def test_cpp_argument_checks():
    """The shape checks of csrc/common/checks.h: rois must be [K, 6], grad must match the output."""
    x, rois, grad = _problem()
    with pytest.raises(RuntimeError, match=r"rois must be \[K, 6\]"):
        OPS.roi_align_rotated_forward(x, rois[:, :5], 0.7, 3, 4, 2, False)
    with pytest.raises(RuntimeError, match=r"grad must be \[10, 3, 3, 4\]"):
        OPS.roi_align_rotated_backward_boxes(grad[:, :, :2], x, rois, 0.7, 3, 4, 2, False)
    with pytest.raises(RuntimeError, match="rois must have the dtype of input"):
        OPS.roi_align_rotated_forward(x, rois.float(), 0.7, 3, 4, 2, False)
