"""The public ops read tensor values (box indices, finiteness) once per call: on CUDA each read is a device-to-host
synchronization inside every training step, and torchvision makes none. One read per call is the budget. On the CPU
the read is one operator of the extension (``checks.read_stats``), which returns numbers: no torch operator reads a
value there either."""

import warnings

import cases
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import impls
from impls.core import checks


class _CountScalarReads(TorchDispatchMode):
    """Counts ``.item()``/``bool()``/``int()`` on tensors (each is one ``aten._local_scalar_dense``), and apart
    the operators whose output size depends on values (``nonzero``, behind ``torch.where(mask)`` and boolean
    indexing; the adaptive grid's grouping of boxes by grid size is one, by design). Each is a device-to-host read
    on CUDA."""

    def __init__(self):
        super().__init__()
        self.count = 0
        self.sized = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        if func is torch.ops.aten.nonzero.default:
            self.sized += 1
        return func(*args, **(kwargs or {}))


def _calls(device):
    x = torch.randn(2, 3, 8, 9, device=device)
    rois = torch.tensor([[0, 1.0, 1, 6, 5], [1, 0.5, 2, 4, 7]], device=device)
    boxes = torch.tensor([[0.1, 0.2, 0.7, 0.9], [0.0, 0.0, 1.0, 1.0]], device=device)
    box_index = torch.tensor([0, 1], device=device)
    return {
        "roi_align": lambda backend: impls.roi_align(x, rois, 3, 0.5, 2, True, backend=backend),
        "roi_align_list": lambda backend: impls.roi_align(x, [rois[:1, 1:], rois[1:, 1:]], 3, backend=backend),
        "crop_and_resize": lambda backend: impls.crop_and_resize(x, boxes, box_index, 3, backend=backend),
        # two levels (the second map half the first's size), one box on each: 4 px on P2, 40 px on P3
        "multiscale_roi_align": lambda backend: impls.multiscale_roi_align(
            [x, x[:, :, ::2, ::2]], [rois[:1, 1:], rois[1:, 1:] * 10], [(32, 36)] * 2, 3, 2,
            canonical_scale=20, backend=backend),
    }


CALLS = ("roi_align", "roi_align_list", "crop_and_resize", "multiscale_roi_align")
# Our backends on the CPU but ``compiled``, whose compiled steps cannot run under a dispatch mode (its Python
# around them is ``vectorized``'s), and ``reference``, whose loops over boxes read values (it runs on the CPU only).
CPU_BACKENDS = [b for b in cases.backends_for("roi_align", "cpu", torch.float32, exclude=cases.PEERS)
                if b not in ("compiled", "reference")]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("call", CALLS)
def test_one_value_read_per_call(call, backend, monkeypatch):
    reads = []
    read_stats = checks.read_stats
    monkeypatch.setattr(checks, "read_stats", lambda *args: reads.append(args) or read_stats(*args))
    with _CountScalarReads() as scalars:
        _calls("cpu")[call](backend)
    assert len(reads) == 1, f"{len(reads)} batched reads"
    assert scalars.count == 0, f"{scalars.count} extra scalar reads (.item(), bool(), int()) of tensors"


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_multiscale_levels_are_pooled_without_reading_values(backend):
    # The level of each box stays on the device: no count of boxes per level is read back (that read would be a
    # sync on CUDA, stop a CUDA graph capture and give torch.compile a data-dependent shape).
    with _CountScalarReads() as reads:
        _calls("cpu")["multiscale_roi_align"](backend)
    assert reads.sized == 0, f"{reads.sized} value-dependent sizes (torch.where(mask), nonzero, boolean index)"


if "cuda" in cases.DEVICES:  # defined only where it can run: no skipped test on a CPU machine

    @pytest.mark.parametrize("backend", cases.backends_for("roi_align", "cuda", torch.float32, exclude=cases.PEERS))
    @pytest.mark.parametrize("call", CALLS)
    def test_one_cuda_sync_per_forward(call, backend):
        fn = _calls("cuda")[call]
        fn(backend)  # warm-up: first-call allocations and compiles are not the op's
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fn(backend)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        syncs = [w for w in caught if "synchroniz" in str(w.message)]
        assert len(syncs) <= 1, [str(w.message) for w in syncs]
