"""The deployment runtimes' RoiAlign against torchvision's (an independent oracle) and against ours, called directly:
onnxruntime's RoiAlign-16 and OpenVINO's ROIAlign-9, each mode against the ``aligned`` it stands for
(CONVENTIONS.md §8.1, §8.2), and the modes that are not ours shown to differ. Forward only: neither runtime gives a
gradient, and asking for one through ``impls`` raises, naming the backend.
"""

import cases
import optional_deps
import pytest
import torch

import impls

torchvision = optional_deps.require("torchvision")
onnxruntime = optional_deps.require("onnxruntime")
openvino = optional_deps.require("openvino")

from impls.backends.peers import onnxruntime as ort_peer  # noqa: E402  (after the optional imports)
from impls.backends.peers import openvino as ov_peer  # noqa: E402

# float64 (onnxruntime): its kernel evaluates torchvision's formulas in another order; a few ulps per sample over
# up to 1e3 samples in a bin. float32: both compute sample positions in float32, ~1e-6 px on a 12-px map times
# value slopes of ~3, summed over a bin: a few 1e-6; 1e-5 leaves room and still fails by O(1) on a wrong mode.
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}
SETTINGS = [pytest.param(aligned, sr, id=f"{'aligned' if aligned else 'unaligned'}-sr{sr}")
            for aligned in (True, False) for sr in (2, 0)]


def _inputs(dtype):
    x = cases.feature_map(seed=3).to(dtype)  # [2, 3, 9, 11]
    rois = cases.roi_boxes(k=8, seed=4, scale=0.5).to(dtype)  # [8, 5], some across the border, one sub-pixel
    return x, rois


def _torchvision(x, rois, aligned, sampling_ratio):
    return torchvision.ops.roi_align(x.double(), rois.double(), (3, 4), 0.5, sampling_ratio, aligned)


@pytest.mark.needs_peers("onnxruntime")
@pytest.mark.parametrize("aligned,sampling_ratio", SETTINGS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_onnxruntime_half_pixel_is_aligned(dtype, aligned, sampling_ratio):
    # half_pixel for aligned=True, output_half_pixel for False, ONNX's adaptive 0 for ours <= 0.
    x, rois = _inputs(dtype)
    session = ort_peer.session(dtype, 0.5, 3, 4, sampling_ratio, aligned)
    got = torch.from_numpy(session.run(None, ort_peer.feeds(x, rois))[0])
    cases.assert_close(got, _torchvision(x, rois, aligned, sampling_ratio), TOLERANCE[dtype], "onnxruntime")


@pytest.mark.needs_peers("openvino")
@pytest.mark.parametrize("aligned,sampling_ratio", SETTINGS)
def test_openvino_half_pixel_for_nn_is_aligned(aligned, sampling_ratio):
    x, rois = _inputs(torch.float32)
    got = _openvino(x, rois, sampling_ratio, ov_peer.ALIGNED_MODE[aligned])
    cases.assert_close(got, _torchvision(x, rois, aligned, sampling_ratio), TOLERANCE[torch.float32], "openvino")


def _openvino(x, rois, sampling_ratio, aligned_mode):
    request = ov_peer.compiled_model(0.5, 3, 4, sampling_ratio, aligned_mode).create_infer_request()
    return torch.from_numpy(request.infer(ort_peer.feeds(x, rois))[0])


@pytest.mark.needs_peers("openvino")
@pytest.mark.parametrize("aligned", [True, False], ids=["aligned", "unaligned"])
def test_openvino_half_pixel_is_neither_aligned_nor_unaligned(aligned):
    # OpenVINO's "half_pixel" mode (the name ONNX gives aligned=True) computes other samples than either of ours:
    # off by O(1) on a standard-normal map (1.4 and 0.9 seen), far beyond float32's rounding.
    x, rois = _inputs(torch.float32)
    got = _openvino(x, rois, 2, "half_pixel")
    difference = (got.double() - _torchvision(x, rois, aligned, 2)).abs().max().item()
    assert difference > 0.1, difference


@pytest.mark.needs_peers("onnxruntime", "openvino")
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_runtime_backends_equal_ours_and_truncate_a_fractional_batch_index(backend):
    # Through impls (forward, no grad): the same values as cpp; a batch column of 0.5 reads image 0 (as C++
    # converts a float; tests/backends/test_raw_kernels.py, FRACTIONAL_BATCH).
    x, rois = _inputs(torch.float32)
    kernels = impls.core.registry.registered()[backend].kernels["roi_align"]
    ours = impls.roi_align(x, rois, (3, 4), 0.5, 2, True, backend="cpp")
    cases.assert_close(impls.roi_align(x, rois, (3, 4), 0.5, 2, True, backend=backend), ours, 1e-5, backend)
    half = rois.clone()
    half[:, 0] = 0.5
    whole = rois.clone()
    whole[:, 0] = 0.0
    cases.assert_close(kernels.forward(x, half, 0.5, 3, 4, 2, True), kernels.forward(x, whole, 0.5, 3, 4, 2, True),
                       0.0, "batch 0.5 is not image 0")


@pytest.mark.needs_peers("onnxruntime", "openvino")
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_asking_a_runtime_for_a_gradient_raises(backend):
    x, rois = _inputs(torch.float32)
    with pytest.raises(ValueError, match=f"backend '{backend}' computes the forward only"):
        impls.roi_align(x.requires_grad_(), rois, (3, 4), 0.5, 2, True, backend=backend)
    with torch.no_grad():  # the same call without autograd runs
        impls.roi_align(x, rois, (3, 4), 0.5, 2, True, backend=backend)
