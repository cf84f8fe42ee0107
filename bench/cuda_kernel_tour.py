"""A tiny run of every CUDA kernel of the ``cuda`` backend, for compute-sanitizer (bench/gpu_run.sh).

    compute-sanitizer --tool memcheck  python3 bench/cuda_kernel_tour.py              # everything
    compute-sanitizer --tool racecheck python3 bench/cuda_kernel_tour.py --boxes-only # the box-gradient kernels

Only the public API (``impls.roi_align`` / ``impls.crop_and_resize`` / ``impls.multiscale_roi_align`` /
``impls.roi_align_rotated`` with ``backend="cuda"`` and ``.backward()``), so that it survives changes to the
extension's op names. Each call is one of:

* op and options: crop_and_resize bilinear and nearest; roi_align aligned True/False x sampling_ratio 2 and 0
  (adaptive grid); multi-level roi_align on two levels (both boxes' levels in one call), sampling_ratio 2 and 0;
* dtype: float64, float32, float16, bfloat16;
* pass: forward alone; backward to the image; to the boxes; to both;
* image-gradient mode: atomic (default) and ``torch.use_deterministic_algorithms(True)`` (the gather path);
* boxes: inside, crossing the border, wholly outside, flipped (crop_and_resize), one sub-pixel box; plus an empty
  (K = 0) call of each op.

``--boxes-only`` keeps the calls whose boxes require grad (the box-gradient kernels, for racecheck). Each result is
compared with ``vectorized`` on the same GPU in float64 on the same dtype-rounded inputs (skipped under
``--no-compare``), loosely (this is a sanitizer driver; the tests check values): a mismatch or an exception is
counted and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import itertools
import sys

import torch

import impls
from impls.core import tolerance as _tolerance
from impls.core.determinism import deterministic_algorithms

DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
# Relative to the largest magnitude (at least 1): the tests' table (impls/core/tolerance.py, with its reasons). The
# tour's calls are the test matrix's on a map of the same size (N, C, H, W below; a few boxes), so its bounds hold:
# half types compute and add their atomics in float32 and round once (CONVENTIONS.md section 6).
TOLERANCE = _tolerance.TOLERANCE
GRADS = {"fwd": (), "image": ("image",), "boxes": ("boxes",), "both": ("image", "boxes")}
N, C, H, W = 2, 3, 9, 11
# Multi-level: the map above (stride 4) and one of stride 8 for 4x larger images; with a canonical box of 16 px on
# level 2, the tour's boxes (x4) land on both levels (e.g. the first on level 2, the last on level 3).
STRIDE = 4
MULTISCALE = dict(canonical_scale=16, canonical_level=2)


def inputs(op: str, k: int):
    """float64 CPU (image [N, C, H, W], or a list of two maps for multiscale_roi_align; boxes; box_index or None);
    k = 0 gives empty boxes."""
    g = torch.Generator().manual_seed(7)
    image = torch.randn(N, C, H, W, generator=g, dtype=torch.float64)
    if op == "crop_and_resize":
        # Odd values: no sample lands on a pixel edge (where the box gradient jumps) or on a nearest-rounding tie.
        boxes = torch.tensor([
            [0.131, 0.217, 0.713, 0.934],   # inside
            [-0.307, 0.523, 0.431, 1.371],  # partly outside the map: extrapolated samples
            [0.829, 0.913, 0.211, 0.071],   # flipped
            [1.21, 1.13, 1.52, 1.61],       # wholly outside
            [0.53, 0.47, 0.55, 0.49],       # tiny
        ], dtype=torch.float64)[:k]
        box_index = torch.tensor([0, 1, 1, 0, 1])[:k]
        return image, boxes, box_index
    rois = torch.tensor([
        [0, 1.03, 1.57, 8.11, 6.49],     # inside
        [1, -3.07, 5.11, 6.13, 12.93],   # partly outside the map
        [1, 2.21, 3.13, 2.63, 3.47],     # sub-pixel: aligned=False clamps it to 1x1
        [0, 12.47, -4.03, 20.11, 2.07],  # mostly outside
        [1, 0.03, 0.07, 10.91, 8.97],    # nearly the whole map (an adaptive grid of 3x3 at 3x4 output)
    ], dtype=torch.float64)[:k]
    if op == "roi_align_rotated":  # (batch, cx, cy, w, h, angle in degrees): the same boxes, turned
        centre = (rois[:, 1:3] + rois[:, 3:5]) / 2
        size = rois[:, 3:5] - rois[:, 1:3]
        angle = torch.tensor([0.0, 33.7, -71.3, 180.0, 91.1], dtype=torch.float64)[:k, None]
        return image, torch.cat([rois[:, :1], centre, size, angle], dim=1), None
    if op == "multiscale_roi_align":  # in image pixels, on the maps of strides 4 and 8
        coarse = torch.randn(N, C, (H + 1) // 2, (W + 1) // 2, generator=g, dtype=torch.float64)
        return [image, coarse], torch.cat([rois[:, :1], rois[:, 1:] * STRIDE], dim=1), None
    return image, rois, None


def run(op: str, options: dict, dtype: torch.dtype, grads: tuple, det: bool, k: int, backend: str, device: str,
        compute_dtype: torch.dtype | None = None):
    """(name, tensor) of the output and the asked-for gradients (one per map) of one call on inputs rounded to
    ``dtype``, computed in ``compute_dtype`` (default ``dtype``)."""
    compute_dtype = compute_dtype or dtype
    image, boxes, box_index = inputs(op, k)
    maps = [m.to(device, dtype).to(compute_dtype).requires_grad_("image" in grads)
            for m in (image if isinstance(image, list) else [image])]
    boxes = boxes.to(device, dtype).to(compute_dtype).requires_grad_("boxes" in grads)
    if box_index is not None:
        box_index = box_index.to(device)
    with deterministic_algorithms(det):
        if op == "crop_and_resize":
            out = impls.crop_and_resize(maps[0], boxes, box_index, backend=backend, **options)
        elif op == "multiscale_roi_align":
            shapes = [(H * STRIDE, W * STRIDE)] * N
            out = impls.multiscale_roi_align(maps, boxes, shapes, backend=backend, **MULTISCALE, **options)
        elif op == "roi_align_rotated":
            out = impls.roi_align_rotated(maps[0], boxes, backend=backend, **options)
        else:
            out = impls.roi_align(maps[0], boxes, backend=backend, **options)
        results = [("output", out.detach())]
        if grads:
            g = torch.Generator().manual_seed(11)
            upstream = torch.randn(out.shape, generator=g, dtype=torch.float64).to(device, dtype).to(compute_dtype)
            out.backward(upstream)
            if "image" in grads:
                results += [(f"grad_image[{level}]", m.grad) for level, m in enumerate(maps)]
            if "boxes" in grads:
                results.append(("grad_boxes", boxes.grad))
    if device == "cuda":
        torch.cuda.synchronize()
    return results


def calls(boxes_only: bool):
    ops = [("crop_and_resize", dict(crop_size=(4, 5), method=m, extrapolation_value=-1.0))
           for m in ("bilinear", "nearest")]
    ops += [("roi_align", dict(output_size=(3, 4), spatial_scale=1.0, sampling_ratio=sr, aligned=aligned))
            for aligned, sr in itertools.product((True, False), (2, 0))]
    ops += [("multiscale_roi_align", dict(output_size=(3, 4), sampling_ratio=sr)) for sr in (2, 0)]
    ops += [("roi_align_rotated", dict(output_size=(3, 4), spatial_scale=1.0, sampling_ratio=sr, clockwise=cw))
            for sr, cw in ((2, False), (0, True))]
    for (op, options), dtype, grad_name, det, k in itertools.product(ops, DTYPES, GRADS, (False, True), (5, 0)):
        if boxes_only and "boxes" not in GRADS[grad_name]:
            continue
        if det and "image" not in GRADS[grad_name]:
            continue  # the mode changes only the image gradient
        yield op, options, dtype, grad_name, det, k


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes-only", action="store_true", help="only calls whose boxes require grad")
    parser.add_argument("--no-compare", action="store_true", help="skip the comparison with vectorized")
    parser.add_argument("--backend", default="cuda", help="another backend, to dry-run the tour (e.g. cpp)")
    parser.add_argument("--device", default="cuda", help="its device (e.g. cpu)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU here", file=sys.stderr)
        return 2
    row = {r["name"]: r for r in impls.backends()}[args.backend]
    if not row["available"]:
        print(f"the {args.backend} backend is unavailable: {row['reason']}", file=sys.stderr)
        return 2

    done = failed = 0
    for op, options, dtype, grad_name, det, k in calls(args.boxes_only):
        grads = GRADS[grad_name]
        label = (f"{op} {options} {str(dtype).removeprefix('torch.')} grad={grad_name} "
                 f"{'deterministic' if det else 'atomic'} K={k}")
        try:
            got = run(op, options, dtype, grads, det, k, args.backend, args.device)
            if not args.no_compare:
                want = run(op, options, dtype, grads, False, k, "vectorized", args.device, torch.float64)
                for (name, a), (_, b) in zip(got, want):
                    if a is None or b is None:
                        if a is not b:
                            raise AssertionError(f"{name}: {'no' if a is None else 'a'} gradient, vectorized "
                                                 f"{'none' if b is None else 'one'}")
                        continue
                    a64, b64 = a.to(torch.float64), b.to(torch.float64)
                    error = (a64 - b64).abs().max().item() if b64.numel() else 0.0
                    scale = max(1.0, b64.abs().max().item()) if b64.numel() else 1.0
                    if not error <= TOLERANCE[dtype] * scale:  # also catches NaN
                        raise AssertionError(f"{name}: max error {error:.3g} > {TOLERANCE[dtype]:g} x {scale:.3g}")
            done += 1
        except Exception as error:  # noqa: BLE001  (count, report, go on to the next kernel)
            failed += 1
            print(f"FAIL {label}: {type(error).__name__}: {error}", flush=True)
    print(f"{args.backend} kernel tour: {done} calls ok, {failed} failed "
          f"({'box-gradient calls' if args.boxes_only else 'all'}"
          f", {'no comparison' if args.no_compare else 'compared with vectorized in float64'})", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
