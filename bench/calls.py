"""What is timed: one call of one row label (``matrix.Variant``), forward alone or forward + backward, as its users
run it. ``timed_region`` says it in words; the report prints that per backend.

Inputs are built once per case (outside the timer) from the workload's fixed seed, and everything a call needs is
made before the timer starts: tensors in the row's layout, TensorFlow's NHWC copies. ``make_call`` returns a
``Call``: ``run`` is the timed region, ``to_torch`` turns what it returned into NCHW torch tensors for the check
against a peer (``check.py``), outside the timer.

* Ours (``reference``, ``vectorized``, ``cpp``, ``cuda``, ...): ``impls.roi_align`` / ``impls.crop_and_resize`` /
  ... (``impls.<op>``) exactly as a user calls them (validation and the autograd Function included) on NCHW
  tensors, or on ``torch.channels_last`` ones for ``cpp_nhwc`` / ``cuda_nhwc`` (feature map and upstream gradient;
  the output comes back channels_last). Gradients come from ``torch.autograd.grad``, so no ``.grad`` accumulates between
  rounds. ``cpp_nhwc+convert``: ``cpp`` on NCHW tensors, the feature map converted to channels_last and the output
  back to NCHW inside every call (``_converting``). ``tensorflow+convert`` is this path with
  ``backend="tensorflow"``: our wrapper, NCHW <-> NHWC through numpy inside every call, the price a PyTorch user of
  that wrapper pays.
* ``torchvision``: ``torchvision.ops.roi_align`` called directly on its NCHW tensors (no ``impls`` validation), its
  backward through torch autograd (torchvision's own autograd kernel, then ``_roi_align_backward``).
* Multi-level pooling (``multiscale_roi_align``): each row's pooler module, made before the timer, called as a
  detector calls it: ``pooler(x, boxes, image_shapes)`` with ``x`` an ``OrderedDict`` of the maps (``"0"``-``"3"``,
  P2-P5, pooled; ``"pool"``, P6, left out by ``featmap_names``), ``boxes`` a list of one [L_i, 4] tensor per image
  in image pixels. Ours: ``impls.MultiScaleRoIAlign(..., aligned=False, backend=...)`` (NCHW maps, or
  channels_last ones for ``cpp_nhwc``); the peer: ``torchvision.ops.MultiScaleRoIAlign``, the module torchvision's
  detection models call, on NCHW maps, nothing of ours inside (it sets up its scales and level mapper in its first
  call, the check's, and keeps them, as in a model). The backward is ``torch.autograd.grad`` to the four pooled
  maps.
* ``onnxruntime`` (roi_align, forward only): ``session.run(None, feeds)`` on an ``InferenceSession`` of a one-node
  RoiAlign-16 model and numpy feeds, both made before the timer (``impls/backends/peers/onnxruntime.py``).
* ``openvino`` (roi_align, forward only): ``request.infer(feeds, share_inputs=True, share_outputs=True)`` on an infer
  request of a compiled one-node ROIAlign-9 model, made before the timer with its numpy feeds: no copy in or out.
  Another op's model the same way (its ``openvino_model``, ``bench/operators/<op>.py``).
* ``grid_sample`` (crop_and_resize): the user's pure-PyTorch code (``impls/backends/peers/grid_sample.py``:
  ``F.affine_grid`` + ``F.grid_sample``) on torch tensors, its gradients through torch autograd; another op's
  version is its ``grid_sample_forward``.
* ``kornia`` (crop_and_resize, one box per image): ``kornia.geometry.transform.crop_and_resize`` on corner points
  made before the timer, its gradients through torch autograd (the corners' gradient is taken to our boxes' after).
* ``tensorflow``: TensorFlow's own ops on NHWC ``tf.Tensor``s made outside the timer (image, boxes, box indices,
  image size, upstream gradient), eager: forward ``tf.image.crop_and_resize``; ``fwdbwd`` adds the image gradient
  op ``tf.raw_ops.CropAndResizeGradImage`` (the op ``tf.GradientTape`` calls, alone: an eager tape also computes
  the box gradient, since TF's registered gradient always does, and that is the ``fwdbwd_boxes`` pass);
  ``fwdbwd_boxes`` runs under ``tf.GradientTape`` and asks for the image and box gradients. Eager execution on
  the CPU is synchronous (asserted), so each op's result is computed when the call returns: nothing is copied out
  (no ``.numpy()``) inside the timer. Op determinism stays on (``conftest.py``): TF's nondeterministic CPU image
  gradient races and returns wrong values.
* The write-limit rows (``matrix.LIMIT_LABELS``, no backend; ``limit_call``) on tensors of the sizes a
  crop_and_resize pass writes, in the case's dtype and on its device: ``limit_fill``: ``buf.fill_(1.0)`` on buffers
  allocated and written before the timer, the same ones every round; ``limit_copy``: ``dst.copy_(src)`` between two
  such sets of buffers; ``fresh_fill``: ``torch.empty(shape).fill_(1.0)``, new tensors every round, freed after it:
  what a new output costs before any work, page faults included where the allocator hands out new pages.
* The read-limit rows (``matrix.READ_LIMIT_LABELS``, no backend; ``read_limit_call``): the case's float32 map in the
  row's layout and the cache lines its forward's taps touch there (``work.touched_lines``: each once, in address
  order, int32), both made before the timer; timed: ``read_lines(map, lines)`` (``bench/read_lines.cpp``), one
  load from each line on torch's threads (and the line's 4-byte number: 1/16 more bytes than the lines).

On a CUDA device our calls and torchvision's end with ``torch.cuda.synchronize()`` so that the timer sees the
kernels finish, not just their launch. ``fwdbwd_det`` runs the ``fwdbwd`` call inside
``torch.use_deterministic_algorithms(True)`` (the previous setting is restored after every call), so the backend's
deterministic image gradient is what is timed, at the price users pay for it (that mode also fills new
``torch.empty`` tensors, see ``torch.utils.deterministic``).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Callable, Optional, Union

import operators
import torch
from matrix import LIMIT_LABELS, MULTISCALE, READ_LIMIT_LABELS, Case, Variant, variant
from read_lines import module as read_lines_module
from workloads import SEED, PyramidWorkload, Workload, feature_map, pyramid_boxes, pyramid_maps

import impls
from impls.core.determinism import deterministic_algorithms


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The tensors of one call: ``image`` [N, C, H, W], ``boxes`` (the op's: [K, 5] rois, [K, 4] normalized, ...),
    ``box_index`` [K] (crop_and_resize only), the op's other keyword arguments, and the upstream
    gradient [K, C, PH, PW]."""

    op: str
    image: torch.Tensor
    boxes: torch.Tensor
    box_index: Optional[torch.Tensor]
    kwargs: dict
    grad_output: torch.Tensor

    def to(self, device: str, dtype: torch.dtype, layout: str = "contiguous") -> "Inputs":
        """A copy on ``device`` in ``dtype`` (``box_index`` stays int64), the feature map and upstream gradient in
        ``layout``: ``"contiguous"`` (NCHW) or ``"channels_last"``."""
        memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        return dataclasses.replace(
            self,
            image=self.image.to(device, dtype, memory_format=memory_format),
            boxes=self.boxes.to(device, dtype),
            box_index=None if self.box_index is None else self.box_index.to(device),
            grad_output=self.grad_output.to(device, dtype, memory_format=memory_format),
        )


@dataclasses.dataclass(frozen=True)
class PyramidInputs:
    """The tensors of one multi-level pooler call: ``maps`` [N, C, H_l, W_l] by name in the FPN's order (the pooled
    ones, ``featmap_names``, then ``pool``), ``boxes`` one [L_i, 4] per image (image pixels), ``image_shapes``, the
    pooler's settings (``kwargs``: output_size, sampling_ratio, canonical_scale) and the upstream gradient
    [K, C, PH, PW]."""

    op: str
    maps: dict[str, torch.Tensor]
    featmap_names: tuple[str, ...]
    boxes: tuple[torch.Tensor, ...]
    image_shapes: tuple[tuple[int, int], ...]
    kwargs: dict
    grad_output: torch.Tensor

    @property
    def features(self) -> tuple[torch.Tensor, ...]:
        """The pooled maps, finest first."""
        return tuple(self.maps[name] for name in self.featmap_names)

    def to(self, device: str, dtype: torch.dtype, layout: str = "contiguous") -> "PyramidInputs":
        """A copy on ``device`` in ``dtype``, the maps and upstream gradient in ``layout`` (as ``Inputs.to``)."""
        memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        return dataclasses.replace(
            self,
            maps={name: m.to(device, dtype, memory_format=memory_format) for name, m in self.maps.items()},
            boxes=tuple(b.to(device, dtype) for b in self.boxes),
            grad_output=self.grad_output.to(device, dtype, memory_format=memory_format),
        )


AnyInputs = Union[Inputs, PyramidInputs]


def make_inputs(case: Case) -> AnyInputs:
    """The case's inputs on its device, in its dtype and its row's layout (``cpp_nhwc``: channels_last)."""
    return _cpu_inputs(case.op, case.workload).to(case.device, case.torch_dtype, case.variant.layout)


# Consecutive cases share a workload (matrix order): drawing a P2 map and its upstream gradient is more CPU work
# than timing a GPU case. ``make_inputs`` copies them to the case's device and dtype (a CPU float32 case
# gets the cached tensors themselves, which the calls only read).
@functools.lru_cache(maxsize=2)
def _cpu_inputs(op: str, workload: Workload | PyramidWorkload) -> AnyInputs:
    if op == MULTISCALE:
        return _cpu_pyramid_inputs(workload)
    image = feature_map(workload)  # [N, C, H, W] float32
    boxes, box_index, kwargs = operators.fact(op, "inputs")(workload)  # float64 boxes
    out_h, out_w = kwargs["crop_size"] if "crop_size" in kwargs else kwargs["output_size"]
    g = torch.Generator().manual_seed(SEED + 1)
    grad_output = torch.randn(workload.boxes, image.shape[1], out_h, out_w, generator=g)  # [K, C, PH, PW]
    return Inputs(op, image, boxes, box_index, kwargs, grad_output)


def _cpu_pyramid_inputs(workload: PyramidWorkload) -> PyramidInputs:
    pyramid = workload.pyramid
    maps = pyramid_maps(workload)  # name -> [N, C, H_l, W_l] float32
    boxes = tuple(pyramid_boxes(workload))  # one [L, 4] float64 per image
    g = torch.Generator().manual_seed(SEED + 1)
    grad_output = torch.randn(workload.boxes, pyramid.channels, workload.output, workload.output, generator=g)
    kwargs = dict(output_size=(workload.output, workload.output), sampling_ratio=workload.sampling_ratio,
                  canonical_scale=pyramid.canonical_scale)
    shapes = (pyramid.image_size,) * workload.images
    return PyramidInputs(MULTISCALE, maps, pyramid.names, boxes, shapes, kwargs, grad_output)


@dataclasses.dataclass(frozen=True)
class Call:
    """One pass of one row label: ``run()`` is what the timer measures; ``to_torch(run())`` its results as NCHW
    torch tensors, ``(output,)``, ``(grad_image,)`` or ``(grad_image, grad_boxes)``, converted outside the timer."""

    run: Callable[[], object]
    to_torch: Callable[[object], tuple[torch.Tensor, ...]]

    def results(self) -> tuple[torch.Tensor, ...]:
        """One call, its results converted (for the check against a peer)."""
        return self.to_torch(self.run())


def _wrt(pass_: str, image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return {"fwd": (), "fwdbwd": (image,), "fwdbwd_det": (image,), "fwdbwd_boxes": (image, boxes)}[pass_]


def make_call(label: str, pass_: str, inputs: AnyInputs) -> Call:
    """The ``Call`` of row label ``label`` (a registered backend's name or an extra variant, ``matrix.Variant``)."""
    v = variant(label)
    if inputs.op == MULTISCALE:
        return _pyramid_call(v, pass_, inputs)
    # Each peer's native row, called as its users call it.
    native = {
        "tensorflow": _tensorflow_call,
        "torchvision": lambda p, i: _torch_call(p, i, _torchvision_forward(i)),
        "onnxruntime": _onnxruntime_call,
        "openvino": _openvino_call,
        "grid_sample": lambda p, i: _torch_call(p, i, _grid_sample_forward(i)),
        "kornia": _kornia_call,
    }
    if v.native and v.backend in native:
        return native[v.backend](pass_, inputs)
    forward = _impls_forward(v.backend, inputs)
    if v.converts_to is not None:
        forward = _converting(forward, getattr(torch, v.converts_to))
    return _torch_call(pass_, inputs, forward)


def _converting(forward: Callable, memory_format: torch.memory_format) -> Callable:
    """``forward`` on the feature map converted to ``memory_format``, its output converted back to NCHW: what a user
    with NCHW tensors writes to run a channels_last kernel (autograd takes the gradients through both copies)."""
    return lambda image, boxes: forward(image.contiguous(memory_format=memory_format), boxes).contiguous()


def _impls_forward(backend: str, inputs: Inputs) -> Callable:
    """The public op of ``inputs.op``'s name (``impls.roi_align``, ``impls.crop_and_resize``, ...), box indices
    after the boxes where the op takes them apart."""
    op = getattr(impls, inputs.op)
    index = () if inputs.box_index is None else (inputs.box_index,)
    return lambda image, boxes: op(image, boxes, *index, backend=backend, **inputs.kwargs)


def _torchvision_forward(inputs: Inputs) -> Callable:
    import torchvision

    assert inputs.op == "roi_align", "torchvision has no crop_and_resize"
    kwargs = inputs.kwargs  # output_size, spatial_scale, sampling_ratio, aligned: torchvision's own names
    return lambda image, boxes: torchvision.ops.roi_align(image, boxes, **kwargs)


def _grid_sample_forward(inputs: Inputs) -> Callable:
    """The user's pure-PyTorch function of ``inputs.op`` on (image, boxes): its ``grid_sample_forward``."""
    forward = operators.fact(inputs.op, "grid_sample_forward")
    assert forward is not None, f"grid_sample has no {inputs.op}"
    return forward(inputs)


def _kornia_call(pass_: str, inputs: Inputs) -> Call:
    """kornia's crop_and_resize on corner points [K, 4, 2] made before the timer; the gradient it gives them is
    taken to our normalized boxes' (``corner_points``' chain rule) outside the timer, for the check."""
    from kornia.geometry.transform import crop_and_resize

    from impls.backends.peers.kornia import corner_points

    assert inputs.op == "crop_and_resize", "kornia has no roi_align"
    _, _, height, width = inputs.image.shape
    corners = corner_points(inputs.boxes, height, width)  # [K, 4, 2]
    crop_size = inputs.kwargs["crop_size"]
    call = _torch_call(pass_, dataclasses.replace(inputs, boxes=corners),
                       lambda image, points: crop_and_resize(image, points, crop_size))

    def to_torch(results: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        if pass_ != "fwdbwd_boxes":
            return tuple(results)
        boxes = inputs.boxes.detach().requires_grad_()
        with torch.enable_grad():
            grad_boxes = torch.autograd.grad(corner_points(boxes, height, width), boxes, results[1])[0]
        return results[0], grad_boxes

    return Call(call.run, to_torch)


def _onnxruntime_call(pass_: str, inputs: Inputs) -> Call:
    """``session.run(None, feeds)`` on an InferenceSession and numpy feeds made before the timer."""
    from impls.backends.peers import onnxruntime

    assert inputs.op == "roi_align" and pass_ == "fwd", "onnxruntime: roi_align forward only"
    k = inputs.kwargs
    session = onnxruntime.session(inputs.image.dtype, k["spatial_scale"], *k["output_size"], k["sampling_ratio"],
                                  k["aligned"])
    feeds = onnxruntime.feeds(inputs.image, inputs.boxes)
    return Call(lambda: session.run(None, feeds), lambda out: (torch.from_numpy(out[0]),))


def _openvino_model(op: str) -> tuple[Callable, Callable, str]:
    """OpenVINO's model of ``op`` (its ``openvino_model``): (infer request for our arguments, numpy feeds from our
    tensors, the name of our argument the request takes last)."""
    model = operators.fact(op, "openvino_model")
    assert model is not None, f"openvino has no {op}"
    return model()


def _openvino_call(pass_: str, inputs: Inputs) -> Call:
    """``request.infer(feeds, share_inputs=True, share_outputs=True)`` on an infer request of a compiled model and
    numpy feeds made before the timer: OpenVINO reads the arrays in place and returns its output tensor's memory."""
    assert pass_ == "fwd", "openvino: forward only"
    infer_request, make_feeds, last = _openvino_model(inputs.op)
    k = inputs.kwargs
    request = infer_request(k["spatial_scale"], *k["output_size"], k["sampling_ratio"], k[last])
    feeds = make_feeds(inputs.image, inputs.boxes)
    # The output's memory is the request's, overwritten by its next call: copied out, outside the timer.
    return Call(lambda: request.infer(feeds, share_inputs=True, share_outputs=True),
                lambda out: (torch.from_numpy(out[0].copy()),))


def _torch_call(pass_: str, inputs: Inputs, forward: Callable) -> Call:
    """A torch op (ours through impls, or torchvision's) and its backward through torch autograd."""
    image = inputs.image.detach().requires_grad_(pass_ != "fwd")
    boxes = inputs.boxes.detach().requires_grad_(pass_ == "fwdbwd_boxes")
    wrt = _wrt(pass_, image, boxes)
    synchronize = _synchronize(inputs.image.device)

    def call() -> tuple[torch.Tensor, ...]:
        output = forward(image, boxes)
        results = torch.autograd.grad(output, wrt, inputs.grad_output) if wrt else (output,)
        synchronize()
        return results

    return _torch_pass(pass_, call)


def _synchronize(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else lambda: None


def _torch_pass(pass_: str, call: Callable[[], tuple[torch.Tensor, ...]]) -> Call:
    """``call`` as the ``Call`` of ``pass_``: inside ``torch.use_deterministic_algorithms(True)`` for fwdbwd_det."""
    if pass_ != "fwdbwd_det":
        return Call(call, tuple)

    def deterministic_call() -> tuple[torch.Tensor, ...]:
        with deterministic_algorithms():
            return call()

    return Call(deterministic_call, tuple)


def limit_call(label: str, shapes: tuple[tuple[int, ...], ...], dtype: torch.dtype, device: str) -> Call:
    """The ``Call`` of write-limit row ``label`` on tensors of ``shapes`` (module docstring); what it returns is not
    checked."""
    assert label in LIMIT_LABELS, label
    synchronize = _synchronize(torch.device(device))
    # Written here, before the timer: every page of the reused buffers is mapped.
    targets = [torch.zeros(shape, dtype=dtype, device=device) for shape in shapes] if label != "fresh_fill" else []
    sources = [torch.ones(shape, dtype=dtype, device=device) for shape in shapes] if label == "limit_copy" else []

    def call() -> list[torch.Tensor]:
        if label == "fresh_fill":
            written = [torch.empty(shape, dtype=dtype, device=device).fill_(1.0) for shape in shapes]
        elif label == "limit_copy":
            written = [dst.copy_(src) for dst, src in zip(targets, sources)]
        else:
            written = [t.fill_(1.0) for t in targets]
        synchronize()
        return written

    return Call(call, tuple)


def _pyramid_call(v: Variant, pass_: str, inputs: PyramidInputs) -> Call:
    """A multi-level pooler module, ours or torchvision's, called as a detector calls it (module docstring)."""
    assert pass_ in ("fwd", "fwdbwd", "fwdbwd_det"), f"no {pass_} pass for {MULTISCALE}"
    names = list(inputs.featmap_names)
    pooled = {name: inputs.maps[name].detach().requires_grad_(pass_ != "fwd") for name in names}
    x = collections.OrderedDict((name, pooled.get(name, m)) for name, m in inputs.maps.items())
    boxes, image_shapes = list(inputs.boxes), list(inputs.image_shapes)
    if v.native and v.backend == "torchvision":
        import torchvision

        pooler = torchvision.ops.MultiScaleRoIAlign(names, **inputs.kwargs)
    else:
        pooler = impls.MultiScaleRoIAlign(names, aligned=False, backend=v.backend, **inputs.kwargs)
    wrt = tuple(pooled.values()) if pass_ != "fwd" else ()
    synchronize = _synchronize(inputs.grad_output.device)

    def call() -> tuple[torch.Tensor, ...]:
        output = pooler(x, boxes, image_shapes)
        results = torch.autograd.grad(output, wrt, inputs.grad_output) if wrt else (output,)
        synchronize()
        return results

    return _torch_pass(pass_, call)


@functools.cache
def tf_module():
    """TensorFlow, imported once, with op determinism on and eager execution synchronous (checked, not assumed)."""
    import tensorflow as tf

    import impls.backends.peers  # noqa: F401  (imports torchvision first: loaded after tensorflow, its kernel crashes)

    # TF's default multi-threaded CPU CropAndResizeGradImage races and returns wrong pixels;
    # conftest.py also sets TF_DETERMINISTIC_OPS=1 before the first import.
    tf.config.experimental.enable_op_determinism()
    # Synchronous eager execution: an op returns once its kernel has run, so a timed call that returns a
    # tf.Tensor has computed it. The default; asynchronous eager would need a copy out inside the timer instead.
    assert tf.config.experimental.get_synchronous_execution(), "TF eager execution is asynchronous here"
    return tf


def _to_nhwc(x: torch.Tensor):
    """A float32 NHWC tf.Tensor with ``x``'s values (made outside the timer)."""
    return tf_module().constant(x.detach().to(torch.float32).permute(0, 2, 3, 1).contiguous().cpu().numpy())


def _from_nhwc(t) -> torch.Tensor:
    return torch.from_numpy(t.numpy()).permute(0, 3, 1, 2)  # [., C, H, W], a channels_last view


def _tensorflow_call(pass_: str, inputs: Inputs) -> Call:
    """TensorFlow's own ops on its own NHWC tensors (module docstring)."""
    tf = tf_module()
    assert inputs.op == "crop_and_resize", "tensorflow has no roi_align"
    n, c, h, w = inputs.image.shape
    image = _to_nhwc(inputs.image)  # [N, H, W, C]
    boxes = tf.constant(inputs.boxes.detach().to(torch.float32).cpu().numpy())  # [K, 4]
    box_ind = tf.constant(inputs.box_index.to(torch.int32).cpu().numpy())  # [K]
    grads = _to_nhwc(inputs.grad_output)  # [K, ch, cw, C]
    image_size = tf.constant([n, h, w, c], tf.int32)
    crop_size = tuple(inputs.kwargs["crop_size"])
    method = inputs.kwargs.get("method", "bilinear")
    extrapolation_value = inputs.kwargs.get("extrapolation_value", 0.0)

    def forward():
        return tf.image.crop_and_resize(image, boxes, box_ind, crop_size, method=method,
                                        extrapolation_value=extrapolation_value)  # [K, ch, cw, C]

    if pass_ == "fwd":
        return Call(lambda: (forward(),), lambda out: (_from_nhwc(out[0]),))
    if pass_ == "fwdbwd":
        def forward_backward():
            forward()  # computed (eager, synchronous) and dropped: the image gradient op does not read it
            return (tf.raw_ops.CropAndResizeGradImage(grads=grads, boxes=boxes, box_ind=box_ind,
                                                      image_size=image_size, T=tf.float32, method=method),)

        return Call(forward_backward, lambda out: (_from_nhwc(out[0]),))
    assert pass_ == "fwdbwd_boxes", pass_

    def forward_backward_boxes():
        with tf.GradientTape() as tape:
            tape.watch(image)
            tape.watch(boxes)
            output = forward()
        return tuple(tape.gradient(output, [image, boxes], output_gradients=grads))

    return Call(forward_backward_boxes, lambda out: (_from_nhwc(out[0]), torch.from_numpy(out[1].numpy())))


def read_limit_call(label: str, workload: Workload, lines: torch.Tensor) -> Call:
    """The ``Call`` of read-limit row ``label`` (module docstring): ``lines`` (``work.touched_lines`` of the map in
    the label's layout) read from ``workload``'s float32 map; what it returns is not checked."""
    layout = READ_LIMIT_LABELS[label]
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    image = feature_map(workload).contiguous(memory_format=memory_format)  # [N, C, H, W] in the row's layout
    assert image.data_ptr() % 64 == 0, "the map's storage starts on a cache line"
    indices = lines.to(torch.int32)
    read_lines = read_lines_module().read_lines
    return Call(lambda: read_lines(image, indices), tuple)


def timed_region(label: str, op: str) -> str:
    """What the timer of row ``label`` measures on ``op``, in words (the report's table of timed regions)."""
    if label in LIMIT_LABELS:
        return LIMIT_TIMED[label]
    if label in READ_LIMIT_LABELS:
        return (f"`read_lines(map, lines)` (bench/read_lines.cpp): one load from each cache line the forward's taps "
                f"touch in the {READ_LIMIT_LABELS[label]} map, the lines listed before the timer: the read limit")
    v = variant(label)
    if op == MULTISCALE:
        return _pyramid_timed_region(v)
    if v.native and v.backend in operators.fact(op, "PEER_TIMED", {}):
        return operators.fact(op, "PEER_TIMED")[v.backend]
    if v.native and v.backend == "torchvision":
        return ("`torchvision.ops.roi_align(x, rois, ...)` on its own NCHW tensors (no impls validation); backward: "
                "`torch.autograd.grad` through torchvision's autograd kernel (`_roi_align_backward`)")
    if v.native and v.backend == "onnxruntime":
        return ("`session.run(None, feeds)`: an onnxruntime `InferenceSession` (CPU, default options) on a one-node "
                "RoiAlign-16 model, built before the timer, and numpy feeds `x`, `rois` [K, 4], `batch_indices` "
                "made before it; the output is allocated by the call. Forward only")
    if v.native and v.backend == "openvino":
        return ("`request.infer(feeds, share_inputs=True, share_outputs=True)`: an infer request of a one-node "
                "ROIAlign-9 model compiled for OpenVINO's CPU plugin, both made before the timer, with numpy feeds "
                "made before it and read in place; the output stays in the request's memory (copied out after). "
                "Forward only")
    if v.native and v.backend == "grid_sample":
        return ("`F.affine_grid` + `F.grid_sample(align_corners=True)` on NCHW torch tensors as a user writes "
                "crop_and_resize (`impls/backends/peers/grid_sample.py`: per-box theta from the normalized boxes, "
                "one grid_sample over the batch, each image's grids stacked along the rows), nothing of impls "
                "inside; backward: "
                "`torch.autograd.grad` through it (to theta and the boxes for +boxes)")
    if v.native and v.backend == "kornia":
        return ("`kornia.geometry.transform.crop_and_resize(image, corners, size)` on NCHW torch tensors, one box per "
                "image, corner points [K, 4, 2] made before the timer; backward: `torch.autograd.grad` through "
                "kornia (to the corners for +boxes)")
    if v.native and v.backend == "tensorflow":
        return ("TensorFlow eager on NHWC `tf.Tensor`s made before the timer (image, boxes, box indices, upstream "
                "gradient): `tf.image.crop_and_resize`; fwd+bwd adds `tf.raw_ops.CropAndResizeGradImage` (image "
                "gradient only: an eager `tf.GradientTape` asked for the image gradient alone also computes the box "
                "gradient, TF's registered gradient always does, and costs the +boxes time); +boxes: "
                "`tf.GradientTape.gradient(out, [image, boxes], output_gradients=...)`. Synchronous on the CPU, op "
                "determinism on; no conversion, no copy out")
    fn = f"impls.{op}"
    layout = "channels_last (feature map and upstream gradient, made before the timer)" if (
        v.layout == "channels_last") else "NCHW"
    text = (f"`{fn}(..., backend=\"{v.backend}\")` on {layout} torch tensors: validation, autograd Function, "
            "kernels; backward: `torch.autograd.grad`")
    if v.converts_to is not None:
        text += (f"; inside every call the feature map is converted to {v.converts_to} first and the output back to "
                 "NCHW after (`x.contiguous(memory_format=...)`, then `.contiguous()`), and the backward copies "
                 "the gradients through both: what a user with NCHW tensors pays for the channels_last kernel")
    if v.backend == "tensorflow":
        text += ("; inside every call the wrapper copies NCHW torch -> NHWC numpy -> `tf.constant`, runs TF's op "
                 "(forward, then each gradient op) and copies back: the peer's time plus the conversions")
    return text


LIMIT_TIMED = {
    "limit_fill": ("`buf.fill_(1.0)` on buffers of the sizes the pass writes (the crops, plus the image and box "
                   "gradients), allocated and written before the timer, the same every round: the write limit"),
    "limit_copy": ("`dst.copy_(src)` between two sets of such buffers, both written before the timer: the limit of "
                   "an output computed from as many bytes read"),
    "fresh_fill": ("`torch.empty(shape).fill_(1.0)` for each tensor the pass writes, new every round and freed "
                   "after it: a fresh output's cost, page faults included where the allocator hands out new pages"),
}


def _pyramid_timed_region(v: Variant) -> str:
    call = ("called on an `OrderedDict` of the maps (P2-P5 pooled, `pool` left out), a list of one [L_i, 4] box "
            "tensor per image and `image_shapes`; backward: `torch.autograd.grad` to the four pooled maps")
    if v.native and v.backend == "torchvision":
        return ("`torchvision.ops.MultiScaleRoIAlign(featmap_names, output_size, sampling_ratio)` (made before the "
                "timer; its scales set up by its first call) on its own NCHW tensors, " + call + ": its Python loop "
                "over levels (level mapper, `torch.where`, gather, `roi_align`, scatter per level), no impls inside")
    layout = "channels_last maps (made before the timer)" if v.layout == "channels_last" else "NCHW maps"
    return (f"`impls.MultiScaleRoIAlign(featmap_names, output_size, sampling_ratio, aligned=False, "
            f"backend=\"{v.backend}\")` (made before the timer) on {layout}, {call}: validation, scale inference, "
            "level assignment, autograd Function, kernels (one operator call per pass where the backend has a "
            "multi-level kernel, else one `roi_align` per level)")
