"""The check before timing: each case's results against a peer's, on the same (dtype-rounded) inputs.

A benchmark of a wrong result is worthless, so every case asserts, once, that what it is about to time agrees
with another implementation: the op's peer (``baseline.py``, from the backend records: ``torchvision`` for
``roi_align``, ``tensorflow`` for ``crop_and_resize``, the projects users compare against); when the case *is* that
peer, or the peer lacks the pass (box gradients), the next of ``cpp``, ``vectorized``. ``reference`` stands in
only on the tiny workload (it is pure Python). The peer runs on the CPU, in float64 when it can (``tensorflow``:
float32 only), on the case's inputs rounded to its dtype.

``BENCH=gpu`` (CUDA cases only) prefers the peers that run on the case's GPU and runs them there, in float64:
``torchvision``'s CUDA kernel, else ``vectorized`` on CUDA (itself checked against ``reference`` by the tests),
else ``cpp`` on the CPU. A CPU peer in float64 on a P2 crop (50M outputs) would take longer than the case.
``fwdbwd_det`` is checked against the peer's ``fwdbwd`` (torchvision's CUDA backward refuses deterministic mode).

Both sides are the results of the calls the benchmark times (``calls.make_call``): the peers run natively
(``torchvision.ops.roi_align``; TensorFlow's ops on NHWC tensors), and their results are converted to NCHW torch
tensors here, outside any timer. A row label is never checked against its own backend (``tensorflow+convert`` is
checked against ``cpp``, not against ``tensorflow``); ``cpp_nhwc``'s channels_last results are compared as values.
Only a peer with our semantics on every input serves as the reference (not ``grid_sample`` or ``kornia``), and only
for the passes it computes (the inference runtimes: forward). ``grid_sample`` and ``kornia`` themselves, which blend
at the border where TensorFlow extrapolates (CONVENTIONS.md §8.3), are checked on the workload's boxes that lie
inside the image (the op's ``inside``, ``bench/operators/<op>.py``: every sample and tap inside the map).
"""

from __future__ import annotations

import dataclasses

import matrix
import operators
import torch
from baseline import kernel_op, peers
from calls import AnyInputs, Inputs, make_call
from matrix import MULTISCALE, ORACLE, Case

from impls.core import tolerance as _tolerance
from impls.core.registry import registered

# Checked against, in order: the op's peers (``baseline.peers``: the first is the one users compare against), then
# these of ours.
OURS_IN_CHECK_ORDER = ("cpp", "vectorized", ORACLE)

# Allowed max |result - peer| over max |peer|, by the case's dtype: the tests' table (impls/core/tolerance.py, with
# its reasons), seen to hold on the default matrix (float32: up to 3.5e-5, outputs and gradients alike; bfloat16:
# 3.2e-3). float64 alone is scaled: its bound is a few ulps per term summed, and a box gradient here sums up to
# BENCH_TERMS terms (a P2 case), 100 times the tests' maps (_tolerance.TERMS).
BENCH_TERMS = 1e5
TOLERANCE = {
    **_tolerance.TOLERANCE,
    torch.float64: _tolerance.TOLERANCE[torch.float64] * BENCH_TERMS / _tolerance.TERMS,
}
# Multi-level pooling (``multiscale_roi_align``) is checked with the same table: each output element is one box's
# bins from one map and each map's gradient sums its boxes' samples, as for roi_align, and torchvision's pooler in
# float64 on the float32-rounded boxes is the reference. Both sides assign levels with torchvision's expression; on
# these fixed-seed boxes float32 and float64 pick the same level for every box (the nearest to a level boundary is
# 4e-6 from it in log2 units, ~9x float32's rounding there): a box pooled from another map would fail the check by
# O(1), not by rounding. Seen on the default cases: ours 5e-7, torchvision's float32 pooler against cpp in float64
# 3e-5 (it computes sample positions with a different rounding), within float32's 1e-4.
# torchvision computes float16 in float16, sample coordinates included: near x = 300 px (a P2 map is 304 wide)
# float16 steps by 0.25 px, so samples move by up to ~0.25 px and their values by that times the slope of a
# standard-normal map (neighbours differ by up to ~4): ~1 against a largest output of ~3. Seen: 0.25.
# grid_sample and kornia place samples by another float32 formula (a grid in [-1, 1] that grid_sample scales back by
# (W - 1)/2; kornia's from a solved homography): on a P2 map's 300 px each position is a few float32 ulps (3e-5 px)
# off TensorFlow's, times value slopes up to ~4 against a largest output of ~4.5. Seen 7.2e-5 (grid_sample, P2
# crop), at float32's 1e-4.
PEER_TOLERANCE = {("torchvision", torch.float16): 0.5, ("grid_sample", torch.float32): 3e-4,
                  ("kornia", torch.float32): 3e-4}

# The pass whose result a peer computes for a case's pass.
PEER_PASS = {"fwdbwd_det": "fwdbwd"}

# The peers' results for one (op, case, pass, dtype): consecutive cases share them (matrix order).
_last_peer: dict[tuple, tuple[torch.Tensor, ...]] = {}


def _peer_order(case: Case) -> tuple[str, ...]:
    order = peers(case.op) + OURS_IN_CHECK_ORDER
    if matrix.MODE != "gpu":
        return order

    def elsewhere(name: str) -> bool:
        backend = registered().get(name)
        return backend is None or case.device not in backend.devices

    return tuple(sorted(order, key=elsewhere))  # stable: same-device peers first, in check order


def choose_peer(case: Case) -> str:
    """The implementation ``case`` is checked against."""
    for name in _peer_order(case):
        backend = registered().get(name)
        op = kernel_op(case.op)
        if name == case.variant.backend or backend is None or not backend.available or op not in backend.kernels:
            continue
        if name == ORACLE and case.workload.level != "tiny":
            continue
        if case.pass_ == "fwdbwd_boxes" and not backend.kernels[op].boxes_grad:
            continue
        if case.pass_ != "fwd" and not backend.kernels[op].input_grad:
            continue
        if backend.kernels[op].differs is not None:  # only a peer with our semantics everywhere is a reference
            continue
        return name
    raise LookupError(f"no peer available to check {case.id}")


def _peer_dtype(peer: str) -> torch.dtype:
    dtypes = registered()[peer].dtypes
    return torch.float64 if torch.float64 in dtypes else torch.float32


def _peer_device(case: Case, peer: str) -> str:
    if matrix.MODE == "gpu" and case.device in registered()[peer].devices:
        return case.device
    return "cpu"


def _peer_results(case: Case, peer: str, inputs: AnyInputs) -> tuple[torch.Tensor, ...]:
    pass_ = PEER_PASS.get(case.pass_, case.pass_)
    device = _peer_device(case, peer)
    shared = (case.op, case.case_id, pass_, case.dtype, _differs(case))  # _differs: on the interior boxes only
    if any(key[:5] != shared for key in _last_peer):
        _last_peer.clear()
    key = (*shared, peer, device)
    if key not in _last_peer:
        _last_peer[key] = make_call(peer, pass_, inputs.to(device, _peer_dtype(peer))).results()
    return _last_peer[key]


def tolerance(case: Case, peer: str) -> float:
    """The looser of the case's and the peer's precision (a float64 case checked against float32 tensorflow gets
    float32's tolerance)."""
    return max(
        TOLERANCE[case.torch_dtype],
        TOLERANCE[_peer_dtype(peer)],
        PEER_TOLERANCE.get((case.variant.backend, case.torch_dtype), 0.0),
    )


def relative_error(result: torch.Tensor, expected: torch.Tensor) -> float:
    """max |result - expected| / max |expected| (the denominator floored at 1e-30 for an all-zero result), computed
    on ``expected``'s device."""
    expected = expected.to(torch.float64)
    difference = (result.detach().to(expected.device, torch.float64) - expected).abs().max()
    return float(difference / expected.abs().max().clamp_min(1e-30))


def _box_errors(result: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Each box's max |result - expected| over max |expected| (``relative_error`` box by box), float64 [K]."""
    expected = expected.to(torch.float64)
    difference = (result.detach().to(expected.device, torch.float64) - expected).abs().amax(1)  # [K]
    return difference / expected.abs().max().clamp_min(1e-30)


def _result_names(case: Case, count: int) -> tuple[str, ...]:
    """What each result of ``case``'s call is: the output, or the gradients (one per pooled map for
    multi-level pooling)."""
    if case.pass_ == "fwd":
        return ("output",)
    if case.op == MULTISCALE:
        return tuple(f"grad_{name}" for name in case.workload.pyramid.level_names)
    return ("grad_image", "grad_boxes")[:count]


def _differs(case: Case) -> bool:
    """Whether the case's backend is a peer whose semantics differ from ours on part of the inputs (the record's
    ``differs``: ``grid_sample`` and ``kornia`` at the border, CONVENTIONS.md §8.3)."""
    return registered()[case.variant.backend].kernels[kernel_op(case.op)].differs is not None


def interior(inputs: Inputs) -> Inputs:
    """``inputs`` with only the boxes that lie inside the image (the op's ``inside``, ``bench/operators/<op>.py``:
    every sample inside, where the peers that differ at the border compute our op); in a batch of one box per image,
    their images too."""
    inside = operators.fact(inputs.op, "inside")(inputs)  # [K]
    assert inside.any(), "no box of the workload lies inside the image"
    if inputs.box_index is None:  # the rois carry their batch index
        return dataclasses.replace(inputs, boxes=inputs.boxes[inside], grad_output=inputs.grad_output[inside])
    box_index = inputs.box_index[inside]
    one_per_image = inputs.image.shape[0] == inputs.boxes.shape[0] > 1
    return dataclasses.replace(
        inputs,
        image=inputs.image[box_index] if one_per_image else inputs.image,
        boxes=inputs.boxes[inside],
        box_index=torch.arange(box_index.shape[0], device=box_index.device) if one_per_image else box_index,
        grad_output=inputs.grad_output[inside],
    )


def check_against_peer(case: Case, inputs: AnyInputs, results: tuple[torch.Tensor, ...]) -> dict:
    """Asserts that ``results`` (``make_call(case...).results()``: NCHW torch tensors) match the peer's; returns
    what was checked. A backend that ``differs`` at the border is checked on the workload's interior boxes (the
    call repeated on them: ``interior``)."""
    if _differs(case):
        inputs = interior(inputs)
        results = make_call(case.backend, case.pass_, inputs).results()
    peer = choose_peer(case)
    expected = _peer_results(case, peer, inputs)
    names = _result_names(case, len(results))
    assert len(names) == len(results) == len(expected), (case.id, names, len(results), len(expected))
    errors = {name: relative_error(r, e) for name, r, e in zip(names, results, expected)}
    limit = tolerance(case, peer)
    checked = {}
    share = operators.fact(case.op, "BOX_GRADIENT_OUTLIERS", {}).get((case.variant.backend, case.torch_dtype))
    if share is not None and "grad_boxes" in names:
        per_box = _box_errors(results[names.index("grad_boxes")], expected[names.index("grad_boxes")])  # [K]
        outliers = per_box > limit
        assert outliers.sum() <= share * per_box.numel(), (
            f"{case.id}: the box gradient of {int(outliers.sum())} of {per_box.numel()} boxes misses {limit:g} "
            f"against {peer} (at most {share:.0%} may: the op's BOX_GRADIENT_OUTLIERS)"
        )
        errors["grad_boxes"] = float(per_box[~outliers].max()) if (~outliers).any() else 0.0
        checked["check_outlier_boxes"] = int(outliers.sum())
    assert all(error <= limit for error in errors.values()), (
        f"{case.id}: relative error against {peer} {errors} exceeds {limit:g}"
    )
    return {"peer": peer, "check_error": max(errors.values()), "check_tolerance": limit, **checked}
