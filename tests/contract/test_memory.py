"""``vectorized`` and ``compiled`` (the same loop with compiled steps) never copy the feature map per box: on a Mask
R-CNN P2 call their peak memory stays near the size of their inputs and outputs, where a per-box copy
(K x C x H x W floats) would need 512 x 62 MB = 32 GB.

The call runs in a child process so that its peak resident memory (``ru_maxrss``) is its own; the peak is taken
relative to the process's high-water mark after the inputs exist and torch has warmed up on a tiny call.
"""

import json
import subprocess
import sys
import textwrap

import pytest

# Measured on this project's 2-core x86_64 machine (float32, 512 boxes of P2 sizes, 7x7, sampling_ratio 2), above
# the inputs: vectorized 228 MB forward, 248 MB forward + backward (the backward's 62 MB map gradient reuses memory
# the forward's chunks freed); compiled 100 MB and 182 MB (its steps never materialize the gathered samples). For
# scale: input map 62 MB and its channels-last copy 62 MB, output 26 MB, chunked gather temporaries of
# `_CHUNK_ELEMENTS` (4M) floats, 16 MB each. The bound leaves ~50 MB for allocator variance.
PEAK_BOUND_MB = {"fwd": 300, "fwd+bwd": 300}

_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    import impls

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    torch.manual_seed(0)
    x = torch.randn(1, 256, 200, 304)
    side = torch.exp(torch.empty(512).uniform_(2.77, 4.72))  # sqrt(w h) in 16..112 image px
    xy = torch.rand(512, 2) * torch.tensor([1216.0, 800.0])
    rois = torch.cat([torch.zeros(512, 1), xy, xy + side[:, None]], dim=1)
    kwargs = dict(output_size=7, spatial_scale=0.25, sampling_ratio=2, aligned=True, backend=sys.argv[2])
    backward = sys.argv[1] == "fwd+bwd"
    warm = x[:, :, :8, :8].clone().requires_grad_(backward)
    warm_out = impls.roi_align(warm, rois[:2] / 64, **kwargs)  # warm-up: first-call allocations (and compiles)
    if backward:
        warm_out.sum().backward()
    x.requires_grad_(backward)
    before = peak_mb()
    out = impls.roi_align(x, rois, **kwargs)
    if backward:
        out.backward(torch.ones_like(out))
    print(json.dumps({"peak_mb": peak_mb() - before}))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["vectorized", "compiled"])
@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
def test_p2_peak_memory(pass_, backend):
    result = subprocess.run([sys.executable, "-c", _CHILD, pass_, backend], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr
    peak = json.loads(result.stdout.strip().splitlines()[-1])["peak_mb"]
    print(f"{backend} P2 {pass_}: peak {peak:.0f} MB above the inputs")
    assert peak < PEAK_BOUND_MB[pass_], f"peak {peak:.0f} MB >= {PEAK_BOUND_MB[pass_]} MB"


# One 10,000-pixel box at stride 4 with adaptive sampling has 358 x 358 samples per bin: 6.3M samples, whose four
# gathered corners alone would take 6.3M x C x 4 B x 4 = 800 MB at C = 8 (and 26 GB at C = 256) if a box were the
# smallest unit of work. Split over its samples, the box costs what a chunk costs (measured: ~240 MB above the
# inputs at C = 8 on this project's machine), whatever C is. The bound leaves ~150 MB for allocator variance.
LARGE_BOX_BOUND_MB = 400

_LARGE_BOX_CHILD = textwrap.dedent(
    """
    import json, resource
    import torch
    import impls

    x = torch.randn(1, 8, 64, 64)
    box = torch.tensor([[0, 0.0, 0.0, 1e4, 1e4]])
    kwargs = dict(output_size=7, spatial_scale=0.25, sampling_ratio=0, aligned=True, backend="vectorized")
    impls.roi_align(x, box / 100, **kwargs)  # warm-up: first-call allocations
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = impls.roi_align(x, box, **kwargs)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    want = impls.roi_align(x, box, **{**kwargs, "backend": "cpp"})
    print(json.dumps({"peak_mb": after - before, "error": (out - want).abs().max().item()}))
    """
)


@pytest.mark.slow
def test_vectorized_large_box_memory_is_bounded():
    result = subprocess.run([sys.executable, "-c", _LARGE_BOX_CHILD], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"vectorized one 1e4-px box: peak {measured['peak_mb']:.0f} MB above the inputs")
    assert measured["error"] < 1e-4, f"differs from cpp by {measured['error']:.3g}"  # float32 sums of 6.3M samples
    assert measured["peak_mb"] < LARGE_BOX_BOUND_MB, f"peak {measured['peak_mb']:.0f} MB >= {LARGE_BOX_BOUND_MB} MB"


# crop_and_resize's C++ kernels read NCHW maps in place: what a call costs in memory grows with its crops, never with
# N x C x H x W. 8 maps of 64 x 256 x 256 float32 (134 MB) with one 8x8 crop each: the output is 131 KB, so the
# forward and the box gradient (image not requiring grad) need nearly nothing above the inputs, where the earlier
# kernels transposed every map into a 134 MB channels-last buffer. The image gradient is itself 134 MB: the bound
# is that plus the same slack, where a channels-last scratch of the whole map would add its size again.
NCHW_MAPS_SLACK_MB = 30
NCHW_MAP_MB = 8 * 64 * 256 * 256 * 4 / 2**20

_NCHW_CROP_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    import impls

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    image = torch.randn(8, 64, 256, 256)
    boxes = torch.tensor([[0.1, 0.2, 0.15, 0.26]]).repeat(8, 1)
    box_index = torch.arange(8)
    wants = sys.argv[1]
    image.requires_grad_(wants == "image")
    boxes.requires_grad_(wants == "boxes")
    warm = impls.crop_and_resize(image[:1, :2, :16, :16], boxes[:1], box_index[:1], (8, 8), backend="cpp")
    if wants != "none":
        warm.sum().backward()
    before = peak_mb()
    out = impls.crop_and_resize(image, boxes, box_index, (8, 8), backend="cpp")
    if wants != "none":
        out.backward(torch.ones_like(out))
    print(json.dumps({"peak_mb": peak_mb() - before}))
    """
)


@pytest.mark.parametrize("gradient", ["none", "boxes", "image"])
def test_cpp_crop_and_resize_reads_nchw_maps_in_place(gradient):
    result = subprocess.run([sys.executable, "-c", _NCHW_CROP_CHILD, gradient], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    peak = json.loads(result.stdout.strip().splitlines()[-1])["peak_mb"]
    bound = NCHW_MAPS_SLACK_MB + (NCHW_MAP_MB if gradient == "image" else 0)
    print(f"cpp crop_and_resize, 8 NCHW maps, gradient to {gradient}: peak {peak:.0f} MB above the inputs")
    assert peak < bound, f"peak {peak:.0f} MB >= {bound:.0f} MB"
