"""Which benchmarks run: the case matrix for each ``BENCH`` mode, as pytest params.

``BENCH`` (environment variable) picks the matrix:

* ``smoke``: the ``tiny`` workload, float32, every pass, every backend, and for crop_and_resize a toy RGB-patch case
  and the write-limit rows (below): checks that the suite runs (CI).
* ``default`` (``make bench``; how long it took is in the README, from the results file): the P2 box head
  (512 boxes, 7x7) and mask head (128 boxes, 14x14) with sampling_ratio 2 and 0, box gradients and bfloat16 on the
  box head only, each head case also with a channels_last feature map (``cpp_nhwc``) and through our TensorFlow
  wrapper (``tensorflow+convert``), a box-count sweep and a feature-map sweep (roi_align), the multi-level
  pooler cases (below), and for crop_and_resize the batch cases (``BATCH_CROPS``, ``RGB_PATCHES``) and the
  write-limit rows (below).
* ``full``: P2-P5, training and inference box counts, every dtype a backend supports, longer sweeps, the tiny case,
  the multi-level pooler cases with every backend.
* ``gpu`` (``make gpu``, bench/gpu_run.sh): CUDA devices only: P2-P5, box head 512 and 1000 boxes (7x7), mask head
  128 and 100 boxes (14x14), sampling_ratio 2 and 0, float32/float16/bfloat16 for the kernels users compare
  (``all_gpu_dtypes``: ``cuda`` and the peers that run on CUDA; every other CUDA backend, ``vectorized`` included,
  in float32 only), forward, forward + backward with the atomic and with the deterministic image gradient
  (``cuda``), box gradients in float32 on P2, short sweeps (roi_align, float32) and the multi-level pooler cases
  (float32). Timed for ``ROUND_BUDGET_S["gpu"]`` = 0.3 s per case (bench/conftest.py). ``BENCH_ASSUME_GPU=1`` lets
  a machine without a GPU *collect* this matrix (``--collect-only``) to count it, every backend that runs on cuda
  counted as available.

Backends come from the registry: every available backend runs every case whose op, device and dtype it supports,
so a new backend (or a GPU) adds rows with no change here. ``reference`` is the oracle, too slow for anything but
``tiny``. Boxes of the mask head follow CONVENTIONS.md §5 (128 in training, 100 at inference).

The ``backend`` of a case is a *row label* (``Variant``, ``EXTRA_VARIANTS``): a registered backend's name, or one
of these, which run a registered backend another way (head cases only, not the sweeps; in ``gpu``, P2 only):

* ``cpp_nhwc`` / ``cuda_nhwc`` / ``compiled_nhwc``: ``cpp`` / ``cuda`` / ``compiled`` on a ``torch.channels_last``
  feature map and upstream gradient (made so outside the timer); the output is channels_last too (CONVENTIONS.md
  §6). ``compiled`` reads a channels_last map in place and copies an NCHW one, so both rows say what it costs.
* ``cpp_nhwc+convert``: ``cpp_nhwc`` for a user whose tensors are NCHW: the feature map is converted to
  channels_last and the output back to NCHW inside every call (their backward copies too), so the row is set
  against an NCHW peer (torchvision) on the same tensors. Single-map ops only (a multi-level pooler would copy the
  whole pyramid per call).
* ``tensorflow+convert``: ``impls.crop_and_resize(backend="tensorflow")``, what a PyTorch user of our wrapper pays:
  NCHW torch -> NHWC numpy -> TensorFlow and back inside every call.

A peer's own label (a backend whose record says ``peer=True``: ``torchvision``, ``tensorflow``, ``onnxruntime``,
``openvino``, ``grid_sample``, ``kornia``) is timed as its users run it: its own API on its own tensors
(``calls.py``), not through ``impls``. The inference runtimes (``onnxruntime``, ``openvino``: no ``backward_input``)
have forward rows only. ``kornia`` takes one box per image (its record's ``one_box_per_image``), so it runs only
``BATCH_CROPS``: crop_and_resize on a batch of maps with one box each (``smoke``: 8 tiny maps, for kornia alone;
``default`` and ``full``: 32 P3 maps, every crop_and_resize backend). ``RGB_PATCHES``: crop_and_resize as data
augmentation runs it, many patches from each of a batch of RGB images into 64x64 crops (``smoke``: a toy version),
every crop_and_resize backend but kornia (several boxes per image), head-case labels (``cpp_nhwc`` too).

Write-limit rows (``limit_cases``, issue 29): for each crop_and_resize head case, device, dtype and pass, three row
labels that time no backend (``LIMIT_LABELS``, ``calls.limit_call``) on tensors of the sizes that pass writes
(``work.written_shapes``: the crops, plus the image gradient, plus the box gradient): ``limit_fill`` fills reused
buffers, ``limit_copy`` copies reused buffers into others (the machine's write-bandwidth limits for that output),
``fresh_fill`` allocates new ones and fills them (their first-touch cost beside ``limit_fill``). Their JSON rows
carry ``write_limit``; the report reads them beside the case (a share of the limit per row), never as a backend.
``make bench`` runs ``test_crop_and_resize.py`` a second time under an allocator that keeps freed pages
(``bench/allocator.py``, ``bench/run.py``).

Read-limit rows (``read_limit_cases``, issue 29; ``test_crop_and_resize_read_limit.py``): for each crop_and_resize
head case, float32 forward on the CPU, a row per layout (``READ_LIMIT_LABELS``: ``read_nchw``, ``read_nhwc``) that
loads the cache lines the forward's taps touch in that layout (``work.touched_lines``), each once, in a loop of
nothing else (``calls.read_limit_call``, ``bench/read_lines.cpp``): what reading them costs on this machine with no
sampling, no write and no reuse to arrange. Their JSON rows carry ``read_limit``; the report sets the forward of
each layout against its limit.

Multi-level pooling (op ``multiscale_roi_align``, ``multiscale_cases``; issue 21): Mask R-CNN's FPN poolers on two
800x1216 images, P2-P5 with C=256 (``workloads.PYRAMIDS``), ``sampling_ratio=2``, ``aligned=False`` (torchvision's
pooler): the box head at inference (1000 proposals per image, 7x7, forward), in training (512 per image, 7x7,
forward + backward to the maps) and the mask head (100 per image, 14x14, forward + backward). ``smoke``: a toy
pyramid instead (2 images, 8 boxes each, spread over the four levels), forward and forward + backward.
``smoke``, ``default`` and ``gpu``: every backend that runs on the device but those in ``PYRAMID_FULL_ONLY``, with
its extra variants, float32; ``gpu`` adds the deterministic backward (``cuda``). ``full``: every backend, every
pyramid workload (the toy one too) forward and forward + backward (deterministic too for ``cuda``), in float32 and
float64, half precision on the toy pyramid only (``PYRAMID_HALF_DTYPES``).
Every backend that has ``roi_align`` runs it (``baseline.KERNEL_OP``: level by level where its record has no
multi-level kernel); the peer is ``torchvision.ops.MultiScaleRoIAlign``. No box gradients: the peer has none, and
a detector's pooler needs none (its boxes are proposals, detached).

An operator whose benchmark module (``bench/operators/<op>.py``) has ``workloads`` runs those instead of the head
cases (``own_cases``, in its own suite ``bench/test_<op>.py``), box gradients on its ``HEADLINE``, its peers'
``FIXED_SAMPLING_ONLY`` kept out of the adaptive cases; the module's docstring says which and why.
"""

from __future__ import annotations

import dataclasses
import itertools
import os

import operators
import pytest
import torch
from baseline import kernel_op
from workloads import PyramidWorkload, Workload

from impls import resolve_backend
from impls.core.registry import registered

MODES = ("smoke", "default", "full", "gpu")
MODE = os.environ.get("BENCH", "default")
if MODE not in MODES:
    raise ValueError(f"BENCH={MODE!r}; use one of {', '.join(MODES)}")

# fwd: forward alone. fwdbwd: forward + backward to the image only, the work every backend (torchvision
# included) can do, so their times compare. fwdbwd_det: the same under torch.use_deterministic_algorithms(True)
# (calls.py), for the backends whose image gradient has a deterministic variant (DETERMINISTIC_BACKENDS; cpp is
# always deterministic, torchvision's CUDA backward refuses to run in that mode). fwdbwd_boxes: image and box
# gradients, for backends that offer them.
PASSES = ("fwd", "fwdbwd", "fwdbwd_det", "fwdbwd_boxes")
DETERMINISTIC_BACKENDS = ("cuda",)
ORACLE = "reference"
# The multi-level pooler's op name (``multiscale_cases``), beside the registry's ops.
MULTISCALE = "multiscale_roi_align"
# For --collect-only on a machine without a GPU: pretend there is one (the cuda backend counts as available).
ASSUME_GPU = os.environ.get("BENCH_ASSUME_GPU") == "1"
HAVE_GPU = torch.cuda.is_available() or ASSUME_GPU
if MODE == "gpu" and not HAVE_GPU:
    raise RuntimeError("BENCH=gpu needs a CUDA GPU (BENCH_ASSUME_GPU=1 pytest --collect-only to count its cases)")
DEVICES = ("cuda",) if MODE == "gpu" else ("cpu", "cuda") if HAVE_GPU else ("cpu",)
GPU_DTYPES = ("float32", "float16", "bfloat16")
# BENCH=gpu: our CUDA kernel, timed in every GPU_DTYPES beside the peers (the kernels users compare).
GPU_ALL_DTYPES_OURS = ("cuda",)
ARGNAMES = ("op", "backend", "device", "dtype", "case", "pass_")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row label of the tables: which registered backend computes, and how it is called (``calls.py``)."""

    label: str  # the ``backend`` field of ids, JSON, report and notebook 3
    backend: str  # the registered backend that computes
    layout: str = "contiguous"  # of the feature map and upstream gradient: "contiguous" (NCHW) or "channels_last"
    native: bool = False  # a peer called through its own API on its own tensors (no impls, no conversion inside)
    # Memory format the call converts the feature map to inside the timer ("channels_last"), or None: the row of a
    # user whose tensors are NCHW and who runs the channels_last kernel anyway (``cpp_nhwc+convert``).
    converts_to: str | None = None

    @property
    def extra(self) -> bool:
        """A second way of running a backend: head cases only (not the sweeps)."""
        return self.label != self.backend


# Registered backend -> its extra row labels.
EXTRA_VARIANTS = {
    "cpp": (Variant("cpp_nhwc", "cpp", layout="channels_last"),
            Variant("cpp_nhwc+convert", "cpp", converts_to="channels_last")),
    "compiled": (Variant("compiled_nhwc", "compiled", layout="channels_last"),),
    "cuda": (Variant("cuda_nhwc", "cuda", layout="channels_last"),),
    "tensorflow": (Variant("tensorflow+convert", "tensorflow"),),
}


def variants(name: str) -> tuple[Variant, ...]:
    """The row labels of registered backend ``name``: itself first, then its extra variants."""
    return (Variant(name, name, native=registered()[name].peer),) + EXTRA_VARIANTS.get(name, ())


def variant(label: str) -> Variant:
    """The Variant behind a row label (a registered backend's own name, or an extra label)."""
    for extra in (v for vs in EXTRA_VARIANTS.values() for v in vs):
        if extra.label == label:
            return extra
    return variants(label)[0]


def all_gpu_dtypes(name: str) -> bool:
    """Whether BENCH=gpu times row label or backend ``name`` in every GPU_DTYPES and past the P2 head cases: a
    peer's own label, or one of GPU_ALL_DTYPES_OURS."""
    return name in GPU_ALL_DTYPES_OURS or (name in registered() and registered()[name].peer)


TINY = Workload("tiny", boxes=8, output=7, sampling_ratio=2)
BOX_HEAD = Workload("p2", boxes=512, output=7, sampling_ratio=2)  # the headline case
# crop_and_resize on a batch, one box per image: the only call kornia's API takes (CONVENTIONS.md §8.4), every
# crop_and_resize backend beside it. Its 32 P3 maps are 500 MB (a batch of P2 maps would be 2 GB).
BATCH_CROPS = {"smoke": Workload("tiny", boxes=8, output=7, sampling_ratio=2, images=8),
               "default": Workload("p3", boxes=32, output=7, sampling_ratio=2, images=32)}
# crop_and_resize as data augmentation: 8 RGB images 512x512, 256 patches of 32-256 px (32 per image; workloads.py's
# ``rgb``) into 64x64 crops (``output`` 32: the crop is 2 x output). ``smoke``: 2 images 32x32, 8 patches, 8x8.
RGB_PATCHES = {"smoke": Workload("tiny_rgb", boxes=8, output=4, sampling_ratio=2, images=2),
               "default": Workload("rgb", boxes=256, output=32, sampling_ratio=2, images=8)}
# Row labels that time no backend: the write-bandwidth limits of a case's outputs and a fresh output's cost
# (module docstring).
LIMIT_LABELS = ("limit_fill", "limit_copy", "fresh_fill")
# Row labels that time no backend: the reads a crop_and_resize forward cannot avoid, in each layout (module docstring).
READ_LIMIT_LABELS = {"read_nchw": "contiguous", "read_nhwc": "channels_last"}
# The sweeps: smoke runs one point of each on the tiny map, so that the code path is exercised in CI.
BOX_SWEEP_BOXES = {"smoke": (16,), "default": (16, 128, 1024), "full": (16, 64, 256, 1024, 4096),
                   "gpu": (64, 256, 1024, 4096)}
# P5's 25x38 map scaled up to P2's 200x304 (default) or beyond; same boxes (14-28 px on the map), same work.
MAP_SWEEP_SCALES = {"smoke": (2,), "default": (1, 2, 4, 8), "full": (1, 2, 4, 8, 16), "gpu": (1, 4, 16)}


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark: an op on one workload, by one backend, device, dtype and pass."""

    op: str
    backend: str
    device: str
    dtype: str
    workload: Workload
    pass_: str

    @property
    def case_id(self) -> str:
        """The workload as this op sees it: ``p2_k512_7x7_sr2`` (roi_align), ``p2_k512_14x14`` (crop_and_resize),
        ``p2p5_2x1000_7x7_sr2`` (multiscale_roi_align)."""
        return self.workload.crop_id if self.op == "crop_and_resize" else self.workload.id

    @property
    def id(self) -> str:
        """e.g. ``roi_align-cpp-cpu-float32-p2_k512_7x7_sr2-fwd``."""
        return "-".join((self.op, self.backend, self.device, self.dtype, self.case_id, self.pass_))

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def variant(self) -> Variant:
        """How ``backend`` (a row label) runs: which registered backend, layout, native or through impls."""
        return variant(self.backend)

    def param(self):
        return pytest.param(self.op, self.backend, self.device, self.dtype, self.case_id, self.pass_, id=self.id)


def _head_workloads(mode: str) -> list[Workload]:
    if mode == "smoke":
        return [TINY]
    levels = ("p2",) if mode == "default" else ("p2", "p3", "p4", "p5")
    box_head_counts = (512,) if mode == "default" else (512, 1000)
    mask_head_counts = (128,) if mode == "default" else (128, 100)  # full and gpu: both
    heads = [(7, k) for k in box_head_counts] + [(14, k) for k in mask_head_counts]
    workloads = [
        Workload(level, boxes=k, output=output, sampling_ratio=sr)
        for level, (output, k), sr in itertools.product(levels, heads, (2, 0))
    ]
    return workloads + ([TINY] if mode == "full" else [])


def _sweep_bases(mode: str) -> tuple[Workload, Workload]:
    """The workloads the box-count and the map-size sweeps vary."""
    return (TINY, TINY) if mode == "smoke" else (BOX_HEAD, Workload("p5", boxes=512, output=7, sampling_ratio=2))


def _sweep_workloads(mode: str) -> list[Workload]:
    box_base, map_base = _sweep_bases(mode)
    boxes = [dataclasses.replace(box_base, boxes=k) for k in BOX_SWEEP_BOXES[mode]]
    maps = [dataclasses.replace(map_base, map_scale=s) for s in MAP_SWEEP_SCALES[mode]]
    if mode == "gpu":  # points that are head cases are timed there (and labelled as sweep points, sweep_of)
        heads = _head_workloads(mode)
        return [w for w in boxes + maps if w not in heads]
    return boxes + maps


def sweep_of(workload: Workload | PyramidWorkload, mode: str = MODE) -> str | None:
    """``"boxes"`` or ``"map_size"`` when ``workload`` is a point of that sweep (a head case can be one: the P2
    box head is the box sweep's 512-box point), else None. The report plots the sweeps from this label."""
    if isinstance(workload, PyramidWorkload):
        return None
    box_base, map_base = _sweep_bases(mode)
    if dataclasses.replace(workload, boxes=box_base.boxes) == box_base:
        return "boxes"
    if dataclasses.replace(workload, map_scale=map_base.map_scale) == map_base:
        return "map_size"
    return None


def _dtypes(mode: str, label: str, backend_dtypes: tuple[torch.dtype, ...], workload: Workload) -> list[str]:
    names = [str(d).removeprefix("torch.") for d in backend_dtypes]
    if mode == "full":
        return names
    if mode == "gpu":
        # The kernels users compare in every GPU dtype on the head cases; the other backends (vectorized: pure
        # torch, the slow one), the extra variants (cuda_nhwc) and the sweeps in float32 only.
        heads = all_gpu_dtypes(label) and workload in _head_workloads(mode)
        return [d for d in (GPU_DTYPES if heads else ("float32",)) if d in names]
    # Half precision once, on the headline case, by the backend ``auto`` picks (cpp on the CPU, cuda on a GPU), in
    # both layouts: what a user gets by default, without doubling the run.
    auto = {resolve_backend("auto", "roi_align", device) for device in DEVICES}
    half = (mode == "default" and workload == BOX_HEAD and variant(label).backend in auto
            and variant(label).converts_to is None)
    return [d for d in (["float32", "bfloat16"] if half else ["float32"]) if d in names]


def _passes(mode: str, workload: Workload, dtype: str, headline: Workload = BOX_HEAD) -> tuple[str, ...]:
    if mode == "gpu":
        # Box gradients in float32 on the headline's level (P2) only: the kernels' other dtypes and levels add
        # little but minutes.
        return PASSES[:3] + (PASSES[3:] if dtype == "float32" and workload.level == headline.level else ())
    # The deterministic and box-gradient passes once, on the headline case in float32, unless everything is
    # asked for.
    if mode == "default" and (workload != headline or dtype != "float32"):
        return PASSES[:2]
    return PASSES


def _labels(mode: str, workload: Workload, head: bool, headline: Workload = BOX_HEAD) -> list[Variant]:
    """The row labels that run ``workload``: every registered backend, plus the extra variants on head cases
    (in ``gpu``: every backend and variant on the head cases of the headline's level, P2, only ``all_gpu_dtypes``
    ones on the others)."""
    extra = head and (mode != "gpu" or workload.level == headline.level)
    labels = [v for name in registered() for v in variants(name) if extra or not v.extra]
    if mode == "gpu" and not (head and workload.level == headline.level):
        # Past the P2 head cases, only the kernels users compare (all_gpu_dtypes).
        labels = [v for v in labels if all_gpu_dtypes(v.backend)]
    return labels


def _batch_workloads(op: str, mode: str, batches: dict[str, Workload] = BATCH_CROPS) -> list[Workload]:
    """``BATCH_CROPS`` (or ``RGB_PATCHES``): crop_and_resize only, in ``smoke``, ``default`` and ``full`` (which
    takes ``default``'s)."""
    batch = batches.get("default" if mode == "full" else mode)
    return [batch] if op == "crop_and_resize" and batch is not None else []


def _cases(op: str, workloads: list[Workload], mode: str, passes=None, head: bool = True,
           headline: Workload = BOX_HEAD) -> list[Case]:
    # Ordered workload > dtype > pass > backend, so that consecutive cases share one peer result (check.py).
    cases = {}
    for workload in workloads:
        labels = _labels(mode, workload, head, headline)
        # Every dtype some backend runs, in order, once.
        dtypes = dict.fromkeys(
            d for v in labels for d in _dtypes(mode, v.label, registered()[v.backend].dtypes, workload)
        )
        for dtype, pass_ in itertools.product(dtypes, PASSES):
            for v in labels:
                backend = registered()[v.backend]
                if pass_ not in (passes or _passes(mode, workload, dtype, headline)):
                    continue
                if not _supports(v, op, dtype, workload, mode):
                    continue
                if pass_ == "fwdbwd_boxes" and not _box_gradients(backend, op, dtype):
                    continue
                if pass_ == "fwdbwd_det" and v.label not in DETERMINISTIC_BACKENDS:
                    continue
                if pass_ != "fwd" and not backend.kernels[kernel_op(op)].input_grad:  # an inference runtime
                    continue
                for device in (d for d in DEVICES if d in backend.devices):
                    case = Case(op, v.label, device, dtype, workload, pass_)
                    # sr2 and sr0 share one crop_and_resize case: keep the first.
                    cases.setdefault(case.id, case)
    return list(cases.values())


def _supports(v: Variant, op: str, dtype: str, workload: Workload | PyramidWorkload, mode: str) -> bool:
    backend = registered()[v.backend]
    if kernel_op(op) not in backend.kernels or not (backend.available or (ASSUME_GPU and "cuda" in backend.devices)):
        return False
    if backend.name == ORACLE and workload.level != "tiny":
        return False
    if backend.kernels[kernel_op(op)].one_box_per_image and workload.images != workload.boxes:
        return False  # kornia: box k on image k only; a head's boxes share one image
    if workload.sampling_ratio <= 0 and backend.name in operators.fact(kernel_op(op), "FIXED_SAMPLING_ONLY", ()):
        return False
    return dtype in _dtypes(mode, v.label, backend.dtypes, workload)


def _box_gradients(backend, op: str, dtype: str) -> bool:
    # crop_and_resize's box gradients are in normalized units, (H - 1) times the pixel ones: on P2 they reach
    # 1.7e5, past float16's largest finite value (65504), and come out inf. Not a benchmark worth running.
    if op == "crop_and_resize" and dtype == "float16":
        return False
    return backend.kernels[kernel_op(op)].boxes_grad


def head_cases(op: str, mode: str = MODE) -> list[Case]:
    """The detector-head cases of ``op``: P2 (P2-P5 in ``full``) box and mask heads; for crop_and_resize also a
    batch with one box per image (``BATCH_CROPS``) and one of RGB patches (``RGB_PATCHES``)."""
    batch = _cases(op, _batch_workloads(op, mode), mode)
    if mode == "smoke":  # one tiny case per backend: the batch only for those that run no head case (kornia)
        batch = [c for c in batch if registered()[c.variant.backend].kernels[kernel_op(op)].one_box_per_image]
    return _cases(op, _head_workloads(mode), mode) + batch + _cases(op, _batch_workloads(op, mode, RGB_PATCHES), mode)


def limit_cases(op: str, mode: str = MODE) -> list[Case]:
    """The write-limit rows (module docstring): ``LIMIT_LABELS`` once per head case, device, dtype and pass of
    ``op`` (crop_and_resize only), but ``fwdbwd_det``, which writes what ``fwdbwd`` does (the report reads that)."""
    if op != "crop_and_resize":
        return []
    timed = {(c.case_id, c.device, c.dtype, c.pass_): c for c in head_cases(op, mode) if c.pass_ != "fwdbwd_det"}
    return [dataclasses.replace(c, backend=label) for c in timed.values() for label in LIMIT_LABELS]


def read_limit_cases(op: str, mode: str = MODE) -> list[Case]:
    """The read-limit rows (module docstring): ``READ_LIMIT_LABELS`` once per head case of ``op`` (crop_and_resize
    only), float32 forward on the CPU."""
    if op != "crop_and_resize" or "cpu" not in DEVICES:
        return []
    timed = {c.case_id: c for c in head_cases(op, mode) if c.device == "cpu" and c.dtype == "float32"}
    return [Case(op, label, "cpu", "float32", c.workload, "fwd") for c in timed.values() for label in READ_LIMIT_LABELS]


def sweep_cases(op: str, mode: str = MODE) -> list[Case]:
    """Box-count and map-size sweeps (fwd and fwdbwd); ``roi_align`` only, except in ``full`` and ``smoke``."""
    if op == "crop_and_resize" and mode in ("default", "gpu"):
        return []
    return _cases(op, _sweep_workloads(mode), mode, passes=PASSES[:2], head=False)


def own_cases(op: str, mode: str = MODE) -> list[Case]:
    """The cases of an operator with workloads of its own (``bench/operators/<op>.py``: ``workloads``, ``HEADLINE``),
    ordered workload > dtype > pass > backend as ``_cases``."""
    return _cases(op, operators.fact(op, "workloads")(mode), mode, headline=operators.fact(op, "HEADLINE"))


# Mask R-CNN's poolers (issue 21): the box head at inference and in training, the mask head; and a toy pyramid.
FPN_BOX_INFERENCE = PyramidWorkload("p2p5", images=2, boxes_per_image=1000, output=7, sampling_ratio=2)
FPN_BOX_TRAINING = PyramidWorkload("p2p5", images=2, boxes_per_image=512, output=7, sampling_ratio=2)
FPN_MASK_HEAD = PyramidWorkload("p2p5", images=2, boxes_per_image=100, output=14, sampling_ratio=2)
TINY_PYRAMID = PyramidWorkload("tiny", images=2, boxes_per_image=8, output=7, sampling_ratio=2)
# Registered backends that run the multi-level cases only in ``full``, by mode. ``compiled``: its first calls
# compile graphs for ``aligned=False`` and for each level's map size, which says more about Inductor than about
# pooling and would be most of the smoke run (its pooling is tested in tests/). ``vectorized`` in ``default``: on
# the CPU it is several times slower than torchvision's pooler (its single-level rows show it) and its rounds would
# take longer than every other multi-level case together.
PYRAMID_FULL_ONLY = {"smoke": ("compiled",), "default": ("vectorized", "compiled"), "gpu": ("compiled",)}
# The peers with a multi-level pooler of their own, timed as such (the runtimes have none: a deployed model runs one
# RoiAlign per level, as impls/core/onnx_export.py and impls/ops/<op>/onnx.py writes it).
PYRAMID_PEERS = ("torchvision",)
# Half precision on the toy pyramid only. In float16 and bfloat16 a box's level is computed in that dtype (as
# torchvision's LevelMapper does), whose spacing between 4 and 8 is 2**-8 and 2**-5: of Mask R-CNN's thousands of
# proposals some lie that close to a level boundary and are pooled from the neighbouring map, which no tolerance
# of the check against a float64 peer allows. The toy pyramid's boxes are >= 0.05 from every boundary (log2 units).
PYRAMID_HALF_DTYPES = ("float16", "bfloat16")


def _pyramid_workloads(mode: str) -> dict[PyramidWorkload, tuple[str, ...]]:
    """Multi-level workload -> the passes it is timed in: what a detector runs it for (module docstring)."""
    if mode == "smoke":
        return {TINY_PYRAMID: PASSES[:2]}
    if mode == "full":
        return {w: PASSES[:3] for w in (FPN_BOX_INFERENCE, FPN_BOX_TRAINING, FPN_MASK_HEAD, TINY_PYRAMID)}
    training = PASSES[1:3] if mode == "gpu" else PASSES[1:2]
    return {FPN_BOX_INFERENCE: PASSES[:1], FPN_BOX_TRAINING: training, FPN_MASK_HEAD: training}


def multiscale_cases(mode: str = MODE) -> list[Case]:
    """The multi-level pooler cases (module docstring), ordered workload > dtype > pass > backend as ``_cases``."""
    skip = PYRAMID_FULL_ONLY.get(mode, ())
    labels = [v for name in registered() if name not in skip for v in variants(name)
              if (not v.native or v.backend in PYRAMID_PEERS) and v.converts_to is None]
    cases = []
    for workload, passes in _pyramid_workloads(mode).items():
        dtypes = dict.fromkeys(
            d for v in labels for d in _dtypes(mode, v.label, registered()[v.backend].dtypes, workload)
            if workload == TINY_PYRAMID or d not in PYRAMID_HALF_DTYPES
        )
        for dtype, pass_ in itertools.product(dtypes, passes):
            for v in labels:
                if not _supports(v, MULTISCALE, dtype, workload, mode):
                    continue
                if pass_ == "fwdbwd_det" and v.label not in DETERMINISTIC_BACKENDS:
                    continue
                devices = registered()[v.backend].devices
                cases += [Case(MULTISCALE, v.label, device, dtype, workload, pass_) for device in DEVICES
                          if device in devices]
    return cases


def params(cases: list[Case]) -> list:
    return [case.param() for case in cases]


def find(op: str, backend: str, device: str, dtype: str, case_id: str, pass_: str) -> Case:
    """The Case behind one set of pytest params (params are plain strings so that JSON and group-by read them)."""
    batch = _batch_workloads(op, MODE) + _batch_workloads(op, MODE, RGB_PATCHES)
    workloads = _head_workloads(MODE) + batch + _sweep_workloads(MODE) + list(_pyramid_workloads(MODE))
    own = operators.fact(op, "workloads")
    for workload in workloads + (own(MODE) if own else []):
        case = Case(op, backend, device, dtype, workload, pass_)
        if case.case_id == case_id:
            return case
    raise KeyError(f"no workload {case_id!r} for {op} in BENCH={MODE}")
