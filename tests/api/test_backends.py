"""The backend registry: what is listed, what ``auto`` picks, and that nothing falls back silently."""

import dataclasses

import pytest
import torch

import impls
from impls.core import registry as _registry

# What `make test` installs on this project's machines; a backend missing here is a broken install, so the test
# fails rather than skipping the backend's share of the matrix.
EXPECTED_HERE = ("reference", "vectorized", "compiled", "cpp", "torchvision", "tensorflow", "triton", "onnxruntime",
                 "openvino", "grid_sample", "kornia")


def test_backends_lists_every_backend_with_its_support():
    rows = {row["name"]: row for row in impls.backends()}
    assert set(rows) == {"reference", "vectorized", "compiled", "cpp", "cuda", "torchvision", "tensorflow", "triton",
                         "onnxruntime", "openvino", "grid_sample", "kornia"}
    assert rows["torchvision"]["ops"] == ("roi_align",) and rows["torchvision"]["boxes_grad"] == ()
    # The inference runtimes: forward only; OpenVINO has a rotated op of its own (ROIAlignRotated-15).
    assert rows["onnxruntime"]["ops"] == ("roi_align",)
    assert rows["openvino"]["ops"] == ("roi_align", "roi_align_rotated")
    for name in ("onnxruntime", "openvino"):
        assert rows[name]["input_grad"] == rows[name]["boxes_grad"] == ()
    # Pure PyTorch, autograd's gradients; another border (CONVENTIONS.md §8.3, §8.6).
    assert rows["kornia"]["ops"] == rows["kornia"]["input_grad"] == rows["kornia"]["boxes_grad"] == ("crop_and_resize",)
    both = ("crop_and_resize", "roi_align_rotated")
    assert rows["grid_sample"]["ops"] == rows["grid_sample"]["input_grad"] == rows["grid_sample"]["boxes_grad"] == both
    assert rows["grid_sample"]["differs"] == both and rows["kornia"]["differs"] == ("crop_and_resize",)
    assert {name for name, row in rows.items() if row["differs"]} == {"grid_sample", "kornia"}
    assert rows["tensorflow"]["ops"] == ("crop_and_resize",) and rows["tensorflow"]["dtypes"] == ("float32",)
    single_map = {"crop_and_resize", "roi_align", "roi_align_rotated"}
    assert set(rows["reference"]["ops"]) == set(rows["reference"]["boxes_grad"]) == single_map
    # Every other backend of ours has a multi-level kernel (cpp, cuda and triton: one call for every level);
    # reference pools multi-level roi_align level by level with its roi_align.
    for name in ("vectorized", "compiled", "cpp", "cuda", "triton"):
        assert set(rows[name]["ops"]) == set(rows[name]["boxes_grad"]) == single_map | {"multiscale_roi_align"}, name
    # The capabilities the tests and benchmarks read from the records.
    assert rows["cpp"]["bit_exact_dtypes"] == ("float64",)
    assert rows["cuda"]["image_grad_modes"] == rows["triton"]["image_grad_modes"] == ("atomic", "deterministic")
    for row in rows.values():
        assert row["available"] == (row["reason"] is None), row


@pytest.mark.parametrize("name", EXPECTED_HERE)
def test_expected_backends_are_available(name):
    row = {r["name"]: r for r in impls.backends()}[name]
    assert row["available"], f"{name}: {row['reason']}"


def test_cuda_available_exactly_when_a_gpu_is():
    row = {r["name"]: r for r in impls.backends()}["cuda"]
    assert row["available"] == torch.cuda.is_available(), row["reason"]


def _with_reason(monkeypatch, name, reason):
    """Make backend ``name`` report ``reason`` (None: available) for this test."""
    record = dataclasses.replace(_registry.registered()[name], unavailable_reason=lambda: reason)
    monkeypatch.setitem(_registry._BACKENDS, name, record)


def test_auto_policy_on_this_machine():
    assert impls.resolve_backend("auto", "roi_align", "cpu") == "cpp"
    assert impls.resolve_backend("auto", "crop_and_resize", "cpu") == "cpp"
    assert impls.resolve_backend("vectorized", "roi_align", "cpu") == "vectorized"


@pytest.mark.parametrize("device,extension", [("cpu", "cpp"), ("cuda", "cuda")])
def test_auto_is_one_rule_on_every_device(monkeypatch, device, extension):
    # The device's extension backend when it can run, else vectorized: the same for a missing cpp and cuda build.
    _with_reason(monkeypatch, extension, None)
    assert impls.resolve_backend("auto", "roi_align", device) == extension
    _with_reason(monkeypatch, extension, "not built (test)")
    assert impls.resolve_backend("auto", "roi_align", device) == "vectorized"
    assert impls.resolve_backend("auto", "crop_and_resize", device) == "vectorized"


def test_auto_never_picks_a_peer():
    assert not set(_registry.AUTO_ORDER) & {name for name, b in _registry.registered().items() if b.peer}


def test_a_named_unavailable_backend_raises(monkeypatch):
    _with_reason(monkeypatch, "cpp", "not built (test)")
    with pytest.raises(impls.BackendUnavailableError, match=r"'cpp' is unavailable: not built \(test\)"):
        impls.roi_align(torch.zeros(1, 1, 4, 4), torch.tensor([[0.0, 0, 0, 2, 2]]), 2, backend="cpp")


def test_availability_is_taken_as_a_constant_under_torch_compile(monkeypatch):
    # A backend's availability check may call what Dynamo refuses to trace (torch 2.11 stops at the peers'
    # importlib.util.find_spec): a compiled call asks it once, while tracing, instead of tracing into it.
    def untraceable_reason():
        torch._dynamo.graph_break()
        return None

    backend = dataclasses.replace(_registry.registered()["vectorized"], name="untraceable",
                                  unavailable_reason=untraceable_reason)
    monkeypatch.setitem(_registry._BACKENDS, "untraceable", backend)
    x, rois = torch.randn(1, 2, 6, 6), torch.tensor([[0.0, 0.5, 1, 4, 5]])
    torch._dynamo.reset()
    compiled = torch.compile(lambda x, r: impls.roi_align(x, r, 2, backend="untraceable"), fullgraph=True)
    torch.testing.assert_close(compiled(x, rois), impls.roi_align(x, rois, 2, backend="vectorized"))


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown backend 'fast'.*reference \\(available\\).*cuda"):
        impls.roi_align(torch.zeros(1, 1, 4, 4), torch.tensor([[0.0, 0, 0, 2, 2]]), 2, backend="fast")


@pytest.mark.parametrize("op", ["roi_align", "crop_and_resize"])
def test_unknown_backend_is_the_first_error(op):
    # Arguments that are all wrong: the misspelled backend is still what the call reports.
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        if op == "roi_align":
            impls.roi_align("not a tensor", None, -1, backend="fast")
        else:
            impls.crop_and_resize("not a tensor", None, None, 0, backend="fast")


@pytest.mark.needs_peers("torchvision", "tensorflow")
def test_backend_limits_raise_instead_of_falling_back():
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="'torchvision' does not implement crop_and_resize"):
        impls.crop_and_resize(x, torch.zeros(1, 4, dtype=torch.float64), torch.tensor([0]), 2, backend="torchvision")
    with pytest.raises(TypeError, match="'tensorflow' supports dtypes torch.float32, not torch.float64"):
        impls.crop_and_resize(x, torch.zeros(1, 4, dtype=torch.float64), torch.tensor([0]), 2, backend="tensorflow")
    with pytest.raises(TypeError, match="'torchvision' supports dtypes .* not torch.bfloat16"):
        impls.roi_align(x.bfloat16(), torch.zeros(1, 5, dtype=torch.bfloat16), 2, backend="torchvision")
    boxes = torch.tensor([[0.0, 0, 0, 2, 2]], dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="'torchvision' gives no gradient to the boxes"):
        impls.roi_align(x, boxes, 2, backend="torchvision")


def test_backend_is_keyword_only():
    # TensorFlow's seventh positional argument is `name`: a ported call must not pass it as our backend.
    image, boxes, box_index = torch.zeros(1, 1, 4, 4), torch.zeros(1, 4), torch.tensor([0])
    with pytest.raises(TypeError, match="positional"):
        impls.crop_and_resize(image, boxes, box_index, 2, "bilinear", 0.0, "crop")
    with pytest.raises(TypeError, match="positional"):
        impls.roi_align(image, torch.tensor([[0.0, 0, 0, 2, 2]]), 2, 1.0, -1, False, "cpp")


@pytest.mark.parametrize("boxes_grad", (False, True))
@pytest.mark.parametrize("op", ("crop_and_resize", "roi_align"))
def test_feature_map_is_saved_only_for_a_box_gradient(op, boxes_grad):
    # The input gradient needs the map's sizes, not its values: the map is kept alive for the backward only
    # when the boxes need a gradient (a detector's boxes usually do not).
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    if op == "roi_align":
        boxes = torch.tensor([[0.0, 1, 1, 4, 4]], requires_grad=boxes_grad)
        out = impls.roi_align(x, boxes, 2, backend="cpp")
    else:
        boxes = torch.tensor([[0.1, 0.1, 0.8, 0.8]], requires_grad=boxes_grad)
        out = impls.crop_and_resize(x, boxes, torch.tensor([0]), 2, backend="cpp")
    saved = out.grad_fn.saved_tensors
    assert any(t is not None and t.shape == x.shape for t in saved) == boxes_grad
    out.sum().backward()
    assert x.grad is not None and (boxes.grad is not None) == boxes_grad
