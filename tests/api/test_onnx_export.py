"""ONNX export (``impls.onnx_translation_table()``, ``impls/core/onnx_export.py``, ``impls/ops/<op>/onnx.py``): a
model calling ``impls.roi_align``, ``impls.crop_and_resize`` or ``impls.multiscale_roi_align`` exports with
``torch.onnx.export(..., dynamo=True)`` to standard-domain ONNX, and the exported file, run in onnxruntime and in
OpenVINO, gives what the model gives eagerly.

Oracle: the model itself, called eagerly (``cpp`` backend) on the same inputs, float32. The boxes reach past the
border and outside the image, span several images, include a flipped and a sub-pixel box; a second set of boxes
checks that the graph is not specialised to the example values.

Tolerances (float32, eps 1.2e-7, values |x| < 5):
* roi_align, both runtimes: ``rtol=1.3e-6, atol=1e-5`` (torch's float32 defaults): a bin averages up to 36
  bilinear samples here, which the runtime's RoiAlign sums in its own order (measured: <= 6e-7);
* crop_and_resize in onnxruntime: bit for bit: the graph does the kernel's float32 operations in its order
  (``csrc/common/bilinear.h``) and onnxruntime's CPU provider evaluates each node as written;
* crop_and_resize in OpenVINO: the roi_align tolerance: its CPU plugin fuses the lerps' Sub/Mul/Add chains, which
  round differently by a few ulp (measured: <= 1.5e-6).
"""

import onnx
import pytest
import torch
from optional_deps import require

import impls

ort = require("onnxruntime")
ov = require("openvino")

TOL = dict(rtol=1.3e-6, atol=1e-5)

# (batch index, x1, y1, x2, y2) in image pixels, spatial_scale 0.5 on a 10 x 12 map (a 20 x 24 image).
ROIS = torch.tensor([
    [0, 1.0, 1.0, 6.0, 6.0],
    [1, 0.0, 0.0, 23.0, 19.0],  # the whole image: samples on the border
    [2, -4.0, -3.0, 5.0, 30.0],  # past the top-left and the bottom
    [1, 20.0, 16.0, 30.0, 40.0],  # mostly outside the image
    [0, 3.0, 3.0, 3.2, 3.1],  # sub-pixel: clamped to 1 x 1 when aligned=False
    [2, 7.0, 7.0, 2.0, 2.0],  # flipped
])
FLIPPED_ROW = 5
OTHER_ROIS = torch.tensor([
    [2, 2.0, 5.0, 17.0, 11.0],
    [0, -1.0, 0.5, 24.0, 20.0],
    [1, 11.0, 3.0, 13.0, 18.0],
    [0, 0.0, 0.0, 1.0, 1.0],
    [2, 15.0, 15.0, 25.0, 25.0],
    [1, 4.0, 8.0, 9.0, 9.5],
])
# Normalized (y1, x1, y2, x2): inside, flipped on both axes, reaching outside on all sides, a point, one whose
# middle row sits at 4.5 on the 10-row map (nearest rounds it half away from zero, to 5), one below the image.
BOXES = torch.tensor([
    [0.1, 0.2, 0.7, 0.9],
    [1.0, 0.6, 0.0, 0.1],
    [-0.3, -0.2, 1.2, 1.5],
    [0.5, 0.5, 0.5, 0.5],
    [0.0, 0.0, 1.0, 1.0],
    [1.1, -0.5, 1.3, 0.4],
])
BOX_INDEX = torch.tensor([0, 2, 1, 0, 2, 1])
EXTRAPOLATION = -2.5


def feature_map(seed=0):
    return torch.randn(3, 4, 10, 12, generator=torch.Generator().manual_seed(seed))


class RoIHead(torch.nn.Module):
    def __init__(self, sampling_ratio, aligned):
        super().__init__()
        self.sampling_ratio, self.aligned = sampling_ratio, aligned

    def forward(self, x, rois):
        return impls.roi_align(x, rois, (3, 4), 0.5, self.sampling_ratio, self.aligned, backend="cpp")


class CropHead(torch.nn.Module):
    def __init__(self, method, crop_size):
        super().__init__()
        self.method, self.crop_size = method, crop_size

    def forward(self, image, boxes, box_index):
        return impls.crop_and_resize(image, boxes, box_index, self.crop_size, self.method, EXTRAPOLATION,
                                     backend="cpp")


def export(model, args, tmp_path) -> str:
    """The model's .onnx file, written with our translation table."""
    path = str(tmp_path / "model.onnx")
    torch.onnx.export(model, args, dynamo=True, verbose=False,
                      custom_translation_table=impls.onnx_translation_table()).save(path)
    return path


def run_onnxruntime(path, *args):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)}
    return torch.from_numpy(session.run(None, feeds)[0])


def run_openvino(path, *args):
    core = ov.Core()
    compiled = core.compile_model(core.read_model(path), "CPU")
    return torch.from_numpy(compiled([a.numpy() for a in args])[0])


def nodes(path):
    return onnx.load(path).graph.node


ROI_CASES = [(2, True), (2, False), (0, True), (0, False)]
ROI_IDS = [f"sr{sr}-{'aligned' if aligned else 'legacy'}" for sr, aligned in ROI_CASES]
CROP_CASES = [("bilinear", (3, 4)), ("bilinear", (1, 1)), ("bilinear", (5, 1)), ("nearest", (3, 3)),
              ("nearest", (1, 5))]
CROP_IDS = [f"{m}-{h}x{w}" for m, (h, w) in CROP_CASES]


def check_roialign_node(path, sampling_ratio, aligned):
    graph = nodes(path)
    assert {n.domain for n in graph} == {""}, "only standard-domain ops (no impls:: op, no value check)"
    roi_nodes = [n for n in graph if n.op_type == "RoiAlign"]
    assert len(roi_nodes) == 1
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in roi_nodes[0].attribute}
    assert attrs == {
        "coordinate_transformation_mode": b"half_pixel" if aligned else b"output_half_pixel",
        "mode": b"avg",
        "output_height": 3,
        "output_width": 4,
        "sampling_ratio": sampling_ratio,
        "spatial_scale": 0.5,
    }
    assert onnx.load(path).opset_import[0].version >= 16


def check_openvino(path, model, sampling_ratio, aligned):
    for x, rois in ((feature_map(), ROIS), (feature_map(1), OTHER_ROIS)):
        got, want = run_openvino(path, x, rois), model(x, rois)
        if rois is ROIS and sampling_ratio <= 0 and aligned:
            # OpenVINO's known difference: a flipped box with the adaptive grid has 0 samples per bin, and it
            # divides by that count (NaN) where the ONNX spec, onnxruntime and torchvision divide by max(count, 1)
            # and give 0.
            assert got[FLIPPED_ROW].isnan().all() and (want[FLIPPED_ROW] == 0).all()
            keep = [k for k in range(len(rois)) if k != FLIPPED_ROW]
            got, want = got[keep], want[keep]
        torch.testing.assert_close(got, want, **TOL)


# One export per case, checked in every way (the graph, onnxruntime, OpenVINO): exports take seconds each.
@pytest.mark.parametrize("sampling_ratio,aligned", ROI_CASES, ids=ROI_IDS)
def test_roi_align_exports_one_roialign_node_that_matches_eager(sampling_ratio, aligned, tmp_path):
    model = RoIHead(sampling_ratio, aligned).eval()
    path = export(model, (feature_map(), ROIS), tmp_path)
    check_roialign_node(path, sampling_ratio, aligned)
    for x, rois in ((feature_map(), ROIS), (feature_map(1), OTHER_ROIS)):
        torch.testing.assert_close(run_onnxruntime(path, x, rois), model(x, rois), **TOL)
    # The comparison can fail: the other alignment's eager values are not within the tolerance.
    with pytest.raises(AssertionError):
        torch.testing.assert_close(run_onnxruntime(path, feature_map(), ROIS),
                                   RoIHead(sampling_ratio, not aligned)(feature_map(), ROIS), **TOL)
    check_openvino(path, model, sampling_ratio, aligned)


@pytest.mark.parametrize("method,crop_size", CROP_CASES, ids=CROP_IDS)
def test_crop_and_resize_exports_standard_ops_that_match_eager(method, crop_size, tmp_path):
    model = CropHead(method, crop_size).eval()
    path = export(model, (feature_map(), BOXES, BOX_INDEX), tmp_path)
    graph = nodes(path)
    assert {n.domain for n in graph} == {""}
    assert "Gather" in {n.op_type for n in graph}
    other_boxes, other_index = BOXES.flip(1), BOX_INDEX.flip(0)
    for args in ((feature_map(), BOXES, BOX_INDEX), (feature_map(1), other_boxes, other_index)):
        want = model(*args)
        assert (want == EXTRAPOLATION).any(), "some samples must fall outside the image"
        torch.testing.assert_close(run_onnxruntime(path, *args), want, rtol=0, atol=0)
        torch.testing.assert_close(run_openvino(path, *args), want, **TOL)


@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_multiscale_roi_align_exports_standard_ops_that_match_eager(backend, tmp_path):
    """The multi-level kernels (``cpp``'s and ``triton``'s, same schema): a RoiAlign per level and the level rule in
    standard ops. Boxes of 4 to 200 image pixels on a two-level pyramid (canonical 8 px box on level 0), so both
    levels and both clamps are used."""

    class Pyramid(torch.nn.Module):
        def forward(self, p2, p3, image_boxes):
            return impls.multiscale_roi_align([p2, p3], [image_boxes], [(40, 48)], 3, 2, aligned=True,
                                              canonical_scale=8, canonical_level=0, backend=backend)

    g = torch.Generator().manual_seed(3)
    p2, p3 = torch.randn(1, 4, 10, 12, generator=g), torch.randn(1, 4, 5, 6, generator=g)
    xy = torch.rand(8, 2, generator=g) * 40 - 4
    side = torch.tensor([4.0, 6.0, 9.0, 12.0, 20.0, 40.0, 90.0, 200.0])[:, None]
    image_boxes = torch.cat([xy, xy + side], dim=1)
    model = Pyramid().eval()
    path = export(model, (p2, p3, image_boxes), tmp_path)
    assert {n.domain for n in nodes(path)} == {""}
    assert [n.op_type for n in nodes(path)].count("RoiAlign") == 2
    levels = impls.ops.multiscale_roi_align.levels.map_levels(image_boxes, [0.25, 0.125], 8, 0)
    assert set(levels.tolist()) == {0, 1}
    for args in ((p2, p3, image_boxes), (p2, p3, image_boxes.flip(0))):
        torch.testing.assert_close(run_onnxruntime(path, *args), model(*args), **TOL)
        torch.testing.assert_close(run_openvino(path, *args), model(*args), **TOL)


def test_vectorized_adaptive_grid_exports_the_same_roialign(tmp_path):
    """``vectorized`` with the adaptive grid calls its own operator (``impls::adaptive_roi_align_forward``)."""

    class Vectorized(RoIHead):
        def forward(self, x, rois):
            return impls.roi_align(x, rois, (3, 4), 0.5, self.sampling_ratio, self.aligned, backend="vectorized")

    model = Vectorized(0, True).eval()
    path = export(model, (feature_map(), ROIS), tmp_path)
    assert [n.op_type for n in nodes(path) if n.op_type == "RoiAlign"] == ["RoiAlign"]
    torch.testing.assert_close(run_onnxruntime(path, feature_map(), ROIS), model(feature_map(), ROIS), **TOL)
