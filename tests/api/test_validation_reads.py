"""The public ops read tensor values (box indices, finiteness) once per call: on CUDA each read is a device-to-host
synchronization inside every training step, and torchvision makes none. One read per call is the budget."""

import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import cases
import impls
from impls import _validation


class _CountScalarReads(TorchDispatchMode):
    """Counts ``.item()``/``bool()``/``int()`` on tensors (each is one ``aten._local_scalar_dense``)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
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
    }


@pytest.mark.parametrize("call", ("roi_align", "roi_align_list", "crop_and_resize"))
def test_one_value_read_per_call(call, monkeypatch):
    reads = []
    read = _validation._read
    monkeypatch.setattr(_validation, "_read", lambda stats: reads.append(stats.numel()) or read(stats))
    with _CountScalarReads() as scalars:
        _calls("cpu")[call]("vectorized")
    assert len(reads) == 1, f"{len(reads)} batched reads"
    assert scalars.count == 0, f"{scalars.count} extra scalar reads (.item(), bool(), int()) of tensors"


if "cuda" in cases.DEVICES:  # defined only where it can run: no skipped test on a CPU machine

    @pytest.mark.parametrize("call", ("roi_align", "roi_align_list", "crop_and_resize"))
    def test_one_cuda_sync_per_forward(call):
        fn = _calls("cuda")[call]
        fn("cuda")  # warm-up: first-call allocations are not the op's
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fn("cuda")
        finally:
            torch.cuda.set_sync_debug_mode("default")
        syncs = [w for w in caught if "synchroniz" in str(w.message)]
        assert len(syncs) <= 1, [str(w.message) for w in syncs]
