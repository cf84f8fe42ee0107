"""roi_align_rotated's public op and module: bad input raises naming the argument before any kernel runs, empty
inputs, autocast, torch.fx leaves, torch.compile (one graph, eager values), opcheck of the extension's operators and
gradcheck of the public op in float64.

Oracles: the op's eager result (compiled and traced graphs must give the same tensors), the float32 computation
(autocast), torch.library.opcheck (schema, fake kernel, dispatch) and finite differences (gradcheck)."""

import pytest
import torch

import impls
from impls.core import registry as _registry

OPS = torch.ops.impls


def _inputs(dtype=torch.float64):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 3, 12, 14, generator=g, dtype=dtype)
    rois = torch.tensor([[0, 6.0, 5.5, 7.3, 4.1, 25.0], [1, 11.2, 2.3, 5.1, 6.7, -140.0],
                         [1, 3.3, 9.1, 2.2, 3.9, 91.0]], dtype=dtype)  # (batch, cx, cy, w, h, degrees)
    return x, rois


def _kernel_reached(*args, **kwargs):
    raise AssertionError("a kernel ran: the public op did not reject the input before the backend")


@pytest.fixture
def unreachable(monkeypatch) -> str:
    """A backend registered for this test whose kernels fail the test when called."""
    kernels = _registry.OpKernels(_kernel_reached, _kernel_reached, _kernel_reached)
    backend = _registry.Backend(name="unreachable", summary="kernels that must not run", devices=("cpu",),
                                dtypes=_registry.FLOAT_DTYPES, kernels={"roi_align_rotated": kernels})
    monkeypatch.setitem(_registry._BACKENDS, backend.name, backend)
    return backend.name


def _bad(x, rois):
    nan, wide = rois.clone(), rois.clone()
    nan[1, 5] = float("nan")
    wide[0, 3] = -1.0
    batch, fraction = rois.clone(), rois.clone()
    batch[2, 0] = 2
    fraction[0, 0] = 0.5
    return [
        ("rois", ValueError, r"rois must be a Tensor\[K, 6\]", dict(rois=rois[:, :5])),
        ("rois", ValueError, r"rois must be a Tensor\[K, 6\]", dict(rois=[rois[:, 1:]])),
        ("rois", TypeError, r"rois has dtype torch.float32 but input has torch.float64", dict(rois=rois.float())),
        ("rois", ValueError, r"rois must be finite", dict(rois=nan)),
        ("rois", ValueError, r"\(width, height\) must be >= 0", dict(rois=wide)),
        ("rois", IndexError, r"batch index\) must be in \[0, 2\)", dict(rois=batch)),
        ("rois", ValueError, r"batch index\) must hold whole numbers", dict(rois=fraction)),
        ("output_size", ValueError, r"output_size must be positive", dict(output_size=(0, 2))),
        ("spatial_scale", ValueError, r"spatial_scale must be a positive number", dict(spatial_scale=0.0)),
        ("sampling_ratio", TypeError, r"sampling_ratio must be an int", dict(sampling_ratio=2.0)),
        ("clockwise", TypeError, r"clockwise must be a bool", dict(clockwise=1)),
        ("input", ValueError, r"input must be 4-D", dict(input=x[0])),
    ]


@pytest.mark.parametrize("index", range(12))
def test_bad_input_raises_before_any_kernel(index, unreachable):
    x, rois = _inputs()
    name, error, message, change = _bad(x, rois)[index]
    args = {"input": x, "rois": rois, "output_size": 3, "spatial_scale": 1.0, "sampling_ratio": 2,
            "clockwise": False, **change}
    with pytest.raises(error, match=message) as raised:
        impls.roi_align_rotated(args.pop("input"), args.pop("rois"), args.pop("output_size"), **args,
                                backend=unreachable)
    assert name in str(raised.value), f"the message does not name {name}: {raised.value}"


def test_unknown_backend_lists_the_known_ones():
    x, rois = _inputs()
    with pytest.raises(ValueError, match="unknown backend 'nope'.*cpp"):
        impls.roi_align_rotated(x, rois, 3, backend="nope")
    with pytest.raises(ValueError, match="does not implement roi_align_rotated; backends that do: .*cpp"):
        impls.roi_align_rotated(x, rois, 3, backend="torchvision")


@pytest.mark.parametrize("backend", ["reference", "vectorized", "compiled", "cpp"])
def test_no_boxes_gives_empty_output_and_zero_gradients(backend):
    x, rois = _inputs()
    x.requires_grad_()
    none = rois[:0].clone().requires_grad_()
    out = impls.roi_align_rotated(x, none, (2, 3), backend=backend)
    assert out.shape == (0, 3, 2, 3)
    d_x, d_rois = torch.autograd.grad(out.sum(), (x, none), allow_unused=False)
    assert d_x.shape == x.shape and not d_x.any() and d_rois.shape == (0, 6)


def test_autocast_computes_in_float32_and_returns_the_maps_dtype():
    # torchvision's rule, as roi_align: float32 inside, the map's dtype out; float32 boxes stay float32.
    x, rois = _inputs(torch.float32)
    half = x.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = impls.roi_align_rotated(half, rois, 3, 0.5, 2, backend="cpp")
    want = impls.roi_align_rotated(half.float(), rois, 3, 0.5, 2, backend="cpp").to(torch.bfloat16)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)


class _Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = impls.RoIAlignRotated((2, 3), 0.5, 2, clockwise=True, backend="cpp")

    def forward(self, x, rois):
        return self.pool(x, rois) + impls.roi_align_rotated(x, rois, (2, 3), 0.5, 0, backend="cpp")


def test_symbolic_trace_records_the_op_and_the_module_as_one_call_each():
    x, rois = _inputs()
    traced = torch.fx.symbolic_trace(_Head())
    calls = [node.target.__name__ for node in traced.graph.nodes if node.op == "call_function"
             and getattr(node.target, "__module__", "").startswith("impls")]
    assert calls == ["roi_align_rotated", "roi_align_rotated"]
    assert torch.equal(traced(x, rois), _Head()(x, rois))
    assert impls.roi_align_rotated is impls.ops.roi_align_rotated.roi_align_rotated  # unpatched after the trace


@pytest.mark.parametrize("backend,sampling_ratio", [("cpp", 0), ("cpp", 2), ("vectorized", 2)])
def test_compiles_as_one_graph_with_the_eager_values(backend, sampling_ratio):
    x, rois = _inputs()
    x.requires_grad_()

    def head(x, rois):
        return impls.roi_align_rotated(x, rois, (2, 3), 0.5, sampling_ratio, backend=backend).square().sum()

    torch._dynamo.reset()
    compiled = torch.compile(head, fullgraph=True, backend="aot_eager")
    got, want = compiled(x, rois), head(x, rois)
    assert torch.equal(got, want)
    assert torch.equal(torch.autograd.grad(got, x)[0], torch.autograd.grad(want, x)[0])


def test_extension_operators_pass_opcheck():
    x, rois = _inputs()
    grad = torch.randn(3, 3, 2, 3, dtype=torch.float64)
    for sampling_ratio, clockwise in ((0, False), (2, True)):
        torch.library.opcheck(OPS.roi_align_rotated_forward.default, (x, rois, 0.5, 2, 3, sampling_ratio, clockwise))
        torch.library.opcheck(OPS.roi_align_rotated_backward_input.default,
                              (grad, rois, 0.5, 2, 3, *x.shape, sampling_ratio, clockwise))
        torch.library.opcheck(OPS.roi_align_rotated_backward_boxes.default,
                              (grad, x, rois, 0.5, 2, 3, sampling_ratio, clockwise))


@pytest.mark.parametrize("backend", ["cpp", "vectorized"])
def test_gradcheck_map_and_boxes(backend):
    # Finite differences of the public op in float64, boxes away from pixel edges (random centres and sizes): the
    # box gradient is the derivative with the sampling grid held fixed, which is the true derivative there.
    # The batch column is an index, not a parameter: only (cx, cy, w, h, angle) are perturbed.
    x, rois = _inputs()
    x.requires_grad_()
    params = rois[:, 1:].clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, params: impls.roi_align_rotated(x, torch.cat([rois[:, :1], params], 1), (2, 2), 0.5, 2,
                                                  backend=backend),
        (x, params), eps=1e-6, atol=1e-6)
