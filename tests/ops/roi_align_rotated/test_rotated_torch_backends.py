"""roi_align_rotated's pure-torch (``impls/ops/roi_align_rotated/vectorized.py``) and Triton
(``impls/backends/triton/roi_align_rotated_kernels.py``) kernels, called directly with SPEC.md's signatures:

* a worked 5x5 example by hand (angle 0, 90 both ways, 180) and a box wholly outside the map;
* the forward and both gradients against the oracle (``reference.py``), float64 and float32, NCHW and
  channels_last (the layout rule checked too), a fixed and the adaptive sampling grid, counter-clockwise and
  clockwise, on boxes inside, partly outside and wholly outside the map and boxes of zero size;
* independent of the oracle, float64: the vectorized box gradient against finite differences (SPEC.md's chain rule)
  and the image gradient as the forward's transpose (<forward(x), g> = <x, backward_input(g)>);
* identities: angle 0 is ``impls.roi_align(aligned=True)`` on the axis-aligned box (forward and both gradients),
  angle 180 the same crop flipped in both output axes, angle 90 on a square box the crop rotated by a quarter turn;
* the memory bound: with a tiny chunk, boxes split over chunks and one box's samples over pieces give the same
  result; the adaptive grid's padding of a chunk to its largest grid changes nothing;
* K = 0, zero-size boxes (no samples under the adaptive grid: output 0, no gradient), an invalid image index (NaN
  output and no gradient, never another image's values), half types (computed in float32, rounded once);
* ``torch.compile(fullgraph=True)`` of the vectorized forward (fixed grid) and of the three per-chunk steps (what
  the ``compiled`` backend will compile) with an adaptive, padded chunk;
* the Triton image gradient under ``torch.use_deterministic_algorithms(True)`` (the sorted gather): float64 the
  reference's bits, the same bits on a second run.

The Triton kernels run where ``impls.backends.triton.launcher`` says they run: on the CPU under
``TRITON_INTERPRET=1`` (set in the environment before triton is imported, as ``make test`` does), else on a CUDA GPU;
where neither is possible their tests fail with the launcher's reason.
"""

import functools

import pytest
import torch

import impls
from impls.backends.triton import launcher as triton_launcher
from impls.core.determinism import deterministic_algorithms
from impls.ops.roi_align_rotated import reference, vectorized

SCALE = 0.5  # image pixels -> map pixels
PH, PW = 3, 4
N, C, H, W = 2, 3, 12, 14  # the map: 24 x 28 image pixels

# (batch, cx, cy, w, h, angle in degrees) in image pixels. No sample lands on a pixel row or column (the nearest is
# 2.7e-4 px from one, measured), where the box gradient switches slope and a last-bit difference would pick the
# other one.
ROIS = [
    (0, 10.3, 12.7, 9.1, 7.4, 17.0),  # inside
    (1, 20.9, 6.2, 14.6, 9.8, -63.0),  # inside, negative angle
    (0, 2.1, 3.3, 11.7, 8.9, 141.0),  # partly outside (top left: samples read 0 and clamp onto row/column 0)
    (1, 27.4, 22.8, 10.2, 6.6, 203.5),  # partly outside (bottom right: clamped onto the last row/column)
    (0, 12.2, 11.1, 0.0, 0.0, 33.0),  # zero size: adaptive grid 0 x 0 (output 0); a fixed grid samples the centre
    (1, 8.8, 14.3, 0.0, 9.7, -12.0),  # zero width: adaptive grid 2 x 0
    (0, -30.0, 5.0, 6.0, 6.0, 45.0),  # wholly outside: every sample reads 0
    (1, 14.1, 12.2, 30.4, 21.7, 78.0),  # large: adaptive grid 4 x 4 (h_s = 10.85 on 3 bins, w_s = 15.2 on 4)
]

# Allowed error relative to the largest magnitude of the oracle's result (at least 1): |got - want| <= tol * that.
TOLERANCE = {
    # Same float64 expressions for every position (the oracle's order; cos and sin agree bit for bit on these
    # angles); only the sums run in another order: a few ulps (2.2e-16) times the ~300 terms of a box-gradient
    # element, ~1e-13. A wrong term (a missed clamp, a sign) is off by > 1e-3.
    torch.float64: 1e-12,
    # Positions are still float64; weights, products and sums are float32 (6e-8 relative each) over up to ~300
    # terms per box-gradient element: 2e-5 at worst, ~1e-6 typically (measured: 5e-7).
    torch.float32: 2e-5,
}


def _assert_close(got, want, dtype, what):
    got, want = got.detach().cpu().double(), want.detach().cpu().double()
    assert got.shape == want.shape, what
    scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
    torch.testing.assert_close(got, want, rtol=0, atol=TOLERANCE[dtype] * scale, msg=what)


# --------------------------------------------------------------------------------------------- backends


class _Vectorized:
    device = "cpu"
    forward = staticmethod(vectorized.forward)
    backward_input = staticmethod(vectorized.backward_input)
    backward_boxes = staticmethod(vectorized.backward_boxes)


@functools.cache
def _triton_kernels():
    """The Triton module, imported only by the tests that run it (importing triton does not need a GPU)."""
    from impls.backends.triton import roi_align_rotated_kernels

    return roi_align_rotated_kernels


class _Triton:
    device = triton_launcher.DEVICE

    @staticmethod
    def forward(*args):
        return _triton_kernels().forward(*args)

    @staticmethod
    def backward_input(*args):
        return _triton_kernels().backward_input(*args)

    @staticmethod
    def backward_boxes(*args):
        return _triton_kernels().backward_boxes(*args)


BACKENDS = {"vectorized": _Vectorized, "triton": _Triton}


@pytest.fixture(params=list(BACKENDS))
def backend(request):
    """Each backend's kernels; triton fails (not skips) where it cannot run, with the launcher's reason."""
    if request.param == "triton":
        reason = triton_launcher._unavailable_reason()
        if reason is not None:
            pytest.fail(f"triton is unavailable: {reason}")
    return BACKENDS[request.param]


def _run(kernels, x, rois, grad, sampling_ratio, clockwise, scale=SCALE, ph=PH, pw=PW):
    """(output, image gradient, box gradient) of one backend, the inputs moved to its device."""
    d = kernels.device
    x, rois, grad = x.to(d), rois.to(d), grad.to(d)
    out = kernels.forward(x, rois, scale, ph, pw, sampling_ratio, clockwise)
    n, c, h, w = x.shape
    d_x = kernels.backward_input(grad, rois, scale, ph, pw, n, c, h, w, sampling_ratio, clockwise)
    d_rois = kernels.backward_boxes(grad, x, rois, scale, ph, pw, sampling_ratio, clockwise)
    return out, d_x, d_rois


def _oracle(x, rois, grad, sampling_ratio, clockwise, scale=SCALE, ph=PH, pw=PW):
    """The reference on the very values the backend received, in float64."""
    x, rois, grad = x.double(), rois.double(), grad.double()
    n, c, h, w = x.shape
    return (reference.forward(x, rois, scale, ph, pw, sampling_ratio, clockwise),
            reference.backward_input(grad, rois, scale, ph, pw, n, c, h, w, sampling_ratio, clockwise),
            reference.backward_boxes(grad, x, rois, scale, ph, pw, sampling_ratio, clockwise))


def _inputs(dtype=torch.float64, channels_last=False, rois=ROIS):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, C, H, W, generator=g, dtype=torch.float64).to(dtype)
    r = torch.tensor(rois, dtype=torch.float64).to(dtype)
    grad = torch.randn(len(rois), C, PH, PW, generator=g, dtype=torch.float64).to(dtype)
    if channels_last:
        x, grad = x.contiguous(memory_format=torch.channels_last), grad.contiguous(memory_format=torch.channels_last)
    return x, r, grad


# ---------------------------------------------------------------------------------------------- by hand


# On arange(25) as a 5x5 map (v = 5*y + x), the box centred on (2.5, 2.5) image px, 2 x 2, one sample per bin of a
# 2x2 output: after the -0.5 shift the samples sit at the centre (2, 2) +- 0.5 in the box's frame.
A = [[9.0, 10.0], [14.0, 15.0]]  # angle 0: y, x in {1.5, 2.5}
HAND = [
    (0.0, False, A),
    # counter-clockwise 90: y = 2 - xx, x = 2 + yy, so out[ph][pw] = 5*(2.5 - pw) + 1.5 + ph: A rotated a quarter
    # turn clockwise (torch.rot90(A, -1)).
    (90.0, False, [[14.0, 9.0], [15.0, 10.0]]),
    (90.0, True, [[10.0, 15.0], [9.0, 14.0]]),  # clockwise 90: torch.rot90(A, 1)
    (180.0, False, [[15.0, 14.0], [10.0, 9.0]]),  # A flipped in both axes
]


@pytest.mark.parametrize("angle, clockwise, expected", HAND, ids=["0", "90", "90-clockwise", "180"])
def test_worked_example_by_hand(backend, angle, clockwise, expected):
    x = torch.arange(25, dtype=torch.float64).view(1, 1, 5, 5).to(backend.device)
    rois = torch.tensor([[0, 2.5, 2.5, 2.0, 2.0, angle], [0, -9.0, 2.5, 2.0, 2.0, angle]],
                        dtype=torch.float64).to(backend.device)
    out = backend.forward(x, rois, 1.0, 2, 2, 1, clockwise).cpu()
    # cos(pi/2) is 6e-17, not 0: the positions are exact to ~1e-16 px
    torch.testing.assert_close(out[0, 0], torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    # the second box sits at x = -9.5 +- 1 on the map: beyond -1, every sample reads 0
    assert out[1].abs().max().item() == 0.0


# ------------------------------------------------------------------------------------------- the oracle


@pytest.mark.parametrize("clockwise", [False, True], ids=["ccw", "cw"])
@pytest.mark.parametrize("sampling_ratio", [2, 0], ids=["ratio2", "adaptive"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_matches_the_reference(backend, dtype, channels_last, sampling_ratio, clockwise):
    x, rois, grad = _inputs(dtype, channels_last)
    got = _run(backend, x, rois, grad, sampling_ratio, clockwise)
    want = _oracle(x, rois, grad, sampling_ratio, clockwise)
    for name, g, w in zip(("forward", "image gradient", "box gradient"), got, want):
        _assert_close(g, w, dtype, name)
    out, d_x, d_rois = got
    assert out.dtype == d_x.dtype == d_rois.dtype == dtype
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=layout), "forward: the input's memory format"
    assert d_x.is_contiguous(memory_format=layout), "image gradient: the incoming gradient's memory format"
    assert (d_rois[:, 0] == 0).all(), "the batch column gets no gradient"
    assert d_rois[:, 1:].abs().sum() > 0 and d_x.abs().sum() > 0  # the comparison is not of zeros only


def test_vectorized_image_gradient_is_the_references_bit_for_bit():
    """float64, fixed grid: the same positions (same expressions, same cos and sin), each tap's contribution
    ``g * w / count`` as the reference writes it, added in the reference's order (box, ph, pw, iy, ix, corner)
    by one ``index_put_`` (serial on the CPU): the same bits, and so the same bits on every run."""
    _, rois, grad = _inputs()
    for clockwise in (False, True):
        got = vectorized.backward_input(grad, rois, SCALE, PH, PW, N, C, H, W, 2, clockwise)
        want = reference.backward_input(grad, rois, SCALE, PH, PW, N, C, H, W, 2, clockwise)
        assert torch.equal(got, want)


# ------------------------------------------------------------------------------------- finite differences


def _boxes_op(x, batch, sampling_ratio, clockwise):
    """The vectorized kernels as a differentiable function of the box columns 1..5 (the batch column is an index,
    not differentiable: perturbed, it would make the box invalid)."""

    class BoxesOp(torch.autograd.Function):
        @staticmethod
        def forward(boxes):
            return vectorized.forward(x, torch.cat([batch, boxes], 1), SCALE, PH, PW, sampling_ratio, clockwise)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(*inputs)

        @staticmethod
        def backward(ctx, grad):
            (boxes,) = ctx.saved_tensors
            rois = torch.cat([batch, boxes], 1)
            return vectorized.backward_boxes(grad, x, rois, SCALE, PH, PW, sampling_ratio, clockwise)[:, 1:]

    return BoxesOp.apply


@pytest.mark.parametrize("clockwise", [False, True], ids=["ccw", "cw"])
@pytest.mark.parametrize("sampling_ratio", [2, 0], ids=["ratio2", "adaptive"])
def test_box_gradient_matches_finite_differences(sampling_ratio, clockwise):
    """SPEC.md's chain rule checked without the oracle (torch.autograd.gradcheck on cx, cy, w, h, angle). Zero-size
    boxes are left out: w = 0 is a kink (a negative width flips the samples) and, adaptive, a step of ceil.
    eps = 1e-6 moves no sample across a pixel line (the nearest is 2.7e-4 px from one, measured) nor an adaptive grid
    across a step; the central difference is then exact to O(eps^2) on the bilinear pieces, and rounding adds
    ~1e-16 / 1e-6 = 1e-10: atol 1e-7. A wrong term (a sign, a missed clamp) is off by > 1e-2."""
    x, rois, _ = _inputs(rois=[r for r in ROIS if r[3] > 0 and r[4] > 0])
    boxes = rois[:, 1:].clone().requires_grad_()
    torch.autograd.gradcheck(_boxes_op(x, rois[:, :1], sampling_ratio, clockwise), (boxes,), eps=1e-6, atol=1e-7,
                             rtol=0)


@pytest.mark.parametrize("clockwise", [False, True], ids=["ccw", "cw"])
@pytest.mark.parametrize("sampling_ratio", [2, 0], ids=["ratio2", "adaptive"])
def test_image_gradient_is_the_forwards_transpose(sampling_ratio, clockwise):
    """The forward is linear in the map, so its gradient is its transpose: <forward(x), g> = <x, backward_input(g)>
    for any x and g, independent of the oracle (what finite differences would check, in one call). float64, sums
    of ~1e3 terms of magnitude ~1 in another order: 1e-12 of the magnitude."""
    x, rois, grad = _inputs()
    out = vectorized.forward(x, rois, SCALE, PH, PW, sampling_ratio, clockwise)
    d_x = vectorized.backward_input(grad, rois, SCALE, PH, PW, N, C, H, W, sampling_ratio, clockwise)
    lhs, rhs = (out * grad).sum(), (x * d_x).sum()
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs).item()), (lhs, rhs)
    assert out.abs().sum() > 1.0 and d_x.abs().sum() > 1.0  # not a comparison of zeros


# --------------------------------------------------------------------------------------------- identities


def _as_axis_aligned(rois):
    """(batch, cx, cy, w, h, 0) -> roi_align's (batch, x1, y1, x2, y2) = (cx - w/2, cy - h/2, cx + w/2, cy + h/2)."""
    b, cx, cy, w, h = rois[:, :5].unbind(1)
    return torch.stack([b, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


@pytest.mark.parametrize("sampling_ratio", [2, 0], ids=["ratio2", "adaptive"])
def test_angle_0_is_roi_align_aligned(backend, sampling_ratio):
    """Angle 0 equals ``impls.roi_align(aligned=True, backend="reference")`` on the axis-aligned box, forward and
    both gradients (the box gradient by the chain rule: d/dcx = d/dx1 + d/dx2, d/dw = (d/dx2 - d/dx1)/2, y alike;
    angle gets whatever it gets). float64; the positions are computed by other expressions (start + offset vs
    centre + offset), so to rounding (1e-12 of the magnitude), not bit for bit."""
    x, rois, grad = _inputs()
    rois[:, 5] = 0.0
    out, d_x, d_rois = _run(backend, x, rois, grad, sampling_ratio, False)
    xr = x.clone().requires_grad_()
    boxes = _as_axis_aligned(rois).requires_grad_()
    want = impls.roi_align(xr, boxes, (PH, PW), SCALE, sampling_ratio, True, backend="reference")
    want_x, want_boxes = torch.autograd.grad(want, (xr, boxes), grad)
    _assert_close(out, want, torch.float64, "forward")
    _assert_close(d_x, want_x, torch.float64, "image gradient")
    _, g_x1, g_y1, g_x2, g_y2 = want_boxes.unbind(1)
    expected = torch.stack([g_x1 + g_x2, g_y1 + g_y2, (g_x2 - g_x1) / 2, (g_y2 - g_y1) / 2], 1)
    _assert_close(d_rois[:, 1:5], expected, torch.float64, "box gradient (cx, cy, w, h)")


def test_angle_180_flips_and_90_turns_a_square_box():
    """Angle 180 is angle 0's crop flipped in both output axes: (yy, xx) -> (-yy, -xx), and bin ph's samples are bin
    PH-1-ph's mirrored (a fixed grid of 2: the mirrored sample set is the same set). Angle 90 on a square box with a
    square output maps (yy, xx) to (-xx, yy): out90[i, j] = out0[P-1-j, i], torch.rot90(out0, -1) (a quarter turn
    clockwise of the crop, as the counter-clockwise box turns the image under it the other way). float64 to
    rounding: cos(pi/2) = 6e-17, not 0."""
    x, _, _ = _inputs()
    base = [(0, 10.3, 12.7, 9.1, 7.4, 0.0), (1, 20.9, 6.2, 14.6, 9.8, 0.0), (0, 2.1, 3.3, 11.7, 8.9, 0.0)]
    rois0 = torch.tensor(base, dtype=torch.float64)
    rois180 = rois0.clone()
    rois180[:, 5] = 180.0
    out0 = vectorized.forward(x, rois0, SCALE, PH, PW, 2, False)
    out180 = vectorized.forward(x, rois180, SCALE, PH, PW, 2, False)
    _assert_close(out180, out0.flip(2, 3), torch.float64, "180")
    square = rois0.clone()
    square[:, 4] = square[:, 3]
    square90 = square.clone()
    square90[:, 5] = 90.0
    out0 = vectorized.forward(x, square, SCALE, 4, 4, 2, False)
    out90 = vectorized.forward(x, square90, SCALE, 4, 4, 2, False)
    _assert_close(out90, torch.rot90(out0, -1, dims=(2, 3)), torch.float64, "90")


# ---------------------------------------------------------------------------------------- chunks and padding


@pytest.mark.parametrize("sampling_ratio", [3, 0], ids=["ratio3", "adaptive"])
def test_chunks_and_pieces_change_nothing(monkeypatch, sampling_ratio):
    """With a chunk of 12 * 3 * 2 = 72 gathered values, a chunk holds at most two samples of every bin: the boxes
    go one or two per chunk and the 3x3 (fixed) and 4x4 (adaptive, the large box) grids are cut into pieces of
    their iy and ix ranges. Same results as one chunk, to float64 rounding (the sums are split differently)."""
    x, rois, grad = _inputs()
    want = _run(_Vectorized, x, rois, grad, sampling_ratio, False)
    monkeypatch.setattr(vectorized, "_CHUNK_ELEMENTS", PH * PW * C * 2)
    b = vectorized.box_geometry(rois, N, SCALE, PH, PW, sampling_ratio, False)
    plan = vectorized._plan(b, C, PH, PW, sampling_ratio)
    assert len(plan) > len(ROIS) and any(c.piece[0][0] > 0 or c.piece[1][0] > 0 for c in plan), plan
    got = _run(_Vectorized, x, rois, grad, sampling_ratio, False)
    for name, g, w in zip(("forward", "image gradient", "box gradient"), got, want):
        _assert_close(g, w, torch.float64, name)


def test_adaptive_chunks_pad_to_their_largest_grid():
    """Under the adaptive grid one chunk holds boxes of grids 1x1 ... 4x4, padded to 4x4 with masked samples: the
    padding must read and receive nothing. Each box alone (no padding) gives the same result."""
    x, rois, grad = _inputs()
    b = vectorized.box_geometry(rois, N, SCALE, PH, PW, 0, False)
    plan = vectorized._plan(b, C, PH, PW, 0)
    assert len(plan) == 1 and plan[0].piece == ((0, 4), (0, 4))  # all 6 boxes with samples in one padded chunk
    got = _run(_Vectorized, x, rois, grad, 0, False)
    for k in range(len(ROIS)):
        alone = _run(_Vectorized, x, rois[k:k + 1], grad[k:k + 1], 0, False)
        _assert_close(got[0][k:k + 1], alone[0], torch.float64, f"forward, box {k}")
        _assert_close(got[2][k:k + 1], alone[2], torch.float64, f"box gradient, box {k}")
    alone_x = sum(_run(_Vectorized, x, rois[k:k + 1], grad[k:k + 1], 0, False)[1] for k in range(len(ROIS)))
    _assert_close(got[1], alone_x, torch.float64, "image gradient")


# ----------------------------------------------------------------------------------------------- edge cases


def test_no_boxes(backend):
    x, _, _ = _inputs()
    rois = torch.zeros(0, 6, dtype=torch.float64)
    grad = torch.zeros(0, C, PH, PW, dtype=torch.float64)
    for sampling_ratio in (2, 0):
        out, d_x, d_rois = _run(backend, x, rois, grad, sampling_ratio, False)
        assert out.shape == (0, C, PH, PW) and d_rois.shape == (0, 6)
        assert d_x.shape == (N, C, H, W) and d_x.abs().sum() == 0


def test_zero_size_boxes(backend):
    """Adaptive: a box of zero width or height has a grid of 0 samples on that side: output 0, no gradient. A fixed
    grid samples the box's centre line (w = h = 0: every sample at the centre), as the oracle says."""
    x, rois, grad = _inputs(rois=[r for r in ROIS if r[3] == 0 or r[4] == 0])
    out, d_x, d_rois = _run(backend, x, rois, grad, 0, False)
    assert out.abs().sum() == 0 and d_x.abs().sum() == 0 and d_rois.abs().sum() == 0
    out, _, _ = _run(backend, x, rois, grad, 2, False)
    want = reference.forward(x, rois, SCALE, PH, PW, 2, False)
    _assert_close(out, want, torch.float64, "fixed grid")
    assert out[0].abs().min() > 0  # the centre's value, in every bin


def test_invalid_image_index_reads_nothing(backend):
    """Called directly with an image index outside [0, N) or fractional (the public op rejects both), a box gives
    NaN and no gradient: never another image's values (-1 would wrap to image N - 1), as roi_align's kernels."""
    x, rois, grad = _inputs(rois=ROIS[:2] + [(-1, *ROIS[1][1:]), (2, *ROIS[0][1:]), (0.5, *ROIS[0][1:])])
    out, d_x, d_rois = _run(backend, x, rois, grad, 2, False)
    assert out[2:].isnan().all() and not out[:2].isnan().any()
    assert (d_rois[2:] == 0).all()
    _, want_x, _ = _run(backend, x, rois[:2], grad[:2], 2, False)
    _assert_close(d_x, want_x, torch.float64, "image gradient: the invalid boxes add nothing")


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_types_compute_in_float32(backend, half):
    """float16/bfloat16 compute in float32 and are rounded once at the end: float32 on the same (rounded) values,
    rounded to the half type. vectorized: equal bit for bit. triton: to one unit of the half type's last place
    (2**-10, 2**-7 relative), for two reasons: its atomic image gradient adds in an order a GPU may change (float32
    sums ~1e-7 apart can round to neighbouring half values), and Triton's interpreter rounds float32 to bfloat16
    towards zero, not to nearest (measured: -0.33496 stored as -0.33398 where torch gives -0.33594)."""
    x, rois, grad = _inputs(half)
    got = _run(backend, x, rois, grad, 0, True)
    want = _run(backend, x.float(), rois.float(), grad.float(), 0, True)
    unit = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}[half] if backend is _Triton else 0.0
    for name, g, w in zip(("forward", "image gradient", "box gradient"), got, want):
        assert g.dtype == half, name
        torch.testing.assert_close(g.float().cpu(), w.to(half).float().cpu(), rtol=unit, atol=0, msg=name)


# ------------------------------------------------------------------------------------------- torch.compile


def test_vectorized_forward_compiles_as_one_graph():
    """With a fixed grid the chunk loop is Python on shapes: ``fullgraph=True`` takes the whole call. Inductor may
    reorder float32 sums: 1e-5 (the tolerance's float32 reason)."""
    x, rois, _ = _inputs(torch.float32)
    fn = functools.partial(vectorized.forward, spatial_scale=SCALE, pooled_height=PH, pooled_width=PW,
                           sampling_ratio=2, clockwise=True)
    torch._dynamo.reset()
    got = torch.compile(fn, fullgraph=True)(x, rois)
    _assert_close(got, fn(x, rois), torch.float32, "compiled forward")


def test_steps_compile_on_a_padded_adaptive_chunk():
    """What the ``compiled`` backend will do: the eager chunk loop (adaptive: padded chunks) calling the three steps
    compiled with ``fullgraph=True, dynamic=True``; each step traces as one graph and gives the eager results."""
    x, rois, grad = _inputs(torch.float32)
    torch._dynamo.reset()
    compiled = vectorized.Steps("compiled-test", *(torch.compile(s, fullgraph=True, dynamic=True)
                                                   for s in (vectorized.sample_step, vectorized.scatter_step,
                                                             vectorized.box_grad_step)))
    got = (vectorized.forward(x, rois, SCALE, PH, PW, 0, False, steps=compiled),
           vectorized.backward_input(grad, rois, SCALE, PH, PW, N, C, H, W, 0, False, steps=compiled),
           vectorized.backward_boxes(grad, x, rois, SCALE, PH, PW, 0, False, steps=compiled))
    want = _run(_Vectorized, x, rois, grad, 0, False)
    for name, g, w in zip(("forward", "image gradient", "box gradient"), got, want):
        _assert_close(g, w, torch.float32, name)


# ---------------------------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("clockwise", [False, True], ids=["ccw", "cw"])
@pytest.mark.parametrize("sampling_ratio", [2, 0], ids=["ratio2", "adaptive"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_triton_deterministic_image_gradient_is_the_references_bit_for_bit(channels_last, sampling_ratio, clockwise):
    """Under torch.use_deterministic_algorithms(True) the Triton image gradient is the sorted gather: each element
    sums its taps in the reference's order, so float64 gives the reference's bits (every box of ROIS: partly and
    wholly outside, zero size with no sample, the adaptive 4 x 4 grid) and a second run the same bits."""
    reason = triton_launcher._unavailable_reason()
    if reason is not None:
        pytest.fail(f"triton is unavailable: {reason}")
    _, rois, grad = _inputs(channels_last=channels_last)
    d = _Triton.device
    with deterministic_algorithms():
        got = [_Triton.backward_input(grad.to(d), rois.to(d), SCALE, PH, PW, N, C, H, W, sampling_ratio, clockwise)
               for _ in range(2)]
    want = reference.backward_input(grad, rois, SCALE, PH, PW, N, C, H, W, sampling_ratio, clockwise)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert got[0].is_contiguous(memory_format=layout), "image gradient: the incoming gradient's memory format"
    assert torch.equal(got[0].cpu(), want), "float64 deterministic image gradient is not the reference's bits"
    assert torch.equal(got[0], got[1]), "the deterministic image gradient changed between two runs"
    assert want.abs().sum() > 0
