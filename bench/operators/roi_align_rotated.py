"""roi_align_rotated's benchmark facts (``bench/operators/__init__.py``), its own cases and its report section.

The cases (``workloads``, run by ``bench/test_roi_align_rotated.py``): oriented proposals of a two-stage detector's
box head on a DOTA-like 1024x1024 aerial image split as oriented detectors train on it (``inputs``), 512 boxes (sampled
in training) and 2000 (kept at inference), pooled into 7x7 with ``sampling_ratio`` 2 (mmrotate's setting) and 0
(adaptive, detectron2's), forward and forward + backward, box gradients on the headline case (``HEADLINE``) in float32
as for roi_align's. The level is P2 (``dota_p2``: 256x256, C = 256, stride 4): rotated detectors assign levels as
Mask R-CNN does (``sqrt(w * h)`` under 112 px goes to P2), and the objects of aerial images are mostly small
(vehicles, ships, storage tanks: tens of pixels), so P2 is where most oriented boxes are pooled from. ``full`` adds P3
(``dota_p3``, 128x128, 112-224 px) and every dtype; ``smoke`` the tiny workload. Every backend with the op's kernels
runs it, with its extra variants (``cpp_nhwc``, ``compiled_nhwc``), but ``reference`` (too slow past ``tiny``); the
peers ``openvino`` (OpenVINO's ROIAlignRotated-15, forward only, float32) and ``grid_sample`` (the pure-PyTorch
version, fixed sampling only: ``FIXED_SAMPLING_ONLY``, so no row in the adaptive cases) natively, as for the other
ops.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Callable

import torch
from baseline import peers
from results_json import PASS_LABELS, backend_key
from workloads import SEED, Level, Workload, rois_and_kwargs

OP = "roi_align_rotated"
# The headline case (box gradients), and the box counts: an oriented detector's box head samples 512 RoIs per image
# in training and pools 2000 proposals at inference.
HEADLINE = Workload("dota_p2", boxes=512, output=7, sampling_ratio=2)
BOXES = (512, 2000)
# The peers that take a fixed sampling_ratio only, so no adaptive (sampling_ratio <= 0) case: grid_sample's rotated
# RoIAlign pools every box's samples with one avg_pool2d size (impls/backends/peers/grid_sample_rotated.py), and the
# adaptive grid differs per box.
FIXED_SAMPLING_ONLY = ("grid_sample",)


def workloads(mode: str) -> list[Workload]:
    """The op's workloads in BENCH=``mode`` (module docstring): the tiny one in ``smoke``; else 512 and 2000 boxes,
    7x7, sampling_ratio 2 and 0, on P2 of the aerial image (and P3 in ``full``, with the tiny one)."""
    from matrix import TINY

    if mode == "smoke":
        return [TINY]
    levels = ("dota_p2", "dota_p3") if mode == "full" else ("dota_p2",)
    workloads = [Workload(level, boxes=k, output=HEADLINE.output, sampling_ratio=sr)
                 for level, k, sr in itertools.product(levels, BOXES, (2, 0))]
    return workloads + ([TINY] if mode == "full" else [])


# Oriented boxes' elongation, longer side over shorter, log-uniform over this range: aerial objects are long and thin
# more often than a detector's upright proposals are (a car about 2:1, a ship or a truck up to 4-5:1).
ELONGATION = (1.0, 5.0)


def rotated_boxes(level: Level, count: int, seed: int = SEED) -> torch.Tensor:
    """``count`` oriented proposals of one level, ``(cx, cy, w, h, angle)`` in image pixels and degrees, float64
    [K, 5].

    Side ``sqrt(w * h)`` log-uniform over the level's range, elongation ``ELONGATION``, the long side along
    ``w``, angle uniform in [-90, 90) (every orientation of a box once), centre uniform over the image. Not clipped:
    a rotated proposal may hang over the image's edge (the op's border rule, CONVENTIONS.md §3b, reads 0 there).
    """
    g = torch.Generator().manual_seed(seed)
    low, high = (math.log(side) for side in level.box_sides)
    side = torch.exp(low + (high - low) * torch.rand(count, generator=g, dtype=torch.float64))  # [K]
    lo, hi = (math.log(r) for r in ELONGATION)
    elongation = torch.exp(lo + (hi - lo) * torch.rand(count, generator=g, dtype=torch.float64))  # [K]
    w, h = side * elongation.sqrt(), side / elongation.sqrt()  # [K] each
    angle = 180 * torch.rand(count, generator=g, dtype=torch.float64) - 90  # [K]
    height, width = level.image_size
    cx = width * torch.rand(count, generator=g, dtype=torch.float64)  # [K]
    cy = height * torch.rand(count, generator=g, dtype=torch.float64)  # [K]
    return torch.stack([cx, cy, w, h, angle], dim=1)  # [K, 5]


def inputs(workload: Workload) -> tuple:
    """``rois`` [K, 6] float64 (batch index, cx, cy, w, h, angle in degrees; image pixels), no box_index (the rois
    carry it) and the keyword arguments of ``impls.roi_align_rotated`` (detectron2's, counter-clockwise)."""
    rois, kwargs = rois_and_kwargs(workload, rotated_boxes(workload.level_spec, workload.boxes), clockwise=False)
    return rois, None, kwargs


# (row's backend, dtype) -> the share of boxes whose box gradient may miss the tolerance; every other box, the
# output and the image gradient must meet it. grid_sample's rotated version in float32 places its samples through
# affine_grid's normalized grid, scaled back by grid_sample, ~1e-5 map px from ours (cpp and vectorized compute
# positions in float64; grid_sample in float64 agrees with them to 2e-14). A sample that close to a pixel row or
# column takes the other bilinear slope: the box gradient jumps there (the output and the image gradient do not).
# Seen on the interior boxes: 2 of 439 (dota_p2_k512, up to 6.6% of the largest box gradient), 3 of 1719
# (dota_p2_k2000, 2.1%), the rest within 3e-4. A wrong kernel moves most boxes, not 1% of them.
BOX_GRADIENT_OUTLIERS = {("grid_sample", torch.float32): 0.01}


def inside(call_inputs) -> torch.Tensor:
    """The boxes of ``call_inputs`` (``calls.Inputs``) whose four corners lie in [0, W - 1] x [0, H - 1] on the map
    (after the -0.5 pixel shift, CONVENTIONS.md §3b), bool [K]: each sample is inside its box, so inside the map with
    all four taps, where grid_sample's zero padding reads nothing (``impls/backends/peers/grid_sample_rotated.py``)."""
    _, _, height, width = call_inputs.image.shape
    k = call_inputs.kwargs
    _, cx, cy, w, h, angle = (call_inputs.boxes.detach().cpu().to(torch.float64) * torch.tensor(
        [1, k["spatial_scale"], k["spatial_scale"], k["spatial_scale"], k["spatial_scale"], 1],
        dtype=torch.float64)).unbind(1)  # [K] each
    theta = torch.deg2rad(angle)
    half_x = (w * theta.cos()).abs() / 2 + (h * theta.sin()).abs() / 2  # [K]: the corners' reach from the centre
    half_y = (w * theta.sin()).abs() / 2 + (h * theta.cos()).abs() / 2
    cx, cy = cx - 0.5, cy - 0.5
    inside = (cx - half_x >= 0) & (cx + half_x <= width - 1) & (cy - half_y >= 0) & (cy + half_y <= height - 1)
    return inside.to(call_inputs.boxes.device)


def adaptive_sides(rois: torch.Tensor, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(box height, box width) [K] each, from rois scaled to the map: (cx, cy, w, h, angle), never clamped."""
    return rois[:, 4], rois[:, 3]


def grid_sample_forward(call_inputs) -> Callable:
    """The user's pure-PyTorch rotated RoIAlign (``impls/backends/peers/grid_sample_rotated.py``) on (image, rois)."""
    from impls.backends.peers import grid_sample_rotated

    k = call_inputs.kwargs
    return functools.partial(grid_sample_rotated.roi_align_rotated, output_size=k["output_size"],
                             spatial_scale=k["spatial_scale"], sampling_ratio=k["sampling_ratio"],
                             clockwise=k["clockwise"])


def openvino_model() -> tuple[Callable, Callable, str]:
    """ROIAlignRotated-15: rois [K, 5] with the angle in radians, the batch indices apart."""
    from impls.backends.peers import openvino_rotated

    return openvino_rotated.infer_request, openvino_rotated.feeds, "clockwise"


def touched_pixels(map_shape: tuple[int, ...], rois: torch.Tensor, kwargs: dict) -> int:
    """``work.touched_pixels`` for rotated boxes, whose samples lie on no rows x columns grid: each box's samples
    (CONVENTIONS.md §3b.2, bin-major and evenly spaced along each box axis), rotated onto the map, the four taps of
    every one in range (roi_align's border rule)."""
    n, _, height, width = map_shape
    touched = torch.zeros(n, height, width, dtype=torch.bool)
    scale, (out_h, out_w), ratio = kwargs["spatial_scale"], kwargs["output_size"], kwargs["sampling_ratio"]
    sign = -1.0 if kwargs.get("clockwise") else 1.0
    for roi in rois.detach().cpu().to(torch.float64).tolist():
        image, cx, cy, w, h, angle = roi
        cx, cy, w, h = cx * scale - 0.5, cy * scale - 0.5, w * scale, h * scale
        theta = sign * math.radians(angle)
        cos, sin = math.cos(theta), math.sin(theta)
        grid_h = ratio if ratio > 0 else math.ceil(h / out_h)
        grid_w = ratio if ratio > 0 else math.ceil(w / out_w)
        if grid_h <= 0 or grid_w <= 0:
            continue
        yy = ((torch.arange(out_h * grid_h, dtype=torch.float64) + 0.5) / (out_h * grid_h) - 0.5) * h  # [PH*gh]
        xx = ((torch.arange(out_w * grid_w, dtype=torch.float64) + 0.5) / (out_w * grid_w) - 0.5) * w  # [PW*gw]
        y = cy + yy[:, None] * cos - xx[None, :] * sin  # [PH*gh, PW*gw]
        x = cx + yy[:, None] * sin + xx[None, :] * cos  # [PH*gh, PW*gw]
        in_range = (y >= -1) & (y <= height) & (x >= -1) & (x <= width)
        y_low = y[in_range].clamp(min=0).floor().long().clamp(max=height - 1)  # [S]
        x_low = x[in_range].clamp(min=0).floor().long().clamp(max=width - 1)  # [S]
        y_high, x_high = (y_low + 1).clamp(max=height - 1), (x_low + 1).clamp(max=width - 1)
        for rows, columns in ((y_low, x_low), (y_low, x_high), (y_high, x_low), (y_high, x_high)):
            touched[int(image), rows, columns] = True
    return int(touched.sum())


# Peer -> what its timer holds on this op (``calls.timed_region`` describes the peers' roi_align and crop_and_resize).
PEER_TIMED = {
    "openvino": (
        "`request.infer(feeds, share_inputs=True, share_outputs=True)`: an infer request of a one-node "
        "ROIAlignRotated-15 model compiled for OpenVINO's CPU plugin, both made before the timer, with numpy feeds "
        "made before it (`openvino_rotated.feeds`: rois [K, 5] with the angle in radians, int64 batch indices) and "
        "read in place; the output stays in the request's memory (copied out after). Forward only"),
    "grid_sample": (
        "`F.affine_grid` + `F.grid_sample(align_corners=False)` + `F.avg_pool2d` on NCHW torch tensors as a user "
        "writes rotated RoIAlign (`impls/backends/peers/grid_sample_rotated.py`: a rotated theta per box from the "
        "rois, one grid_sample per image over its boxes' grids, the s x s pool, the crops put back in box order), "
        "nothing of impls inside; a fixed sampling_ratio only (one pool size for every box); backward: "
        "`torch.autograd.grad` through it (to theta and the rois for +boxes)"),
}


REPORT_TITLE = "Rotated RoIAlign: oriented boxes on an aerial image"
# Rotated RoIAlign's goals (its issue), stated beside the measurements and not asserted: (row label, pass) -> the
# speed-up over the faster of the op's peers that have a row in the case (fwd: OpenVINO and grid_sample;
# fwd+bwd: grid_sample, OpenVINO has no backward), in each layout of the feature map.
GOALS = {
    ("cpp", "fwd"): 3.0,
    ("cpp_nhwc", "fwd"): 3.0,
    ("cpp", "fwdbwd"): 3.0,
    ("cpp_nhwc", "fwdbwd"): 3.0,
}

INTRO = """\
Rotated RoIAlign (detectron2's ROIAlignRotated, with box gradients) on oriented boxes of a DOTA-like aerial image
(`bench/workloads.py`: the P2 map of a 1024x1024 image, 256x256 with C = 256; 512 boxes as an oriented detector's box
head samples in training, 2000 proposals at inference; 7x7, sampling ratio 2 and 0 = adaptive). A case names the
level, boxes, head and sampling ratio (`dota_p2_k512_7x7_sr2`). The peers, each timed as its users run it (the
table of timed regions): OpenVINO's ROIAlignRotated-15 (forward only, float32, its feeds made before the timer) and
rotated RoIAlign in pure PyTorch (`grid_sample`: `F.affine_grid` + `F.grid_sample` + `F.avg_pool2d`, differentiable
by autograd). `grid_sample` has **no row in the adaptive cases** (`sr0`): its one `avg_pool2d` takes one sampling
ratio for every box, and the adaptive grid differs per box; there, forward is compared with OpenVINO alone, and
fwd+bwd with no peer. Median and IQR of the per-call times; speed-up = the faster peer's median / the row's, and in
brackets its range over the middle half of both timings (peer q1 / row q3 to peer q3 / row q1)."""


def _faster_peer(rows: list[dict], row: dict) -> dict | None:
    """The fastest float32 row of the op's peers in ``row``'s run, case, pass and device (None when none has one)."""
    candidates = [r for r in rows if r["backend"] in peers(row["op"]) and r["dtype"] == "float32"
                  and (r["run"], r["op"], r["case"], r["pass"], r["device"])
                  == (row["run"], row["op"], row["case"], row["pass"], row["device"])]
    return min(candidates, key=lambda r: r["median"], default=None)


def _peer_absence(case: str, pass_: str) -> str:
    """Why a rotated case and pass has no peer row, in words."""
    reasons = ["OpenVINO has no backward"] if pass_ != "fwd" else []
    if case.endswith("_sr0"):
        reasons.insert(0, "grid_sample has no adaptive grid")
    return "no peer (" + "; ".join(reasons or ["not run"]) + ")"


def _goal_verdict(row: dict, peer: dict | None) -> tuple[float, str] | None:
    """(goal, verdict) for a row ``GOALS`` sets a goal for, else None."""
    goal = GOALS.get((row["backend"], row["pass"]))
    if goal is None:
        return None
    if peer is None:
        return goal, "not measurable: no peer"
    from report import goal_cell

    return goal, goal_cell(goal, peer["median"] / row["median"])


def goal_lines(rows: list[dict]) -> str:
    """One line per goal: the cases where it is met and where it is missed, with the speed-ups."""
    mine = [r for r in rows if r["op"] == OP and r["dtype"] == "float32"]
    lines = []
    for (label, pass_), goal in GOALS.items():
        met, missed, absent = [], [], []
        for r in (r for r in mine if (r["backend"], r["pass"]) == (label, pass_)):
            peer = _faster_peer(rows, r)
            if peer is None:
                absent.append(r["case"])
                continue
            speedup = peer["median"] / r["median"]
            (met if speedup >= goal else missed).append(f"{r['case']} {speedup:.2f}x over {peer['backend']}")
        if not (met or missed or absent):
            continue
        layout = "channels_last" if label.endswith("_nhwc") else "NCHW"
        verdict = "**missed**" if missed else "**met**" if met else "not measured"
        text = (f"- `{label}` ({layout}) {PASS_LABELS[pass_]} >= {goal:g}x the faster peer: {verdict} "
                f"({len(met)} of {len(met) + len(missed)} cases with a peer)")
        text += "".join(f"; {name}: {', '.join(cases)}" for name, cases in (("met", met), ("missed", missed)) if cases)
        if absent:
            text += f"; no peer in {', '.join(absent)}"
        lines.append(text + ".")
    return "\n".join(lines)


def report_section(rows: list[dict], runs: list[dict]) -> str:
    """The report's section (its ``REPORT_TITLE``): the rows of roi_align_rotated: median, IQR, speed-up over the
    faster peer with its quartile range, goal; then the goal lines."""
    from report import format_time

    mine = [r for r in rows if r["op"] == OP]
    if not mine:
        return ""
    lines = [INTRO, "",
             "| case | pass | backend | device | dtype | median | IQR | speed-up over the faster peer | goal |",
             "|---|---|---|---|---|---:|---:|---|---|"]
    cases = list(dict.fromkeys((r["run"], r["case"], r["pass"]) for r in mine))
    for r in sorted(mine, key=lambda r: (cases.index((r["run"], r["case"], r["pass"])), backend_key(r))):
        peer = _faster_peer(rows, r)
        if peer is r:
            ratio = "1 (the faster peer)"
        elif peer is None:
            ratio = _peer_absence(r["case"], r["pass"])
        else:
            ratio = (f"{peer['median'] / r['median']:.2f}x over {peer['backend']} "
                     f"({peer['q1'] / r['q3']:.2f}-{peer['q3'] / r['q1']:.2f}x)")
        verdict = _goal_verdict(r, peer)
        backend = r["backend"] + (f" ({runs[r['run']]['machine_info']['node']})" if len(runs) > 1 else "")
        lines.append(f"| {r['case']} | {PASS_LABELS[r['pass']]} | {backend} | {r['device']} | {r['dtype']} "
                     f"| {format_time(r['median'])} | {format_time(r['iqr'])} | {ratio} "
                     f"| {verdict[1] if verdict else '-'} |")
    goals = goal_lines(rows)
    return "\n".join(lines) + (f"\n\nGoals (its issue), stated beside the measurements, not asserted:\n\n{goals}"
                               if goals else "")
