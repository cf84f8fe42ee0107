"""The rotated peers against the reference (``impls/ops/roi_align_rotated/reference.py``, float64 loops):

* ``openvino`` (``impls/backends/peers/openvino_rotated.py``): OpenVINO's ROIAlignRotated-15 computes our op
  (CONVENTIONS.md §3b) once its inputs are converted (angle in radians, batch column apart): both senses of
  rotation, the adaptive grid, zero-size boxes, the border rows. What differs is tested as a difference: degrees fed
  as they are, a negative ``sampling_ratio``, float64 computed in float32.
* ``grid_sample`` (``impls/backends/peers/grid_sample_rotated.py``): ``affine_grid`` + ``grid_sample`` +
  ``avg_pool2d`` is our op, forward and both gradients, on boxes whose samples stay inside the map; at the border it
  is our op on the map padded with one zero pixel (its taps outside read 0 and blend, where we clamp), shown on a
  known example and in full; the adaptive grid raises.
"""

import math

import cases
import optional_deps
import pytest
import torch
import torch.nn.functional as F

from impls.backends.peers import grid_sample_rotated
from impls.ops.roi_align_rotated import reference

OUTPUT_SIZE = (3, 4)


def _rois(k, seed, n=2, centre=(40.0, 34.0), offset=-6.0, side=30.0, dtype=torch.float64):
    """[K, 6] random rotated boxes (batch, cx, cy, w, h, degrees) in image pixels: by default centres in
    [-6, 34) x [-6, 28), sides in [0, 30), angles in [-360, 360), so at spatial_scale 0.5 on a 12 x 14 map some
    cross the border, some lie outside, and adaptive grids of 1 to 5 samples per bin side occur."""
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(k, 2, generator=g, dtype=torch.float64) * torch.tensor(centre, dtype=torch.float64) + offset
    wh = torch.rand(k, 2, generator=g, dtype=torch.float64) * side
    angle = torch.rand(k, 1, generator=g, dtype=torch.float64) * 720 - 360
    batch = torch.randint(0, n, (k, 1), generator=g).double()
    return torch.cat([batch, c, wh, angle], 1).to(dtype)


def _map(seed, dtype=torch.float64, shape=(2, 3, 12, 14)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


# (batch, cx, cy, w, h, degrees) at spatial_scale 0.5 on the 12 x 14 map: with h = 6 (3 map px), PH = 3 and
# sampling_ratio 2 the samples sit at cy_s + {-1.25, -0.75, ..., 1.25}.
EDGE_ROIS = torch.tensor([
    [0, 11.0, 1.5, 8.0, 6.0, 0.0],  # cy_s = 0.25: samples at y = -1 (clamped onto row 0), -0.5, ..., 1.5
    [1, 11.0, 22.5, 8.0, 6.0, 0.0],  # cy_s = 10.75: samples at y = 9.5 ... 12 = H (clamped onto row 11)
    [0, 12.0, 10.0, 0.0, 6.0, 20.0],  # zero width: the adaptive grid has no sample (0), a fixed one the centre line
    [1, 10.0, 10.0, 0.0, 0.0, 0.0],  # zero size
    [0, 60.0, 50.0, 6.0, 6.0, 10.0],  # wholly outside: 0
    [1, 7.0, 9.0, 6.0, 6.0, 180.0],
])


# -- openvino ---------------------------------------------------------------------------------------------------------

# float32: OpenVINO computes positions, cos and sin in float32 where our kernels use float64 (§3b.5): ~2e-6 px at
# 20 px from the origin, times the map's slope (~3), and the bin sum in float32 (measured <= 3.3e-6 on these boxes).
# 2e-5 leaves room and still fails by O(1) for a wrong convention (the sense, the unit, the centre shift).
OPENVINO_TOLERANCE = 2e-5
SETTINGS = [pytest.param(sr, cw, id=f"sr{sr}-{'cw' if cw else 'ccw'}") for sr in (2, 0, 1) for cw in (False, True)]


@pytest.fixture(scope="module")
def openvino_peer():
    optional_deps.require("openvino")
    from impls.backends.peers import openvino_rotated

    return openvino_rotated


def _openvino_inputs(seed=0):
    rois = torch.cat([_rois(24, seed + 1), EDGE_ROIS.double()])
    return _map(seed, torch.float32), rois.float()


@pytest.mark.parametrize("sampling_ratio,clockwise", SETTINGS)
def test_openvino_is_the_reference_once_the_angle_is_in_radians(openvino_peer, sampling_ratio, clockwise):
    x, rois = _openvino_inputs()
    got = openvino_peer.forward(x, rois, 0.5, *OUTPUT_SIZE, sampling_ratio, clockwise)
    assert got.dtype == torch.float32 and not got.isnan().any()
    want = reference.forward(x.double(), rois.double(), 0.5, *OUTPUT_SIZE, sampling_ratio, clockwise)
    cases.assert_close(got, want, OPENVINO_TOLERANCE, "openvino")
    # Its clockwise_mode is our clockwise: the other sense is not within the tolerance.
    other = reference.forward(x.double(), rois.double(), 0.5, *OUTPUT_SIZE, sampling_ratio, not clockwise)
    assert (got.double() - other).abs().max() > 0.1


def test_openvino_edge_boxes_are_ours(openvino_peer):
    # The samples on y = -1 and y = H read the edge rows (clamped, as §3.3), not 0; a box with no adaptive sample
    # gives 0, not NaN (OpenVINO's ROIAlign-9 divides by 0 there, CONVENTIONS.md §8.2); an outside box gives 0.
    x = torch.arange(2 * 3 * 12 * 14, dtype=torch.float32).view(2, 3, 12, 14) % 168 + 1  # no zero pixel
    rois = EDGE_ROIS.float()
    for sampling_ratio in (2, 0):
        got = openvino_peer.forward(x, rois, 0.5, *OUTPUT_SIZE, sampling_ratio, False)
        want = reference.forward(x.double(), rois.double(), 0.5, *OUTPUT_SIZE, sampling_ratio, False)
        cases.assert_close(got, want, OPENVINO_TOLERANCE, f"openvino sr{sampling_ratio}")
        assert (got[:2] > 0).all() and (got[4] == 0).all()
    adaptive = openvino_peer.forward(x, rois, 0.5, *OUTPUT_SIZE, 0, False)
    assert (adaptive[2:4] == 0).all()


def test_openvino_reads_radians_so_degrees_fed_as_they_are_differ(openvino_peer):
    # The conversion is the peer's feeds: our rois' angle column, left in degrees, turns the boxes elsewhere.
    x, rois = _openvino_inputs()
    request = openvino_peer.infer_request(0.5, *OUTPUT_SIZE, 2, False)
    feeds = openvino_peer.feeds(x, rois)
    torch.testing.assert_close(torch.from_numpy(feeds["rois"][:, 4]),
                               (rois[:, 5].double() * math.pi / 180).float(), rtol=0, atol=0)
    feeds["rois"][:, 4] = rois[:, 5].numpy()
    got = torch.from_numpy(request.infer(feeds)[0]).double()
    want = reference.forward(x.double(), rois.double(), 0.5, *OUTPUT_SIZE, 2, False)
    assert (got - want).abs().max() > 0.1


def test_openvino_rejects_a_negative_sampling_ratio_which_the_peer_passes_as_0(openvino_peer):
    # Ours reads any sampling_ratio <= 0 as adaptive; OpenVINO's kernel checks sampling_ratio >= 0 when it runs.
    x, rois = _openvino_inputs()
    request = openvino_peer.compiled_model(0.5, *OUTPUT_SIZE, -1, False).create_infer_request()
    with pytest.raises(RuntimeError, match="sampling_ratio"):
        request.infer(openvino_peer.feeds(x, rois))
    cases.assert_close(openvino_peer.forward(x, rois, 0.5, *OUTPUT_SIZE, -1, False),
                       reference.forward(x.double(), rois.double(), 0.5, *OUTPUT_SIZE, -1, False),
                       OPENVINO_TOLERANCE, "openvino sr-1")


def test_openvino_computes_a_float64_model_in_float32(openvino_peer):
    # Why the peer takes float32 only: a float64 model returns float64 with float32's error, not float64's.
    import numpy as np
    import openvino
    import openvino.opset15 as ops

    x, rois = _openvino_inputs()
    x, rois = x.double(), rois.double()
    params = [ops.parameter([-1, -1, -1, -1], np.float64), ops.parameter([-1, 5], np.float64),
              ops.parameter([-1], np.int64)]
    node = ops.roi_align_rotated(*params, *OUTPUT_SIZE, 2, 0.5, False)
    model = openvino.Core().compile_model(openvino.Model([node], params), "CPU")
    feeds = openvino_peer.feeds(x, rois)
    got = torch.from_numpy(model([feeds["x"], feeds["rois"], feeds["batch_indices"]])[0])
    want = reference.forward(x, rois, 0.5, *OUTPUT_SIZE, 2, False)
    assert got.dtype == torch.float64
    error = (got - want).abs().max().item()
    assert 1e-10 < error < OPENVINO_TOLERANCE, error
    with pytest.raises(ValueError, match="CPU float32 tensors only"):
        openvino_peer.forward(x, rois, 0.5, *OUTPUT_SIZE, 2, False)


def test_openvino_compiles_once_per_configuration_and_keeps_the_layout(openvino_peer):
    x, rois = _openvino_inputs()
    openvino_peer.infer_request.cache_clear()
    first = openvino_peer.forward(x, rois, 0.25, *OUTPUT_SIZE, 2, True)
    second = openvino_peer.forward(x * 2, rois, 0.25, *OUTPUT_SIZE, 2, True)
    info = openvino_peer.infer_request.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    torch.testing.assert_close(second, 2 * first)  # the first result is not the request's reused output memory
    out = openvino_peer.forward(x.contiguous(memory_format=torch.channels_last), rois, 0.25, *OUTPUT_SIZE, 2, True)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, first, rtol=0, atol=0)


# -- grid_sample ------------------------------------------------------------------------------------------------------

# float64 on both sides: affine_grid and grid_sample normalize and unnormalize the positions (u*w_s*cos/W, then
# ((X + 1)*W - 1)/2) where the reference rotates the box offsets directly: positions agree to a few ulps of ~10 px,
# values and gradients to ~1e-14 on a standard-normal map (measured <= 2.5e-14, the box gradient).
GRID_SAMPLE_TOLERANCE = 1e-12


def _grid_sample_all(x, rois, sampling_ratio, clockwise, grad, spatial_scale=0.5):
    """(forward, image gradient, box gradient) of the peer's kernels."""
    n, c, h, w = x.shape
    return (grid_sample_rotated.forward(x, rois, spatial_scale, *OUTPUT_SIZE, sampling_ratio, clockwise),
            grid_sample_rotated.backward_input(grad, rois, spatial_scale, *OUTPUT_SIZE, n, c, h, w, sampling_ratio,
                                               clockwise),
            grid_sample_rotated.backward_boxes(grad, x, rois, spatial_scale, *OUTPUT_SIZE, sampling_ratio, clockwise))


def _reference_all(x, rois, sampling_ratio, clockwise, grad, spatial_scale=0.5):
    n, c, h, w = x.shape
    return (reference.forward(x, rois, spatial_scale, *OUTPUT_SIZE, sampling_ratio, clockwise),
            reference.backward_input(grad, rois, spatial_scale, *OUTPUT_SIZE, n, c, h, w, sampling_ratio, clockwise),
            reference.backward_boxes(grad, x, rois, spatial_scale, *OUTPUT_SIZE, sampling_ratio, clockwise))


@pytest.mark.parametrize("sampling_ratio", [1, 2, 3])
@pytest.mark.parametrize("clockwise", [False, True], ids=["ccw", "cw"])
def test_grid_sample_is_the_reference_inside_the_map_with_both_gradients(sampling_ratio, clockwise):
    # Centres within 1 map px of the middle of the 16 x 18 map, sides up to 6 map px: a sample is at most
    # 0.5 + 3*sqrt(2) < 4.8 map px from the middle, so every sample and all its taps lie inside (no clamp, no
    # zero tap) and random positions are never on a pixel row, where the slopes switch.
    x = _map(2, shape=(2, 3, 16, 18))
    rois = _rois(10, seed=3, centre=(4.0, 4.0), offset=0.0, side=12.0)
    rois[:, 1] += 16.0  # cx in [16, 20) image px: [7.5, 9.5) on the map
    rois[:, 2] += 14.0
    grad = torch.randn(10, 3, *OUTPUT_SIZE, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    got = _grid_sample_all(x, rois, sampling_ratio, clockwise, grad)
    want = _reference_all(x, rois, sampling_ratio, clockwise, grad)
    for what, a, b in zip(("forward", "image gradient", "box gradient"), got, want):
        cases.assert_close(a, b, GRID_SAMPLE_TOLERANCE, what)
    assert (got[2][:, 5] != 0).all(), "the angle gets a gradient through affine_grid"


def test_a_sample_within_a_pixel_of_the_edge_blends_with_zero_where_ours_clamps():
    # The 5 x 5 map 5*row + col + 1; one 1 x 1 bin, one sample at (cy - 0.5, cx - 0.5), spatial_scale 1, angle 0.
    x = (torch.arange(25, dtype=torch.float64) + 1).view(1, 1, 5, 5)

    def both(cy):
        rois = torch.tensor([[0, 2.5, cy, 2.0, 2.0, 0.0]], dtype=torch.float64)  # x = 2: column value 3 on row 0
        return (grid_sample_rotated.forward(x, rois, 1.0, 1, 1, 1, False).item(),
                reference.forward(x, rois, 1.0, 1, 1, 1, False).item())

    assert both(0.25) == (0.75 * 3, 3.0)  # y = -0.25: ours clamps onto row 0; grid_sample weighs row -1 (0) by 0.25
    assert both(5.0) == (0.5 * 23, 23.0)  # y = 4.5 (past the last row, 4): ours clamps; grid_sample blends row 5 (0)
    assert both(-1.0) == (0.0, 0.0)  # y = -1.5: outside in both
    assert both(2.0) == (10.5, 10.5)  # y = 1.5: inside, the same (rows 1 and 2: 8 and 13)


@pytest.mark.parametrize("seed", [0, 1])
def test_grid_sample_is_ours_on_the_map_padded_with_one_zero_pixel(seed):
    # The border difference in full, gradients included: grid_sample's zero padding is our op on the map with a
    # border of one zero pixel, each box moved by one map pixel (1/spatial_scale image px). A sample within a pixel
    # outside the map then blends the zero pixel and the edge pixel, as grid_sample's taps do; one further out
    # clamps onto the zero border or leaves the padded range, and reads 0 with no gradient in both.
    x = _map(seed)
    rois = _rois(16, seed + 5)  # across the border, outside, all angles
    grad = torch.randn(16, 3, *OUTPUT_SIZE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    moved = rois.clone()
    moved[:, 1:3] += 1 / 0.5
    padded = _reference_all(F.pad(x, (1, 1, 1, 1)), moved, 2, False, grad)
    got = _grid_sample_all(x, rois, 2, False, grad)
    cases.assert_close(got[0], padded[0], GRID_SAMPLE_TOLERANCE, "forward")
    cases.assert_close(got[1], padded[1][:, :, 1:-1, 1:-1], GRID_SAMPLE_TOLERANCE, "image gradient")
    cases.assert_close(got[2], padded[2], GRID_SAMPLE_TOLERANCE, "box gradient")
    assert (padded[1][:, :, 0] != 0).any(), "some samples blend with the zero border"
    # ...which is not our op on the map itself: the border bins differ by O(1).
    assert (got[0] - reference.forward(x, rois, 0.5, *OUTPUT_SIZE, 2, False)).abs().max() > 0.1


def test_grid_sample_keeps_the_layout():
    x = _map(0).contiguous(memory_format=torch.channels_last)
    rois = _rois(4, 1)
    out = grid_sample_rotated.forward(x, rois, 0.5, *OUTPUT_SIZE, 2, False)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, grid_sample_rotated.forward(x.contiguous(), rois, 0.5, *OUTPUT_SIZE, 2, False))


@pytest.mark.parametrize("sampling_ratio", [0, -1])
def test_grid_sample_raises_for_the_adaptive_grid(sampling_ratio):
    # One avg_pool2d kernel size for every box: the per-box adaptive grid has no single-call form.
    with pytest.raises(ValueError, match=f"fixed sampling_ratio > 0 .* got sampling_ratio={sampling_ratio}"):
        grid_sample_rotated.forward(_map(0), _rois(4, 1), 0.5, *OUTPUT_SIZE, sampling_ratio, False)
