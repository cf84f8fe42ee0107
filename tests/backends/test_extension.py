"""The compiled extension ``impls._C`` as an operator library: what the backend matrix does not show.

Each test states one property of the nine ``torch.ops.impls`` operators or of the ``cpp``/``cuda`` backends:
their registrations pass ``torch.library.opcheck``; ``torch.compile(fullgraph=True)`` and ``torch.export``
trace through the public ops with ``backend="cpp"``; the CPU backward gives the same bits whatever the thread
count; the CUDA kernels are in the dispatcher whenever the build found a toolkit; on a GPU, the deterministic
CUDA backward gives the same bits on every run (in float64 the reference's) and grid-stride loops that wrap give
the same results; and arguments of the wrong shape that bypass the Python checks raise, naming the argument.
"""

import os

import cases
import pytest
import torch

import impls
from impls.backends import extension as _extension
from impls.core import operators
from impls.core.determinism import deterministic_algorithms

OPS = torch.ops.impls
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = (torch.float32, torch.float64)
# opcheck runs every dtype on the GPU (the half types have their own dispatch and accumulate in float there),
# the two full-precision ones on the CPU (CI time).
CUDA_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
OP_NAMES = tuple(f"{op}_{kernel}" for op in ("crop_and_resize", "roi_align", "multiscale_roi_align")
                 for kernel in ("forward", "backward_input", "backward_boxes"))


def _dt(dtype):
    return str(dtype).replace("torch.", "")


def _opcheck_params():
    """(dtype, device) pairs, ids "dtype-device": DTYPES on the CPU, CUDA_DTYPES on a GPU."""
    return [
        pytest.param(dtype, device, id=f"{_dt(dtype)}-{device}")
        for device in DEVICES
        for dtype in (CUDA_DTYPES if device == "cuda" else DTYPES)
    ]


def _crop_inputs(device, dtype, n=2, c=3, h=7, w=9, k=5):
    g = torch.Generator().manual_seed(0)
    image = torch.randn(n, c, h, w, generator=g, dtype=dtype).to(device)
    boxes = (torch.rand(k, 4, generator=g, dtype=dtype) * 1.2 - 0.1).to(device)  # some reach outside [0, 1]
    box_index = torch.randint(0, n, (k,), generator=g).to(device)
    return image, boxes, box_index


def _roi_inputs(device, dtype, n=2, c=3, h=7, w=9, k=5):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype).to(device)
    xy = torch.rand(k, 2, generator=g, dtype=dtype) * torch.tensor([w, h], dtype=dtype)  # [K, 2] (x1, y1)
    size = torch.rand(k, 2, generator=g, dtype=dtype) * 4 + 0.5  # [K, 2] (w, h)
    batch = torch.randint(0, n, (k, 1), generator=g).to(dtype)  # [K, 1]
    rois = torch.cat([batch, xy, xy + size], dim=1).to(device)  # [K, 5]
    return x, rois


def test_every_operator_schema_has_the_extensions_kernels():
    # The schemas are defined once, by the operators' specs (impls/ops/<op>/spec.py); csrc/<op>/ registers kernels
    # for them by name. A kernel file that misspells a name, or an operator without kernels, fails here.
    assert operators.SCHEMAS, "no operator schema defined"
    for name, schema in operators.SCHEMAS.items():
        assert str(getattr(OPS, name).default._schema) == f"impls::{name}{schema}", name
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"impls::{name}", "CPU"), name
        built_with_cuda = torch._C._dispatch_has_kernel_for_dispatch_key("impls::roi_align_forward", "CUDA")
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"impls::{name}", "CUDA") == built_with_cuda, name


# -------------------------------------------------------------------------------------------------- opcheck


@pytest.mark.parametrize("dtype,device", _opcheck_params())
@pytest.mark.parametrize("method", ("bilinear", "nearest"))
def test_opcheck_crop_and_resize_forward(device, dtype, method):
    image, boxes, box_index = _crop_inputs(device, dtype)
    torch.library.opcheck(OPS.crop_and_resize_forward.default, (image, boxes, box_index, 3, 4, method, -1.0))


@pytest.mark.parametrize("dtype,device", _opcheck_params())
@pytest.mark.parametrize("method", ("bilinear", "nearest"))
def test_opcheck_crop_and_resize_backward_input(device, dtype, method):
    image, boxes, box_index = _crop_inputs(device, dtype)
    grad = torch.randn(boxes.shape[0], image.shape[1], 3, 4, dtype=dtype, device=device)
    torch.library.opcheck(
        OPS.crop_and_resize_backward_input.default, (grad, boxes, box_index, 3, 4, *image.shape, method)
    )


@pytest.mark.parametrize("dtype,device", _opcheck_params())
@pytest.mark.parametrize("method", ("bilinear", "nearest"))
def test_opcheck_crop_and_resize_backward_boxes(device, dtype, method):
    image, boxes, box_index = _crop_inputs(device, dtype)
    grad = torch.randn(boxes.shape[0], image.shape[1], 3, 4, dtype=dtype, device=device)
    torch.library.opcheck(
        OPS.crop_and_resize_backward_boxes.default, (grad, image, boxes, box_index, 3, 4, method)
    )


@pytest.mark.parametrize("dtype,device", _opcheck_params())
@pytest.mark.parametrize("aligned,sampling_ratio", ((True, 2), (False, 0)))
def test_opcheck_roi_align_forward(device, dtype, aligned, sampling_ratio):
    x, rois = _roi_inputs(device, dtype)
    torch.library.opcheck(OPS.roi_align_forward.default, (x, rois, 0.5, 3, 2, sampling_ratio, aligned))


@pytest.mark.parametrize("dtype,device", _opcheck_params())
@pytest.mark.parametrize("aligned,sampling_ratio", ((True, 2), (False, 0)))
def test_opcheck_roi_align_backward_input(device, dtype, aligned, sampling_ratio):
    x, rois = _roi_inputs(device, dtype)
    grad = torch.randn(rois.shape[0], x.shape[1], 3, 2, dtype=dtype, device=device)
    torch.library.opcheck(
        OPS.roi_align_backward_input.default, (grad, rois, 0.5, 3, 2, *x.shape, sampling_ratio, aligned)
    )


@pytest.mark.parametrize("dtype,device", _opcheck_params())
@pytest.mark.parametrize("aligned,sampling_ratio", ((True, 2), (False, 0)))
def test_opcheck_roi_align_backward_boxes(device, dtype, aligned, sampling_ratio):
    x, rois = _roi_inputs(device, dtype)
    grad = torch.randn(rois.shape[0], x.shape[1], 3, 2, dtype=dtype, device=device)
    torch.library.opcheck(
        OPS.roi_align_backward_boxes.default, (grad, x, rois, 0.5, 3, 2, sampling_ratio, aligned)
    )


# ------------------------------------------------------------------------------------- compile and export


class _TwoHeads(torch.nn.Module):
    """Both public ops on one feature map, as a detector would call them."""

    def forward(self, x, rois, crop_boxes, box_index):
        pooled = impls.roi_align(x, rois, (3, 2), spatial_scale=0.5, sampling_ratio=2, aligned=True, backend="cpp")
        crops = impls.crop_and_resize(x, crop_boxes, box_index, (4, 3), backend="cpp")
        # Returned as they are: a reduction here would be fused by inductor and reordered, changing the bits.
        return pooled, crops  # [K, C, 3, 2], [K, C, 4, 3]


def _two_heads_inputs(requires_grad):
    x, rois = _roi_inputs("cpu", torch.float32)
    _, crop_boxes, box_index = _crop_inputs("cpu", torch.float32)
    x = x.requires_grad_(requires_grad)
    rois = rois.requires_grad_(requires_grad)
    crop_boxes = crop_boxes.requires_grad_(requires_grad)
    return x, rois, crop_boxes, box_index


def test_compile_fullgraph_equals_eager():
    # Same kernels either way: the compiled graph must give the eager bits, forward and backward.
    torch._dynamo.reset()
    model = _TwoHeads()
    compiled = torch.compile(model, fullgraph=True)
    results = []
    for fn in (model, compiled):
        x, rois, crop_boxes, box_index = _two_heads_inputs(requires_grad=True)
        pooled, crops = fn(x, rois, crop_boxes, box_index)
        grads = [torch.linspace(-1, 1, t.numel()).reshape(t.shape) for t in (pooled, crops)]
        torch.autograd.backward((pooled, crops), grads)
        results.append((pooled.detach(), crops.detach(), x.grad, rois.grad, crop_boxes.grad))
    names = ("roi_align", "crop_and_resize", "input grad", "rois grad", "crop boxes grad")
    for name, eager, comp in zip(names, *results):
        assert torch.equal(eager, comp), f"{name}: compiled differs from eager"


def test_export():
    x, rois, crop_boxes, box_index = _two_heads_inputs(requires_grad=False)
    exported = torch.export.export(_TwoHeads(), (x, rois, crop_boxes, box_index))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert "impls.roi_align_forward.default" in targets and "impls.crop_and_resize_forward.default" in targets
    got = exported.module()(x, rois, crop_boxes, box_index)
    want = _TwoHeads()(x, rois, crop_boxes, box_index)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


# --------------------------------------------------------------------------------- deterministic backward


def _backward_with_threads(threads, op):
    """Image and box gradients of the cpp backend with ``threads`` threads, on 64 heavily overlapping boxes
    (so that many boxes add to the same pixels) and 19 channels (two full channel blocks of 8 plus three
    single channels)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 19, 12, 14, generator=g, requires_grad=True)
    if op == "roi_align":
        xy = torch.rand(64, 2, generator=g) * 4 + 2  # [K, 2] all boxes start near the same corner
        boxes = torch.cat([torch.randint(0, 2, (64, 1), generator=g).float(), xy, xy + 6], dim=1)  # [K, 5]
        boxes.requires_grad_()
        fn = lambda: impls.roi_align(x, boxes, 5, sampling_ratio=0, aligned=True, backend="cpp")  # noqa: E731
    else:
        boxes = (torch.rand(64, 4, generator=g) * 0.3 + torch.tensor([0.2, 0.2, 0.5, 0.5])).requires_grad_()
        box_index = torch.randint(0, 2, (64,), generator=g)
        fn = lambda: impls.crop_and_resize(x, boxes, box_index, (6, 5), backend="cpp")  # noqa: E731
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = fn()
        out.backward(torch.randn(out.shape, generator=g))
    finally:
        torch.set_num_threads(previous)
    return x.grad, boxes.grad


@pytest.mark.parametrize("op", ("roi_align", "crop_and_resize"))
def test_cpp_backward_is_deterministic_across_thread_counts(op):
    one = _backward_with_threads(1, op)
    two = _backward_with_threads(2, op)
    again = _backward_with_threads(2, op)
    for name, a, b, c in zip(("image grad", "boxes grad"), one, two, again):
        assert torch.equal(a, b), f"{name}: 1 thread and 2 threads differ"
        assert torch.equal(b, c), f"{name}: two runs with 2 threads differ"


# ---------------------------------------------------------------------------------- CUDA backward, on a GPU

# (op, method) of the deterministic-backward tests.
_DETERMINISTIC_OPS = [
    pytest.param("roi_align", None, id="roi_align"),
    pytest.param("crop_and_resize", "bilinear", id="crop_and_resize-bilinear"),
    pytest.param("crop_and_resize", "nearest", id="crop_and_resize-nearest"),
]


def _overlapping_case(op, dtype):
    """CPU tensors (x, boxes, box_index or None, grad) in ``dtype``: 2 images of 5 channels, 12x14, and 24 boxes
    that overlap heavily (many add to the same pixels, so atomics would race), some reaching over the border
    (clamped or extrapolated samples). roi_align: adaptive grid, 1 to 3 samples per side, so the deterministic
    path's per-box sample counts differ."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 5, 12, 14, generator=g, dtype=torch.float64)  # [2, 5, 12, 14]
    if op == "roi_align":
        xy = torch.rand(24, 2, generator=g, dtype=torch.float64) * 6 - 1.5  # [K, 2] (x1, y1), some < 0
        wh = torch.rand(24, 2, generator=g, dtype=torch.float64) * 6 + 3  # [K, 2] 3 to 9 px
        batch = torch.randint(0, 2, (24, 1), generator=g).to(torch.float64)  # [K, 1]
        boxes, box_index = torch.cat([batch, xy, xy + wh], dim=1), None  # [K, 5]
        out_shape = (24, 5, 4, 3)
    else:
        corner = torch.tensor([-0.15, -0.15, 0.3, 0.3], dtype=torch.float64)
        boxes = torch.rand(24, 4, generator=g, dtype=torch.float64) * 0.9 + corner  # [K, 4], some outside [0, 1]
        box_index = torch.randint(0, 2, (24,), generator=g)  # [K]
        out_shape = (24, 5, 5, 4)
    grad = torch.randn(out_shape, generator=g, dtype=torch.float64)
    return x.to(dtype), boxes.to(dtype), box_index, grad.to(dtype)


def _overlapping_grads(op, method, backend, device, dtype, deterministic):
    """(image gradient, box gradient) of ``backend`` on ``device`` for _overlapping_case, the backward run with
    torch.use_deterministic_algorithms(True) when ``deterministic``."""
    x, boxes, box_index, grad = _overlapping_case(op, dtype)
    x = x.to(device).requires_grad_()
    boxes = boxes.to(device).requires_grad_()
    if op == "roi_align":
        out = impls.roi_align(x, boxes, (4, 3), sampling_ratio=0, aligned=False, backend=backend)
    else:
        out = impls.crop_and_resize(x, boxes, box_index.to(device), (5, 4), method=method, extrapolation_value=0.5,
                                    backend=backend)
    if deterministic:
        with deterministic_algorithms():
            out.backward(grad.to(device))
    else:
        out.backward(grad.to(device))
    return x.grad, boxes.grad


if "cuda" in DEVICES:  # defined only on a GPU machine: a CPU machine collects none of these (no skips)

    @pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=_dt)
    @pytest.mark.parametrize("op,method", _DETERMINISTIC_OPS)
    def test_cuda_deterministic_backward_is_reproducible(op, method, dtype):
        first = _overlapping_grads(op, method, "cuda", "cuda", dtype, deterministic=True)
        second = _overlapping_grads(op, method, "cuda", "cuda", dtype, deterministic=True)
        assert first[0].device.type == "cuda" and first[0].dtype == dtype
        assert torch.equal(first[0], second[0]), "image gradient: two deterministic runs differ"
        # The box gradient is deterministic in either mode (one block per box, a fixed tree reduction).
        assert torch.equal(first[1], second[1]), "boxes gradient: two runs differ"

    @pytest.mark.parametrize("op,method", _DETERMINISTIC_OPS)
    def test_cuda_deterministic_backward_matches_reference(op, method):
        # The deterministic image gradient sums each pixel's taps in the reference's order (box, cell, sample,
        # corner; csrc/common/cuda_common.cuh), each tap by the reference's expression, in double with no fused
        # multiply-add (nvcc --fmad=false): the same bits. The box gradient's tree reduction sums in another
        # order: float64 tolerance.
        got = _overlapping_grads(op, method, "cuda", "cuda", torch.float64, deterministic=True)
        want = _overlapping_grads(op, method, cases.ORACLE, "cpu", torch.float64, deterministic=False)
        assert want[0].abs().max() > 0, "the case must give an image gradient"
        image_grad = got[0].cpu()
        assert torch.equal(image_grad, want[0]), (
            f"image gradient differs from the reference: max error {(image_grad - want[0]).abs().max().item():.3g}"
        )
        cases.assert_close(got[1], want[1], cases.TOLERANCE[torch.float64], "boxes gradient")

    def test_cuda_grid_stride_loops_wrap():
        # The kernels launch at most multiProcessorCount * 32 blocks of 256 threads (csrc/common/cuda_common.cuh,
        # blocks_for); past that many items each thread loops. 512 boxes x 64 channels x 14x14 = 6.4M outputs
        # (and incoming gradient elements) and a 2 x 64 x 100 x 152 = 1.9M-element map (the deterministic
        # gather's items) exceed the 1.08M threads of a 132-SM H100. Checked against vectorized on the same GPU
        # (positions in float64 too), forward and both gradients, with the atomic and the deterministic backward.
        g = torch.Generator().manual_seed(21)
        x = torch.randn(2, 64, 100, 152, generator=g)  # [2, 64, 100, 152]: stride 4 of 400 x 608 images
        k = 512
        xy = torch.rand(k, 2, generator=g) * torch.tensor([600.0, 390.0]) - 20  # [K, 2] px, some over the border
        wh = torch.rand(k, 2, generator=g) * 150 + 8  # [K, 2]
        batch = torch.randint(0, 2, (k, 1), generator=g).float()  # [K, 1]
        rois = torch.cat([batch, xy, xy + wh], dim=1)  # [K, 5]
        grad = torch.randn(k, 64, 14, 14, generator=g)  # [K, C, 14, 14]
        threads = torch.cuda.get_device_properties("cuda").multi_processor_count * 32 * 256
        assert grad.numel() > threads and x.numel() > threads, "the case must make every grid-stride loop wrap"
        x, rois, grad = x.to("cuda"), rois.to("cuda"), grad.to("cuda")

        def run(backend, deterministic):
            xg = x.detach().requires_grad_()
            rg = rois.detach().requires_grad_()
            out = impls.roi_align(xg, rg, 14, spatial_scale=0.25, sampling_ratio=2, aligned=True, backend=backend)
            if deterministic:
                with deterministic_algorithms():
                    out.backward(grad)
            else:
                out.backward(grad)
            return out.detach(), xg.grad, rg.grad

        want = run("vectorized", deterministic=False)
        tol = cases.TOLERANCE[torch.float32]
        for deterministic in (False, True):
            got = run("cuda", deterministic)
            mode = "deterministic" if deterministic else "atomic"
            for name, a, b in zip(("forward", "input gradient", "boxes gradient"), got, want):
                cases.assert_close(a, b, tol, f"{mode} {name}")


# -------------------------------------------------------------------------------------------- CUDA build


def _toolkit_found_at_build():
    """setup.py's rule: a toolkit is used when CUDA_HOME (default /usr/local/cuda) holds bin/nvcc."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    return os.path.exists(os.path.join(home, "bin", "nvcc"))


@pytest.mark.parametrize("op", OP_NAMES)
def test_cuda_kernels_registered_when_toolkit_present(op):
    has_cuda_kernel = torch._C._dispatch_has_kernel_for_dispatch_key(f"impls::{op}", "CUDA")
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"impls::{op}", "CPU")
    if _toolkit_found_at_build():
        assert has_cuda_kernel, f"a CUDA toolkit is installed but impls._C has no CUDA kernel for {op}: rebuild"
    else:
        # Without a toolkit the build is CPU-only, and the cuda backend must say why it cannot run.
        assert not has_cuda_kernel
        assert "without CUDA kernels" in _extension._cuda_reason()


def test_cuda_backend_without_gpu_says_so(monkeypatch):
    # Simulated on a GPU machine too, so this runs everywhere.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    x, rois = _roi_inputs("cpu", torch.float32)
    with pytest.raises(impls.BackendUnavailableError) as info:
        impls.roi_align(x, rois, 2, backend="cuda")
    if torch._C._dispatch_has_kernel_for_dispatch_key("impls::roi_align_forward", "CUDA"):
        assert "no CUDA GPU" in str(info.value)
    else:
        assert "without CUDA kernels" in str(info.value)


# ------------------------------------------------------------------------------------------- defence in depth
# The operators are called directly, bypassing impls/ops/<op>/arguments.py: the kernels' own checks must raise (a bad
# image index: tests/backends/test_raw_kernels.py, with every backend's kernels).


def test_kernels_reject_wrong_shapes_naming_the_argument():
    image, boxes, box_index = _crop_inputs("cpu", torch.float32)
    with pytest.raises(RuntimeError, match="boxes must be"):
        OPS.crop_and_resize_forward(image, boxes[:, :3], box_index, 3, 3, "bilinear", 0.0)
    with pytest.raises(RuntimeError, match="method must be"):
        OPS.crop_and_resize_forward(image, boxes, box_index, 3, 3, "bicubic", 0.0)
    x, rois = _roi_inputs("cpu", torch.float32)
    with pytest.raises(RuntimeError, match="grad must be"):
        OPS.roi_align_backward_boxes(torch.ones(1, 1, 2, 2), x, rois, 1.0, 2, 2, 2, True)
    with pytest.raises(RuntimeError, match="grad must be"):
        OPS.roi_align_backward_input(torch.ones(1, 1, 2, 2), rois, 1.0, 2, 2, *x.shape, 2, True)
    with pytest.raises(RuntimeError, match="input sizes"):
        OPS.roi_align_backward_input(torch.ones(rois.shape[0], 3, 2, 2), rois, 1.0, 2, 2, 2, 3, -1, 9, 2, True)


# The CPU kernels pick a path by the call's shape: an NCHW crop_and_resize whose boxes tap the maps more often than
# they have pixels, with at least one full block of 8 channels, crops from interleaved 8-channel copies of the
# planes and accumulates its image gradient in a channels-last band ("dense"; float32 through 8x8 and 16x16
# tile transposes); fewer taps with C >= 8 crop from interleaved copies of
# each box's window ("windows"); C < 8 reads the planes in place ("sparse"). roi_align interleaves its copied channel
# blocks alike. The shared matrix runs C = 3 and tiny calls, which take only the sparse path: these run every path,
# the blocked ones on 19 channels (two full blocks and three single channels, the tail of every blocked loop).
# "dense_lines": every crop plane and every gradient band row of 16 columns is whole 64-byte lines, so the planes
# stream out in whole lines, where 4x5 crops of a 9-column map share lines between planes. "dense_32": 32 channels,
# so a channels_last gradient's pixel runs are whole lines too, and its band streams out (store_channels_last).
PATHS = {  # path: (channels, boxes, crop size, map width)
    "dense": (19, 12, (4, 5), 9),   # 12 x 4x5 crops x 4 taps = 960 taps >= 2 x 7x9 = 126 pixels
    "dense_lines": (19, 12, (4, 4), 16),  # 12 x 4x4 x 4 = 768 >= 2 x 7x16 = 224
    "dense_32": (32, 12, (4, 4), 16),
    "windows": (19, 3, (2, 2), 9),  # 3 x 2x2 x 4 = 48 < 126
    "sparse": (3, 3, (2, 2), 9),
}


def _blocked_case(path: str):
    c, k, crop, w = PATHS[path]
    g = torch.Generator().manual_seed(len(path))
    n, h = 2, 7
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    boxes = torch.rand(k, 4, generator=g, dtype=torch.float64) * 1.2 - 0.1  # some samples out of range, some flipped
    box_index = torch.randint(0, n, (k,), generator=g)
    grad = torch.randn(k, c, *crop, generator=g, dtype=torch.float64)
    return x, boxes, box_index, crop, grad


def _crop_pass(x, boxes, box_index, crop, grad, method, backend, layout=torch.contiguous_format):
    x = x.contiguous(memory_format=layout).requires_grad_()
    boxes = boxes.clone().requires_grad_(method == "bilinear")
    out = impls.crop_and_resize(x, boxes, box_index, crop, method=method, backend=backend)
    wrt = (x, boxes) if method == "bilinear" else (x,)
    return (out, *torch.autograd.grad(out, wrt, grad.contiguous(memory_format=layout)))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("method", ["bilinear", "nearest"])
def test_cpp_crop_and_resize_nchw_paths_equal_reference(path, method):
    x, boxes, box_index, crop, grad = _blocked_case(path)
    want = _crop_pass(x, boxes, box_index, crop, grad, method, "reference")
    got = _crop_pass(x, boxes, box_index, crop, grad, method, "cpp")
    for name, a, b in zip(("output", "image gradient", "box gradient"), got, want):
        assert torch.equal(a, b), f"{name} differs from reference (float64 must be bit-exact, CONVENTIONS.md §6)"
    # float32: the NCHW paths (blocked or in place) and the channels_last kernel compute each value with the same
    # expressions in the same order, so they agree bit for bit.
    as32 = [t.float() for t in (x, boxes)]
    nchw = _crop_pass(as32[0], as32[1], box_index, crop, grad.float(), method, "cpp")
    nhwc = _crop_pass(as32[0], as32[1], box_index, crop, grad.float(), method, "cpp", torch.channels_last)
    for name, a, b in zip(("output", "image gradient", "box gradient"), nchw, nhwc):
        assert torch.equal(a, b), f"float32 {name}: NCHW and channels_last differ"


# NaNs with a payload as 16-bit patterns, positive and negative: (bfloat16, float16).
NAN_BITS = {torch.bfloat16: (0x7FC1, 0xFFC1), torch.float16: (0x7E01, 0xFE01)}


@pytest.mark.parametrize("dtype", NAN_BITS, ids=str)
@pytest.mark.parametrize("path", PATHS)
def test_cpp_crop_and_resize_nchw_paths_half_types_equal_channels_last(path, dtype):
    # bfloat16 and float16: every kernel widens each value to float exactly and rounds each result once; the NCHW paths
    # round in vector registers where they transpose (cpu_common.h's store8_float), the channels_last kernel with
    # c10's scalar cast, so the two agree bit for bit if the vector rounding is c10's: to nearest even, and NaN as c10
    # makes it (bfloat16: 0x7FC0; float16 under F16C: vcvtps2ph's). The NaN pixels' crops keep their payload and
    # sign through the float arithmetic until then. Compared as bits: NaN != NaN.
    x, boxes, box_index, crop, grad = _blocked_case(path)
    x = x.to(dtype)
    bits = x.view(torch.int16)
    positive, negative = NAN_BITS[dtype]
    bits[0, :, 3] = positive  # a whole row of image 0, a column of image 1
    bits[1, :, :, 4] = negative - 0x10000
    boxes = boxes.to(dtype)
    nchw = _crop_pass(x, boxes, box_index, crop, grad.to(dtype), "bilinear", "cpp")
    nhwc = _crop_pass(x, boxes, box_index, crop, grad.to(dtype), "bilinear", "cpp", torch.channels_last)
    assert nchw[0].isnan().any(), "the case must crop a NaN pixel"
    for name, a, b in zip(("output", "image gradient", "box gradient"), nchw, nhwc):
        assert torch.equal(a.contiguous().view(torch.int16), b.contiguous().view(torch.int16)), (
            f"{dtype} {name}: NCHW and channels_last differ")


@pytest.mark.parametrize("path", PATHS)
def test_cpp_crop_and_resize_nchw_image_gradient_reads_an_expanded_gradient(path):
    # Autograd hands expanded gradients (out.sum()'s is all 0 strides; here only the channel stride is 0, each row
    # still a contiguous run): the NCHW image gradient reads them through their strides (the dense path transposes
    # each crop row, whole 8x8 tiles only where the rows are contiguous runs of distinct channels).
    x, boxes, box_index, crop, grad = _blocked_case(path)
    for expanded in (grad[:, :1].expand(grad.shape), torch.ones(1, 1, 1, 1, dtype=x.dtype).expand(grad.shape)):
        got, want = (OPS.crop_and_resize_backward_input(g, boxes, box_index, *crop, *x.shape, "bilinear")
                     for g in (expanded, expanded.contiguous()))
        assert torch.equal(got, want), "an expanded gradient gives another image gradient than its contiguous copy"
        reference = _crop_pass(x, boxes, box_index, crop, expanded.contiguous(), "bilinear", "reference")[1]
        assert torch.equal(want, reference), "differs from reference (float64 must be bit-exact)"


@pytest.mark.parametrize("threads", [1, 2])
def test_cpp_crop_and_resize_nchw_gradient_bands_equal_channels_last(threads):
    # The dense NCHW image gradient accumulates bands of rows channels last (1 MiB: 25 rows of a 40-wide float32 map of
    # 256 channels, so this 54-row map has bands of 25, 25 and 4 rows) and writes each band's planes; with AVX-512,
    # where a band's planes start on cache lines (bands 0 and 2), 16 pixels x 16 channels at a time from registers,
    # else (band 1: row 25 starts half a line in) through cache. Band 0 ends half a line into its last 16 pixels
    # (1000 = 62.5 x 16), stored masked; band 2 reuses the accumulator of the bands before it in the same task (one
    # task per image on 2 threads, one for both on 1) and no box reads it (all boxes end above row 47): its gradient
    # must come out 0, whatever the accumulator still holds. float32: the channels_last kernel is the oracle, the same
    # sums in the same order, bit for bit.
    g = torch.Generator().manual_seed(29)
    n, c, h, w, k = 2, 256, 54, 40, 40  # 40 boxes x 8x8 crops x 4 taps >= 2 x 54 x 40 pixels: the dense path
    ys = torch.rand(k, 2, generator=g) * 0.85  # rows up to 0.85 x 53 = 45, some boxes flipped
    xs = torch.rand(k, 2, generator=g) * 1.2 - 0.1  # some columns outside the map, some boxes flipped
    boxes = torch.stack([ys[:, 0], xs[:, 0], ys[:, 1], xs[:, 1]], dim=1)
    box_index = torch.randint(0, n, (k,), generator=g)
    grad = torch.randn(k, c, 8, 8, generator=g)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        nchw = OPS.crop_and_resize_backward_input(grad, boxes, box_index, 8, 8, n, c, h, w, "bilinear")
        nhwc = OPS.crop_and_resize_backward_input(grad.contiguous(memory_format=torch.channels_last), boxes,
                                                  box_index, 8, 8, n, c, h, w, "bilinear")
    finally:
        torch.set_num_threads(previous)
    assert nchw.is_contiguous() and nhwc.is_contiguous(memory_format=torch.channels_last)
    assert (nhwc[:, :, 47:] == 0).all() and (nhwc[:, :, :47] != 0).any(), "the case must leave band 2 unread"
    assert torch.equal(nchw, nhwc), "float32 image gradient: NCHW and channels_last differ"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("clustered", [False, True], ids=["spread", "clustered"])
def test_cpp_roi_align_interleaved_blocks_equal_channels_last(dtype, clustered):
    # The NCHW forward copies a block of planes interleaved when the boxes tap more than the maps have pixels (here 40
    # boxes x 3x3 bins x 4 samples x 4 taps >> 2 x 126 pixels): the whole planes where the boxes read half of them or
    # more (spread), only the pixels they read (ReadRuns) where they read less (clustered: every box within the
    # top-left 5x5 of a 12x20 map). 19 channels: one block of 16 and three single channels.
    g = torch.Generator().manual_seed(13)
    H, W, span, side = (12, 20, 2.0, 1.5) if clustered else (7, 9, 6.0, 3.0)
    x = torch.randn(2, 19, H, W, generator=g, dtype=dtype)
    xy = torch.rand(40, 2, generator=g, dtype=dtype) * span
    rois = torch.cat([torch.randint(0, 2, (40, 1), generator=g).to(dtype), xy, xy + side], dim=1)
    kwargs = dict(output_size=3, sampling_ratio=2, aligned=True)
    got = impls.roi_align(x, rois, backend="cpp", **kwargs)
    nhwc = impls.roi_align(x.contiguous(memory_format=torch.channels_last), rois, backend="cpp", **kwargs)
    assert torch.equal(got, nhwc), "NCHW (interleaved blocks) and channels_last differ"
    if dtype == torch.float64:
        assert torch.equal(got, impls.roi_align(x, rois, backend="reference", **kwargs)), "differs from reference"


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("sampling_ratio", [2, 0])
def test_cpp_roi_align_gradient_bands_equal_reference(sampling_ratio, layout):
    # The image gradient accumulates bands of rows sized to stay in L2 (512 KiB), channels last in both layouts: on a
    # 64-wide map, a 64-channel slice of float64 makes 16-row bands, so this 40-row map has three, crossed by the
    # boxes; 70 channels add a 6-channel slice. In NCHW a band where the boxes read under half the pixels zeroes and
    # transposes only those (ReadRuns): the 6 small boxes leave bands 1 and 2 so, the large one (rows 0-24, every
    # column) fills band 0 (16 rows in float64, 32 in float32) past half. float64 must equal reference bit for bit
    # (CONVENTIONS.md §6) in both layouts, float32 the other layout's kernel.
    g = torch.Generator().manual_seed(17)
    x = torch.randn(2, 70, 40, 64, generator=g, dtype=torch.float64)
    corner = torch.rand(6, 2, generator=g, dtype=torch.float64) * torch.tensor([60.0, 36.0], dtype=torch.float64)
    size = 4 + torch.rand(6, 2, generator=g, dtype=torch.float64) * 8  # up to 12 px: 4 samples per bin side at most
    rois = torch.cat([torch.tensor([[0.0], [1], [0], [1], [0], [1]], dtype=torch.float64), corner, corner + size], 1)
    rois = torch.cat([rois, torch.tensor([[1.0, 0, 0, 63, 24]], dtype=torch.float64)])
    grad = torch.randn(7, 70, 3, 3, generator=g, dtype=torch.float64)
    kwargs = dict(output_size=3, sampling_ratio=sampling_ratio, aligned=True)
    other = torch.channels_last if layout == torch.contiguous_format else torch.contiguous_format

    def image_grad(x, grad, backend, layout=torch.contiguous_format):
        x = x.contiguous(memory_format=layout).requires_grad_()
        out = impls.roi_align(x, rois.to(x.dtype), backend=backend, **kwargs)
        return torch.autograd.grad(out, x, grad.contiguous(memory_format=layout))[0]

    got = image_grad(x, grad, "cpp", layout)
    assert got.is_contiguous(memory_format=layout)
    assert torch.equal(got, image_grad(x, grad, "reference")), "differs from reference (float64 must be bit-exact)"
    single = image_grad(x.float(), grad.float(), "cpp", layout)
    assert torch.equal(single, image_grad(x.float(), grad.float(), "cpp", other)), "float32: the two layouts differ"
