"""Multi-level RoIAlign (``impls.MultiScaleRoIAlign``, ``impls.multiscale_roi_align``) against torchvision's
``MultiScaleRoIAlign`` itself, on every backend that pools roi_align on the CPU.

Oracle: torchvision's module, forward and the gradient to every level's map, on the same maps and boxes; the level
each box lands on against torchvision's ``LevelMapper``; the box gradient (which torchvision does not give) against
``reference`` through the same levels, and by gradcheck in float64.
"""

from collections import OrderedDict

import cases
import pytest
import torch
import torchvision

import impls
from impls.backends.triton import launcher as triton_launcher
from impls.core.determinism import deterministic_algorithms
from impls.ops.multiscale_roi_align import levels as _levels

STRIDES = (4, 8, 16, 32)
IMAGE = (128, 160)  # (height, width) of the largest image; the maps are the padded batch's, stride by stride
# Every backend that pools roi_align on each device (the peer included: it must agree with its own module).
BACKENDS = cases.backends_for("roi_align", "cpu", torch.float64)
BACKEND_DEVICES = [(b, d) for d in cases.DEVICES for b in cases.backends_for("roi_align", d, torch.float64)]
HEADS = {
    "box_head": dict(output_size=7, sampling_ratio=2),
    "mask_head": dict(output_size=14, sampling_ratio=2),
    "adaptive": dict(output_size=7, sampling_ratio=0),
}


def pyramid(dtype, n=2, c=3, seed=0, names=("0", "1", "2", "3")):
    """FPN maps of a padded batch of ``IMAGE``-sized images, finest first, and a ``pool`` map (stride 64) that
    the poolers must leave out."""
    g = torch.Generator().manual_seed(seed)
    x = OrderedDict()
    for name, stride in zip(names, STRIDES):
        x[name] = torch.randn(n, c, IMAGE[0] // stride, IMAGE[1] // stride, generator=g, dtype=dtype)
    x["pool"] = torch.randn(n, c, IMAGE[0] // 64, IMAGE[1] // 64, generator=g, dtype=dtype)
    return x


def boxes_per_image(dtype, counts=(9, 7), seed=1):
    """Per image, boxes from 4 px to the whole image: the smallest map below P2's canonical size, the largest past
    P5's, so the level clamp is hit at both ends; one box of exactly 224 px (canonical level 4)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for count in counts:
        side = torch.cat([torch.tensor([4.0, 224.0, 500.0]), torch.rand(count - 3, generator=g) * 120 + 4])
        x1 = torch.rand(count, generator=g) * (IMAGE[1] - 4)
        y1 = torch.rand(count, generator=g) * (IMAGE[0] - 4)
        aspect = torch.rand(count, generator=g) * 1.5 + 0.5
        w, h = side * aspect.sqrt(), side / aspect.sqrt()
        out.append(torch.stack([x1, y1, x1 + w, y1 + h], dim=1).to(dtype))
    return out


def image_shapes(n=2):
    return [IMAGE, (IMAGE[0] - 8, IMAGE[1] - 24)][:n]


def assert_matches_torchvision(backend, dtype, head, boxes, x, names=("0", "1", "2", "3"), device="cpu"):
    """Forward and the gradient to every map: ours against torchvision's module, both on ``device``."""
    shapes = image_shapes(len(boxes))
    boxes = [b.to(device) for b in boxes]
    x = OrderedDict((k, v.to(device)) for k, v in x.items())
    theirs = torchvision.ops.MultiScaleRoIAlign(list(names), head["output_size"], head["sampling_ratio"])
    ours = impls.MultiScaleRoIAlign(list(names), head["output_size"], head["sampling_ratio"], backend=backend)
    results = []
    for module in (theirs, ours):
        maps = OrderedDict((k, v.clone().requires_grad_(k in names)) for k, v in x.items())
        out = module(maps, boxes, shapes)
        g = torch.Generator().manual_seed(5)
        out.backward(torch.randn(out.shape, generator=g, dtype=out.dtype))
        results.append((out, [maps[k].grad for k in names]))
    tol = cases.TOLERANCE[dtype]
    cases.assert_close(results[1][0], results[0][0], tol, f"{backend} forward")
    for name, ours_grad, their_grad in zip(names, results[1][1], results[0][1]):
        cases.assert_close(ours_grad, their_grad, tol, f"{backend} grad of map {name}")


def _matrix():
    """Every backend x device x dtype x head, but ``compiled`` in one configuration per device: each level's box
    count is a new shape and Inductor compiles each graph for a minute on 2 cores; its per-level roi_align calls
    are the ones the shared matrix checks in every configuration."""
    return [
        pytest.param(backend, device, dtype, head, id=f"{backend}-{device}-{str(dtype)[6:]}-{head}")
        for backend, device in BACKEND_DEVICES
        for dtype in (torch.float64, torch.float32)
        for head in HEADS
        if backend != "compiled" or (dtype, head) == (torch.float64, "box_head")
    ]


@pytest.mark.parametrize("backend,device,dtype,head", _matrix())
def test_matches_torchvision_pooler(backend, device, dtype, head):
    assert_matches_torchvision(backend, dtype, HEADS[head], boxes_per_image(dtype), pyramid(dtype), device=device)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "compiled"])
def test_an_image_without_boxes(backend):
    boxes = boxes_per_image(torch.float64)
    assert_matches_torchvision(backend, torch.float64, HEADS["box_head"], [boxes[0], boxes[1][:0]],
                               pyramid(torch.float64))


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "compiled"])
def test_one_level_only(backend):
    # torchvision pools every box from the one map, whatever its size: no level is mapped.
    assert_matches_torchvision(backend, torch.float64, HEADS["box_head"], boxes_per_image(torch.float64),
                               pyramid(torch.float64), names=("1",))


def test_the_level_clamp_is_hit_at_both_ends():
    boxes = torch.cat(boxes_per_image(torch.float64))
    levels = _levels.map_levels(boxes, [1 / s for s in STRIDES], 224, 4)
    assert levels.min() == 0 and levels.max() == len(STRIDES) - 1
    assert levels[0] == 0 and levels[1] == 2 and levels[2] == 3  # 4 px, 224 px (level 4 = P4), 500 px


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_each_box_lands_on_torchvision_s_level(dtype):
    # Sides around every level boundary (224 * 2**j, where floor() changes), and random ones.
    g = torch.Generator().manual_seed(3)
    edges = torch.tensor([224.0 * 2.0**j for j in range(-3, 3)])
    sides = torch.cat([edges, edges * (1 - 1e-7), edges * (1 + 1e-7), edges * (1 - 2e-6), edges * (1 + 2e-6),
                       torch.rand(2000, generator=g) * 900 + 1])
    aspect = torch.rand(sides.shape[0], generator=g) + 0.5
    x1 = torch.rand(sides.shape[0], generator=g) * 100
    boxes = torch.stack([x1, x1, x1 + sides * aspect, x1 + sides / aspect], dim=1).to(dtype)
    scales = [1 / s for s in STRIDES]
    k_min, k_max = _levels.level_range(scales)
    expected = torchvision.ops.poolers.LevelMapper(k_min, k_max)([boxes])
    assert torch.equal(_levels.map_levels(boxes, scales, 224, 4), expected)


def test_scales_are_inferred_as_torchvision_does():
    x = pyramid(torch.float32)
    heights = [v.shape[-2] for k, v in x.items() if k != "pool"]
    theirs = torchvision.ops.poolers._setup_scales([v for k, v in x.items() if k != "pool"], image_shapes(), 224, 4)
    assert _levels.infer_scales(heights, image_shapes()) == theirs[0]
    # Map and image sizes from tiny to past an 800x1333 detector input, ratios near every rounding boundary.
    for original in range(1, 1400, 7):
        for size in range(1, 400, 3):
            expected = torchvision.ops.poolers._infer_scale(torch.empty(1, 1, size, size), [original, original])
            assert _levels.infer_scale(size, original) == expected, (size, original)


@pytest.mark.parametrize("backend", ["cpp", "vectorized"])
def test_box_gradient_equals_reference(backend):
    # torchvision gives no box gradient; the reference backend, through the same levels, is the oracle.
    x = [v for k, v in pyramid(torch.float64, c=2).items() if k != "pool"]
    grads = {}
    for name in ("reference", backend):
        boxes = [b.clone().requires_grad_() for b in boxes_per_image(torch.float64, counts=(5, 4))]
        out = impls.multiscale_roi_align(x, boxes, image_shapes(), 3, 2, aligned=True, backend=name)
        out.backward(torch.ones_like(out))
        grads[name] = torch.cat([b.grad for b in boxes])
    cases.assert_close(grads[backend], grads["reference"], cases.tolerance(backend, torch.float64), "box gradient")
    assert grads["reference"].abs().sum() > 0


def test_gradcheck_maps_and_boxes():
    # Boxes well inside the maps and away from level boundaries, where the function is smooth.
    maps = [torch.randn(1, 1, 16 // s, 20 // s, dtype=torch.float64, requires_grad=True) for s in (1, 2)]
    boxes = torch.tensor([[1.3, 2.1, 5.7, 4.9], [2.2, 1.7, 15.6, 13.3]], dtype=torch.float64, requires_grad=True)

    def pool(a, b, image_boxes):
        return impls.multiscale_roi_align([a, b], [image_boxes], [(16, 20)], 2, 2, aligned=True,
                                          canonical_scale=4, canonical_level=0, backend="cpp")

    levels = _levels.map_levels(boxes.detach(), [1.0, 0.5], 4, 0)
    assert levels.tolist() == [0, 1]  # one box per level
    assert torch.autograd.gradcheck(pool, (*maps, boxes))


@pytest.mark.parametrize("case,error,match", [
    ("different_channels", ValueError, r"features\[1\] has N, C = \(2, 4\) but features\[0\] has \(2, 3\)"),
    ("different_batch", ValueError, r"features\[1\] has N, C = \(1, 3\)"),
    ("different_dtype", TypeError, r"features\[1\] has dtype torch.float32 but features\[0\] has torch.float64"),
    ("skipped_level", ValueError, r"consecutive FPN levels.*without skipping a level"),
    ("coarsest_first", ValueError, r"consecutive FPN levels"),
    ("image_shapes_length", ValueError, r"image_shapes must list one \(height, width\) per image, 2 here"),
    ("boxes_elsewhere", ValueError, r"boxes\[0\] is on meta but input is on cpu"),
    ("not_a_list", TypeError, r"features must be a non-empty list"),
])
def test_bad_input_names_the_argument(case, error, match):
    x = [v for k, v in pyramid(torch.float64).items() if k != "pool"]
    boxes, shapes = boxes_per_image(torch.float64), image_shapes()
    if case == "different_channels":
        x[1] = torch.zeros(2, 4, *x[1].shape[2:], dtype=torch.float64)
    elif case == "different_batch":
        x[1] = x[1][:1]
    elif case == "different_dtype":
        x[1] = x[1].float()
    elif case == "skipped_level":
        x = [x[0], x[2], x[3]]
    elif case == "coarsest_first":
        x = x[::-1]
    elif case == "image_shapes_length":
        shapes = shapes[:1]
    elif case == "boxes_elsewhere":
        boxes = [boxes[0].to("meta"), boxes[1]]
    elif case == "not_a_list":
        x = x[0]
    with pytest.raises(error, match=match):
        impls.multiscale_roi_align(x, boxes, shapes, 7, 2, backend="cpp")


def test_featmap_names_not_in_x():
    module = impls.MultiScaleRoIAlign(["0", "p9"], 7, 2)
    with pytest.raises(KeyError, match=r"featmap_names \['p9'\] are not in x"):
        module(pyramid(torch.float64), boxes_per_image(torch.float64), image_shapes())


def test_unknown_backend_comes_first():
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        impls.multiscale_roi_align("not a pyramid", None, None, 7, backend="fast")


class _OperatorCalls(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the impls:: kernels a block calls (not the argument check's value statistics, ``*_value_stats``, which
    ``checks.read_stats`` calls on the CPU)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "impls" and not func.__name__.split(".")[0].endswith("_value_stats"):
            self.calls.append(func.__name__.split(".")[0])
        return func(*args, **(kwargs or {}))


# The extension's backends on each device this machine has (cuda: in the GPU run).
EXTENSION_DEVICES = [pytest.param(b, d, id=f"{b}-{d}") for b, d in (("cpp", "cpu"), ("cuda", "cuda"))
                     if d in cases.DEVICES]


@pytest.mark.parametrize("backend,device", EXTENSION_DEVICES)
def test_extension_pools_every_level_in_one_operator_call_per_pass(backend, device):
    x = [v.to(device).requires_grad_() for k, v in pyramid(torch.float64).items() if k != "pool"]
    boxes = [b.to(device).requires_grad_() for b in boxes_per_image(torch.float64)]
    with _OperatorCalls() as mode:
        out = impls.multiscale_roi_align(x, boxes, image_shapes(), 7, 2, backend=backend)
        out.backward(torch.ones_like(out))
    assert mode.calls == ["multiscale_roi_align_forward", "multiscale_roi_align_backward_input",
                          "multiscale_roi_align_backward_boxes"]


# triton where it runs (the CPU under TRITON_INTERPRET=1, else the GPU): four configurations, the interpreter is slow.
TRITON_DEVICES = [d for b, d in BACKEND_DEVICES if b == "triton"]
TRITON_CONFIGS = ((torch.float64, "contiguous", False), (torch.float64, "channels_last", True),
                  (torch.float32, "strided", True), (torch.float16, "channels_last", False))


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
def test_triton_pools_every_level_in_one_launch_per_pass(device, deterministic, monkeypatch):
    # Its operators are opaque only under torch.compile; eagerly, the launches are what is counted.
    launches = []
    launch = triton_launcher._launch

    def record(kernel, grid, *args, **meta):
        launches.append(kernel.__name__)
        launch(kernel, grid, *args, **meta)

    monkeypatch.setattr(triton_launcher, "_launch", record)
    x = [v.to(device).requires_grad_() for k, v in pyramid(torch.float64, c=2).items() if k != "pool"]
    boxes = [b.to(device).requires_grad_() for b in boxes_per_image(torch.float64)]
    out = impls.multiscale_roi_align(x, boxes, image_shapes(), 2, 2, backend="triton")
    with deterministic_algorithms(deterministic):
        out.backward(torch.ones_like(out))
    image_grad = ["roi_align_taps_kernel", "gather_taps_kernel"] if deterministic else [
        "roi_align_image_grad_atomic_kernel"]
    assert launches == ["roi_align_forward_kernel", *image_grad, "roi_align_boxes_grad_kernel"]
    assert all(m.grad.abs().sum() > 0 for m in x)  # every level had boxes, and got its gradient


def _one_call_params():
    """The extension's backends on this machine's devices x dtype x layout (cuda in both image-gradient modes), and
    triton in TRITON_CONFIGS."""
    full = [
        (backend, device, dtype, contiguity, deterministic)
        for backend, device in (("cpp", "cpu"), ("cuda", "cuda")) if device in cases.DEVICES
        for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16)
        for contiguity in cases.CONTIGUITY
        for deterministic in ((False, True) if backend == "cuda" else (False,))
    ]
    triton = [("triton", device, *config) for device in TRITON_DEVICES for config in TRITON_CONFIGS]
    return [
        pytest.param(backend, device, dtype, contiguity, deterministic, id=f"{backend}-{device}-{str(dtype)[6:]}-"
                     f"{contiguity}" + ("-deterministic" if deterministic else ""))
        for backend, device, dtype, contiguity, deterministic in full + triton
    ]


@pytest.mark.parametrize("backend,device,dtype,contiguity,deterministic", _one_call_params())
def test_one_call_equals_reference_per_level(backend, device, dtype, contiguity, deterministic):
    # Oracle: the reference backend pooling each level with its roi_align. cpp float64 is bit for bit (cpp
    # evaluates the reference's expressions in its order, level by level: CONVENTIONS.md section 6); other dtypes
    # round the inputs first, so both sides see the same values, and take the matrix's tolerances.
    x64 = [v for k, v in pyramid(torch.float64, c=3).items() if k != "pool"]
    boxes64 = boxes_per_image(torch.float64, counts=(6, 5))
    results = {}
    for name, on in (("reference", "cpu"), (backend, device)):
        maps = [cases.with_layout(m.to(on, dtype).clone(), contiguity).requires_grad_() for m in x64]
        boxes = [b.to(on, dtype).clone().requires_grad_() for b in boxes64]
        out = impls.multiscale_roi_align(maps, boxes, image_shapes(), (3, 4), 2, aligned=True, backend=name)
        g = torch.Generator().manual_seed(4)
        with deterministic_algorithms(deterministic):
            out.backward(torch.randn(out.shape, generator=g, dtype=torch.float64).to(on, dtype))
        results[name] = [t.cpu() for t in (out, *(m.grad for m in maps), torch.cat([b.grad for b in boxes]))]
    tol = cases.tolerance(backend, dtype)
    cases.assert_close(results[backend][0], results["reference"][0], tol, "forward")
    for level, (ours, theirs) in enumerate(zip(results[backend][1:-1], results["reference"][1:-1])):
        cases.assert_close(ours, theirs, tol, f"gradient of map {level}")
    cases.assert_close(results[backend][-1], results["reference"][-1], tol, "box gradient")


def _raw_op_args(device):
    """Arguments of the three operators called directly: a 4-level pyramid (2 channels), 9 boxes on image 0 over
    every level, a 3x3 output, sampling_ratio 2."""
    x = [v.to(device) for k, v in pyramid(torch.float64, c=2).items() if k != "pool"]
    rois = torch.cat([torch.zeros(9, 1, dtype=torch.float64), boxes_per_image(torch.float64)[0]], dim=1).to(device)
    levels = torch.tensor([0, 2, 3, 1, 0, 1, 2, 3, 0], device=device)
    scales = [1 / s for s in STRIDES]
    grad = torch.randn(9, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).to(device)
    return {
        "forward": (x, rois, levels, scales, 3, 3, 2, False),
        "backward_input": (grad, rois, levels, scales, 3, 3, 2, 2, [m.shape[2] for m in x],
                           [m.shape[3] for m in x], 2, False),
        "backward_boxes": (grad, x, rois, levels, scales, 3, 3, 2, False),
    }


@pytest.mark.parametrize("backend,device", EXTENSION_DEVICES)
def test_extension_operators_pass_opcheck(backend, device):
    for name, args in _raw_op_args(device).items():
        torch.library.opcheck(getattr(torch.ops.impls, f"multiscale_roi_align_{name}").default, args)


if "cuda" in cases.DEVICES:  # the GPU run only

    def test_cuda_operators_read_nothing_back_to_the_host():
        # CUDA-graph capturable: no synchronizing call in any pass (the atomic image gradient; the level of each box
        # is read on the device). The public op's one validation read is not part of the kernels.
        calls = _raw_op_args("cuda")
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for name, args in calls.items():
                getattr(torch.ops.impls, f"multiscale_roi_align_{name}")(*args)
        finally:
            torch.cuda.set_sync_debug_mode(0)

    def test_cuda_takes_at_most_eight_levels():
        maps = [torch.zeros(1, 1, 2, 2, device="cuda") for _ in range(9)]
        rois = torch.tensor([[0, 0.0, 0, 1, 1]], device="cuda")
        with pytest.raises(RuntimeError, match="features: the CUDA kernels pool 1 to 8 pyramid levels.*got 9"):
            torch.ops.impls.multiscale_roi_align_forward(maps, rois, torch.zeros(1, dtype=torch.int64, device="cuda"),
                                                         [1.0] * 9, 2, 2, 1, False)


def test_cpp_rejects_a_level_outside_the_pyramid():
    x = [v for k, v in pyramid(torch.float64, c=2).items() if k != "pool"]
    rois = torch.tensor([[0, 1.0, 1, 5, 5]], dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"levels\[0\] = 4 is not a level in \[0, 4\)"):
        torch.ops.impls.multiscale_roi_align_forward(x, rois, torch.tensor([4]), [0.25, 0.125, 0.0625, 0.03125],
                                                     2, 2, 2, False)


def _pyramid_module(backend, output_size=7, sampling_ratio=2):
    class Pooler(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = impls.MultiScaleRoIAlign(["0", "1", "2", "3"], output_size, sampling_ratio, backend=backend)

        def forward(self, p2, p3, p4, p5, boxes0, boxes1):
            return self.pool({"0": p2, "1": p3, "2": p4, "3": p5}, [boxes0, boxes1], image_shapes())

    return Pooler()


@pytest.mark.parametrize("backend,device", EXTENSION_DEVICES + [
    pytest.param("triton", d, id=f"triton-{d}") for d in TRITON_DEVICES])
def test_compiles_as_one_graph_forward_and_backward(backend, device):
    # Oracle: the eager call. fullgraph: no graph break anywhere (scale inference is Python on sizes, level
    # assignment torch operations, the kernels custom operators with fakes: impls::triton_* for triton). The image
    # gradient in its deterministic mode, so that a GPU's atomics cannot reorder its sums between the two runs.
    x = [v.to(device) for k, v in pyramid(torch.float32).items() if k != "pool"]
    boxes = [b.to(device) for b in boxes_per_image(torch.float32)]
    module = _pyramid_module(backend, output_size=2, sampling_ratio=1)  # small: triton's interpreter is slow
    results = []
    for run in (module, torch.compile(module, fullgraph=True)):
        maps = [m.clone().requires_grad_() for m in x]
        image_boxes = [b.clone().requires_grad_() for b in boxes]
        with deterministic_algorithms():  # set for the forward too: the compiled backward is made with it
            out = run(*maps, *image_boxes)
            out.backward(torch.ones_like(out))
        results.append([out, *(m.grad for m in maps), *(b.grad for b in image_boxes)])
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager, rtol=0, atol=0)


def test_cpp_exports():
    x = [v for k, v in pyramid(torch.float32).items() if k != "pool"]
    boxes = boxes_per_image(torch.float32)
    module = _pyramid_module("cpp")
    exported = torch.export.export(module, (*x, *boxes))
    assert sum(node.target == torch.ops.impls.multiscale_roi_align_forward.default
               for node in exported.graph.nodes) == 1
    torch.testing.assert_close(exported.module()(*x, *boxes), module(*x, *boxes), rtol=0, atol=0)
