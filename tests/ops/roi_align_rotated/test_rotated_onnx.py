"""ONNX export of roi_align_rotated (``impls/ops/roi_align_rotated/onnx.py``): a model calling the forward operator
exports with ``torch.onnx.export(..., dynamo=True)`` to standard-domain ONNX (positions, ``Gather`` of the taps, the
unrolled bin sum; ONNX has no rotated RoiAlign), and onnxruntime gives the reference's values; OpenVINO, reading
the same file, gives them to float32's precision. The adaptive grid
does not export: the translation raises, naming ``sampling_ratio`` and the fix.

The model calls ``impls.roi_align_rotated(..., backend="cpp")``, which exports as ``impls::roi_align_rotated_forward``
behind its value check ``impls::checked_rotated_rois`` (exported as ``Identity``: ONNX cannot raise).

Oracle: ``impls/ops/roi_align_rotated/reference.py`` (float64 Python loops). The boxes cover a box inside the map,
one partly and one wholly outside, one across a corner, a zero-width box, boxes at 180 degrees and at 0 degrees
whose samples land exactly on ``y = -1`` and ``y = H`` (the ends of the range that clamps, §3.3) and on pixel rows;
a second set of inputs checks that the graph is not specialised to the example values.

Tolerances (relative to max(1, the largest |value|), ``cases.assert_close``):
* float64: ``1e-13``. onnxruntime's double ``Cos``/``Sin`` are not the C library's that the reference calls
  (measured: 72% of 10^4 arguments differ, by up to 3.3e-16): a position of up to ~40 px moves by ~1e-14 px, its
  value by that times the map's slope (~3); measured <= 3e-15. The rest is the reference's expressions in its order.
* float32: ``1e-6``. The geometry is float64 as in our kernels, but the weights and the sums are float32, the
  reference's float64: a few float32 ulps of values |x| < 5 (measured <= 2.4e-7).
* OpenVINO: ``2e-5`` whatever the dtype: its CPU plugin computes a float64 graph in float32 (float32 positions of
  up to ~40 px: ~4e-6 px, times the slope) and fuses the Sub/Mul/Add chains (measured <= 2.5e-6).
* float16: ``1e-3``: computed in float32 and rounded once to float16 (eps 9.8e-4), as the kernels do; the
  reference rounds its float64 result, so the two can land one float16 ulp apart (measured: 0 here).
"""

import cases
import optional_deps
import pytest
import torch

onnx = optional_deps.require("onnx")
onnxruntime = optional_deps.require("onnxruntime")
openvino = optional_deps.require("openvino")
optional_deps.require("onnxscript")

import impls  # noqa: E402  (after the optional imports)
from impls.ops.roi_align_rotated import onnx as rotated_onnx  # noqa: E402
from impls.ops.roi_align_rotated import reference  # noqa: E402

TOLERANCE = {torch.float64: 1e-13, torch.float32: 1e-6, torch.float16: 1e-3}
OPENVINO_TOLERANCE = 2e-5
SPATIAL_SCALE = 0.5
OUTPUT_SIZE = (3, 4)


TRANSLATION_TABLE = impls.onnx_translation_table()

# (batch, cx, cy, w, h, degrees) in image pixels; spatial_scale 0.5 on a 10 x 12 map (a 20 x 24 image). With
# h = 6 (3 map px), PH = 3 and sampling_ratio 2 the samples sit at cy_s + {-1.25, -0.75, ..., 1.25}.
ROIS = torch.tensor([
    [0, 10.0, 8.0, 8.0, 6.0, 30.0],  # inside
    [1, 12.0, 10.0, 20.0, 16.0, -75.0],  # large: partly outside
    [2, 2.0, 2.0, 10.0, 8.0, 45.0],  # across the top-left corner
    [1, 40.0, 30.0, 6.0, 6.0, 10.0],  # wholly outside: 0
    [0, 12.0, 10.0, 0.0, 6.0, 20.0],  # zero width: samples on the centre line
    [2, 11.0, 1.5, 8.0, 6.0, 0.0],  # cy_s = 0.25: samples at y = -1 (clamped onto row 0), -0.5, 0, ..., 1.5
    [0, 11.0, 18.5, 8.0, 6.0, 0.0],  # cy_s = 8.75: samples at y = 7.5 ... 10 = H (clamped onto row 9)
    [1, 7.0, 9.0, 6.0, 6.0, 180.0],
])
OTHER_ROIS = torch.tensor([
    [2, 14.0, 6.0, 12.0, 4.0, 60.0],
    [0, 3.0, 17.0, 9.0, 14.0, -140.0],
    [1, 20.0, 12.0, 5.0, 5.0, 90.0],
    [0, -3.0, 10.0, 8.0, 8.0, 15.0],
    [2, 12.0, 10.0, 23.0, 19.0, 5.0],
    [1, 12.0, 10.0, 4.0, 0.0, 33.0],
    [0, 6.0, 6.0, 2.0, 3.0, -10.0],
    [2, 23.0, 19.0, 7.0, 3.0, 270.0],
])


def feature_map(seed=0):
    return torch.randn(3, 4, 10, 12, generator=torch.Generator().manual_seed(seed))


class RotatedHead(torch.nn.Module):
    def __init__(self, sampling_ratio, clockwise):
        super().__init__()
        self.sampling_ratio, self.clockwise = sampling_ratio, clockwise

    def forward(self, x, rois):
        return impls.roi_align_rotated(x, rois, OUTPUT_SIZE, SPATIAL_SCALE, self.sampling_ratio,
                                       clockwise=self.clockwise, backend="cpp")


def export(model, args, tmp_path) -> str:
    path = str(tmp_path / "model.onnx")
    torch.onnx.export(model, args, dynamo=True, verbose=False, custom_translation_table=TRANSLATION_TABLE).save(path)
    return path


def run_onnxruntime(path, *args):
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)}
    return torch.from_numpy(session.run(None, feeds)[0])


def run_openvino(path, *args):
    core = openvino.Core()
    compiled = core.compile_model(core.read_model(path), "CPU")
    return torch.from_numpy(compiled([a.numpy() for a in args])[0])


CASES = [(2, False, torch.float32), (2, True, torch.float64), (1, False, torch.float64), (3, True, torch.float32),
         (2, False, torch.float16)]
IDS = [f"sr{sr}-{'cw' if cw else 'ccw'}-{str(dtype).removeprefix('torch.')}" for sr, cw, dtype in CASES]


# One export per case, checked every way (the graph, onnxruntime, OpenVINO): exports take seconds each.
@pytest.mark.parametrize("sampling_ratio,clockwise,dtype", CASES, ids=IDS)
def test_exports_standard_ops_that_give_the_reference_in_the_runtimes(sampling_ratio, clockwise, dtype, tmp_path):
    model = RotatedHead(sampling_ratio, clockwise).eval()
    path = export(model, (feature_map().to(dtype), ROIS.to(dtype)), tmp_path)
    graph = onnx.load(path).graph.node
    assert {n.domain for n in graph} == {""}, "only standard-domain ops"
    op_types = {n.op_type for n in graph}
    assert {"Gather", "Cos", "Sin"} <= op_types and "RoiAlign" not in op_types
    for x, rois in ((feature_map(), ROIS), (feature_map(1), OTHER_ROIS)):
        x, rois = x.to(dtype), rois.to(dtype)
        got = run_onnxruntime(path, x, rois)
        assert got.dtype == dtype
        want = reference.forward(x, rois, SPATIAL_SCALE, *OUTPUT_SIZE, sampling_ratio, clockwise)
        cases.assert_close(got, want, TOLERANCE[dtype], f"onnxruntime {dtype}")
        cases.assert_close(run_openvino(path, x, rois), want, max(TOLERANCE[dtype], OPENVINO_TOLERANCE),
                           f"openvino {dtype}")
    # The comparison can fail: the other sense of rotation is not within the tolerance.
    other = reference.forward(feature_map().to(dtype), ROIS.to(dtype), SPATIAL_SCALE, *OUTPUT_SIZE, sampling_ratio,
                              not clockwise)
    with pytest.raises(AssertionError):
        cases.assert_close(run_onnxruntime(path, feature_map().to(dtype), ROIS.to(dtype)), other, TOLERANCE[dtype],
                           "the other sense")


def test_the_border_rows_and_an_outside_box_are_exported_as_the_reference_computes_them(tmp_path):
    # The 10 x 12 map 12*row + col + 1 (no zero pixel), float64, sampling_ratio 2, the samples of ROIS[5] and
    # ROIS[6] on y = -1 and y = H exactly: clamped onto the edge rows, not 0; ROIS[3] reads 0 everywhere.
    x = (torch.arange(3 * 4 * 10 * 12, dtype=torch.float64) % 120 + 1).view(3, 4, 10, 12)
    rois = ROIS.double()
    path = export(RotatedHead(2, False).eval(), (x, rois), tmp_path)
    got = run_onnxruntime(path, x, rois)
    cases.assert_close(got, reference.forward(x, rois, SPATIAL_SCALE, *OUTPUT_SIZE, 2, False), 1e-13, "border")
    assert (got[3] == 0).all() and (got[[5, 6]] > 0).all()


def test_the_adaptive_grid_does_not_export_and_the_error_says_why():
    # ceil(side / pooled) samples per bin, per box: a grid shape read from the box values.
    with pytest.raises(Exception, match=r"sampling_ratio=0 .*does not export to ONNX.*Pass a fixed sampling_ratio > 0"):
        torch.onnx.export(RotatedHead(0, False).eval(), (feature_map(), ROIS), dynamo=True, verbose=False,
                          custom_translation_table=TRANSLATION_TABLE)
    with pytest.raises(ValueError, match="sampling_ratio=-1"):
        rotated_onnx.check_exportable(-1)
