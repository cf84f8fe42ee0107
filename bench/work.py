"""How much work one call does: bilinear samples and bytes moved, to turn a time into a rate.

* Samples: per channel, per forward call. roi_align: ``C * PH * PW * sum over boxes of gh * gw`` with the grid of
  CONVENTIONS.md §3 (``sampling_ratio``, or adaptive ``ceil(roi_size / output_size)`` per box); the P2 box
  head is 512 * 256 * 49 * 4 = 25.7M; another op of RoIs the same, with the box sides its ``adaptive_sides``
  gives. crop_and_resize: ``K * C * crop_height * crop_width``.
  multiscale_roi_align: as roi_align over every image's boxes (its workloads have a fixed grid). A ``fwdbwd`` call
  is credited with the same samples (its backward revisits each one).
* Bytes moved: the compulsory traffic, each tensor read or written once: the pixels of the feature map that some
  sample's bilinear taps read (``touched_pixels``: all C channels of each; a P2 box head's 512 boxes read about half
  of a 200x304 map, 128 boxes far less; an op whose samples lie on no grid counts the pixels under each sample's
  four taps itself; multi-level: every pooled map, whole), the boxes and the output (plus, with
  a backward, the upstream gradient read and the whole image gradient and the box gradient written). Real kernels
  move more (four corners per sample, partly from cache; whole cache lines; a plane copied whole), so this is a
  lower bound: bytes / time is an achieved bandwidth to set against the memory's peak, not a measurement of it.
  Charging the whole map instead overstated what 128 boxes read, and so put a kernel above the copy bandwidth.
* Read (``touched_lines``): the cache lines of the map that crop_and_resize's forward taps read, in either layout,
  each once: the read-limit rows (``matrix.READ_LIMIT_LABELS``) read these.
* Written (``written_shapes``): the tensors one crop_and_resize pass writes, the crops, plus the image gradient
  (whole), plus the box gradient: the write-limit rows (``matrix.LIMIT_LABELS``) fill and copy buffers of these.
* The machine's bandwidth (``copy_bandwidth``), measured once per session (``conftest.py``): a STREAM-style copy,
  ``dst.copy_(src)`` of one float32 tensor into another, each far larger than the last-level cache (4x the LLC
  size from sysfs, at least 512 MiB; 64 MiB in ``smoke``, which only exercises the code), both touched first so
  that no page faults are timed, with torch's own thread count (the one the benchmarks use). Bytes counted: the
  read and the write (2x the size; the write-allocate read a CPU may add is not counted, as STREAM does not).
  Median of several copies. On CUDA the same copy between two device tensors, synchronized; the datasheet peak
  (``peak_bandwidth``) stays alongside.
"""

from __future__ import annotations

import functools
import math
import os
import statistics
import time
from pathlib import Path

import operators
import torch
from calls import AnyInputs, PyramidInputs
from workloads import Workload, crop_and_resize_inputs, roi_align_inputs

# Recorded in every row (conftest.py). Rows without it were counted with the whole map as read, which overstates
# the bytes of a call whose boxes cover part of the map: ``recounted_bytes`` counts them again.
BYTES_MODEL = "touched pixels"


def samples(inputs: AnyInputs) -> int:
    """Bilinear samples (per channel) in one forward call."""
    if isinstance(inputs, PyramidInputs):
        out_h, out_w = inputs.kwargs["output_size"]
        ratio = inputs.kwargs["sampling_ratio"]
        assert ratio > 0, "multi-level workloads have a fixed grid"
        return inputs.grad_output.shape[0] * inputs.grad_output.shape[1] * out_h * out_w * ratio * ratio
    _, channels, _, _ = inputs.image.shape
    if inputs.op == "crop_and_resize":
        crop_h, crop_w = inputs.kwargs["crop_size"]
        return inputs.boxes.shape[0] * channels * crop_h * crop_w
    out_h, out_w = inputs.kwargs["output_size"]
    ratio = inputs.kwargs["sampling_ratio"]
    if ratio > 0:
        return inputs.boxes.shape[0] * channels * out_h * out_w * ratio * ratio
    rois = inputs.boxes.detach().cpu().to(torch.float64) * inputs.kwargs["spatial_scale"]  # [K, 5] or [K, 6]
    box_height, box_width = operators.fact(inputs.op, "adaptive_sides")(rois, inputs.kwargs)  # [K] each, map px
    grid_h = torch.ceil(box_height / out_h)  # [K]
    grid_w = torch.ceil(box_width / out_w)  # [K]
    return int((grid_h * grid_w).sum()) * channels * out_h * out_w


def _tap_lines(position: torch.Tensor, size: int, low: float) -> torch.Tensor:
    """The pixel rows (or columns) the bilinear taps at ``position`` (float64 [S]) read, on an axis of ``size``
    pixels; ``low`` is the lowest in-range position (roi_align: -1, crop_and_resize: 0)."""
    high = size if low < 0 else size - 1  # roi_align reads [-1, H], crop_and_resize [0, H - 1]
    position = position[(position >= low) & (position <= high)].clamp(0, size - 1)
    first = position.floor().long()  # [S]
    # roi_align reads the pixel after the first even at weight 0; crop_and_resize reads ceil(position).
    second = (first + 1).clamp(max=size - 1) if low < 0 else position.ceil().long()
    return torch.cat([first, second]).unique()


def _crop_taps(box: torch.Tensor, height: int, width: int, crop_size: tuple[int, int]) -> list[torch.Tensor]:
    """The pixel rows and the columns crop_and_resize's taps read for one normalized ``(y1, x1, y2, x2)`` box (float64
    [4]) on an ``H x W`` map (CONVENTIONS.md §1.2): [rows, columns]."""
    taps = []
    for lo, hi, side, count in ((box[0], box[2], height, crop_size[0]), (box[1], box[3], width, crop_size[1])):
        steps = torch.arange(count, dtype=torch.float64)
        at = (lo + steps * (hi - lo) / (count - 1) if count > 1 else 0.5 * (lo + hi) + 0 * steps) * (side - 1)
        taps.append(_tap_lines(at, side, 0.0))
    return taps


def touched_pixels(op: str, map_shape: tuple[int, ...], boxes: torch.Tensor, kwargs: dict,
                   box_index: torch.Tensor | None = None) -> int:
    """How many pixels (per channel) of the ``[N, C, H, W]`` map(s) some sample's four taps read: the union over
    boxes of the rows x columns their samples fall between (CONVENTIONS.md §1.2 and §3). Needs no map values.
    An op whose samples lie on no rows x columns grid counts them itself (its ``touched_pixels``,
    ``bench/operators/<op>.py``)."""
    own = operators.fact(op, "touched_pixels")
    if own is not None:
        return own(map_shape, boxes, kwargs)
    n, _, height, width = map_shape
    touched = torch.zeros(n, height, width, dtype=torch.bool)
    b = boxes.detach().cpu().to(torch.float64)
    for k in range(b.shape[0]):
        if op == "crop_and_resize":
            image = 0 if box_index is None else int(box_index[k])
            lines = _crop_taps(b[k], height, width, kwargs["crop_size"])
        else:
            image, scale = int(b[k, 0]), kwargs["spatial_scale"]
            offset = 0.5 if kwargs["aligned"] else 0.0
            lines = []
            for start, end, side, bins in ((b[k, 2], b[k, 4], height, kwargs["output_size"][0]),
                                           (b[k, 1], b[k, 3], width, kwargs["output_size"][1])):
                first = float(start) * scale - offset
                length = float(end) * scale - offset - first
                if not kwargs["aligned"]:
                    length = max(length, 1.0)
                grid = kwargs["sampling_ratio"] if kwargs["sampling_ratio"] > 0 else math.ceil(length / bins)
                if grid <= 0:
                    lines.append(torch.zeros(0, dtype=torch.long))
                    continue
                steps = torch.arange(bins * grid, dtype=torch.float64)  # bin-major samples, evenly spaced
                lines.append(_tap_lines(first + (steps + 0.5) * length / (bins * grid), side, -1.0))
        rows, columns = lines
        touched[image][rows[:, None], columns[None, :]] = True
    return int(touched.sum())


LINE_BYTES = 64  # a cache line of the x86-64 CPUs the read-limit rows run on


def touched_lines(map_shape: tuple[int, ...], boxes: torch.Tensor, box_index: torch.Tensor,
                  crop_size: tuple[int, int], layout: str, itemsize: int = 4) -> torch.Tensor:
    """The cache lines of an ``[N, C, H, W]`` map (its storage starting on a line) that crop_and_resize's forward taps
    read for normalized ``boxes`` [K, 4] on images ``box_index`` [K], each once, in address order: int64 [L], line
    ``i`` being the storage's bytes ``[64 i, 64 i + 64)``. The taps are those of ``touched_pixels`` (the rows and
    the columns a box's samples fall between); a line counts where it holds one of them in some channel.
    ``layout``: ``"contiguous"`` (NCHW: a box's pixels in a plane row are a few lines of that row, plane after
    plane) or ``"channels_last"`` (NHWC: each pixel's C channels are one run). Needs no map values. The read-limit
    rows (``matrix.READ_LIMIT_LABELS``) read these."""
    _, channels, height, width = map_shape
    per_line = LINE_BYTES // itemsize
    b = boxes.detach().cpu().to(torch.float64)
    lines = [torch.zeros(0, dtype=torch.int64)]
    for k in range(b.shape[0]):
        rows, columns = _crop_taps(b[k], height, width, crop_size)  # [R], [X]
        image = int(box_index[k])
        if layout == "channels_last":
            pixels = (image * height + rows[:, None]) * width + columns[None, :]  # [R, X]
            elements = pixels[:, :, None] * channels + torch.arange(channels)  # [R, X, C]
        else:
            planes = (image * channels + torch.arange(channels)) * height  # [C]
            elements = (planes[:, None] + rows[None, :])[:, :, None] * width + columns  # [C, R, X]
        lines.append((elements // per_line).flatten().unique())
    return torch.cat(lines).unique()


def bytes_moved(inputs: AnyInputs, pass_: str) -> int:
    """Compulsory bytes of one call (see the module docstring)."""
    def size(t: torch.Tensor) -> int:
        return t.numel() * t.element_size()

    output = inputs.grad_output  # the output's shape and dtype
    if isinstance(inputs, PyramidInputs):
        maps = sum(size(m) for m in inputs.features)
        total = maps + sum(size(b) for b in inputs.boxes) + size(output)
        return total + (size(inputs.grad_output) + maps if pass_ != "fwd" else 0)
    channels = inputs.image.shape[1]
    read = touched_pixels(inputs.op, inputs.image.shape, inputs.boxes, inputs.kwargs, inputs.box_index)
    total = read * channels * inputs.image.element_size() + size(inputs.boxes) + size(output)
    if inputs.box_index is not None:
        total += size(inputs.box_index)
    if pass_ != "fwd":
        total += size(inputs.grad_output) + size(inputs.image)
    if pass_ == "fwdbwd_boxes":
        total += size(inputs.boxes)
    return total


def written_shapes(workload: Workload, pass_: str) -> tuple[tuple[int, ...], ...]:
    """The shapes of the tensors one crop_and_resize call of ``pass_`` writes: the crops [K, C, ch, cw]; with a
    backward also the image gradient [N, C, H, W]; with box gradients also [K, 4]."""
    n, channels, height, width = workload.map_shape
    crop = workload.crop_size
    shapes = [(workload.boxes, channels, crop, crop)]
    if pass_ != "fwd":
        shapes.append((n, channels, height, width))
    if pass_ == "fwdbwd_boxes":
        shapes.append((workload.boxes, 4))
    return tuple(shapes)


ELEMENT_SIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}


def recounted_bytes(row: dict) -> int:
    """``row["bytes_moved"]`` under today's model: a results row written before ``BYTES_MODEL`` charged the whole
    map as read; this charges the pixels the row's workload touches instead (rebuilt from its fixed-seed boxes).
    Multi-level rows, and rows already counted this way, are returned as they are."""
    if row.get("bytes_model") == BYTES_MODEL or row["op"] not in ("roi_align", "crop_and_resize"):
        return row["bytes_moved"]
    workload = Workload(row["level"], row["boxes"], row["output"], row["sampling_ratio"], row.get("map_scale", 1))
    return row["bytes_moved"] - _whole_map_overcount(row["op"], workload) * row["channels"] * ELEMENT_SIZE[row["dtype"]]


@functools.lru_cache(maxsize=None)
def _whole_map_overcount(op: str, workload: Workload) -> int:
    """Pixels of ``workload``'s map that no tap of ``op`` reads."""
    if op == "roi_align":
        boxes, kwargs = roi_align_inputs(workload)
        box_index = None
    else:
        boxes, box_index, kwargs = crop_and_resize_inputs(workload)
    n, _, height, width = workload.map_shape
    return n * height * width - touched_pixels(op, workload.map_shape, boxes, kwargs, box_index)


# Datasheet peak memory bandwidth (bytes/s) by a substring of torch.cuda.get_device_name(), most specific first:
# the fallback when the device properties lack the memory clock (CUDA 13 dropped cudaDeviceProp.memoryClockRate,
# so torch built against it may report 0). H100 SXM5 80GB HBM3: 3.35 TB/s; H100 PCIe: 2.0; H100 NVL: 3.9;
# H200 (SXM and NVL, 141GB HBM3e): 4.8; GH200: 4.0 (HBM3; the 144GB HBM3e one reads 4.9); A100 SXM4 80GB: 2.039,
# A100 80GB PCIe: 1.935, A100 40GB: 1.555; L40S: 0.864; L4: 0.3.
DATASHEET_BANDWIDTH = (
    ("H100 PCIe", 2.0e12),
    ("H100 NVL", 3.9e12),
    ("H100", 3.35e12),
    ("H200", 4.8e12),
    ("GH200 144G", 4.9e12),
    ("GH200", 4.0e12),
    ("A100-SXM4-80GB", 2.039e12),
    ("A100 80GB PCIe", 1.935e12),
    ("A100", 1.555e12),
    ("L40S", 0.864e12),
    ("L4", 0.3e12),
)
BANDWIDTH_ENV = "BENCH_PEAK_BANDWIDTH"  # bytes/s, overrides both


def _from_properties(device: torch.device) -> float | None:
    props = torch.cuda.get_device_properties(device)
    clock_khz = getattr(props, "memory_clock_rate", 0)
    bus_bits = getattr(props, "memory_bus_width", 0)
    if not (clock_khz and bus_bits):
        return None
    return 2 * clock_khz * 1e3 * bus_bits / 8  # double data rate x bus width: 2 x 2.619 GHz x 640 B on an H100 SXM


def _from_datasheet(device: torch.device) -> float | None:
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in DATASHEET_BANDWIDTH if key in name), None)


def peak_bandwidth_source(device: torch.device) -> str | None:
    """Where ``peak_bandwidth`` came from: ``$BENCH_PEAK_BANDWIDTH``, the device properties, the datasheet table."""
    if device.type != "cuda":
        return None
    if os.environ.get(BANDWIDTH_ENV):
        return BANDWIDTH_ENV
    if _from_properties(device) is not None:
        return "device properties (2 x memory_clock_rate x memory_bus_width)"
    if _from_datasheet(device) is not None:
        return f"datasheet table for {torch.cuda.get_device_name(device)!r} (bench/work.py)"
    return None


def peak_bandwidth(device: torch.device) -> float | None:
    """The memory's peak bytes per second, or None where unknown (CPUs, an unlisted GPU without a memory clock):
    ``$BENCH_PEAK_BANDWIDTH`` if set, else double data rate x bus width from the device properties, else the
    datasheet figure for the device's name (``DATASHEET_BANDWIDTH``)."""
    if device.type != "cuda":
        return None
    if os.environ.get(BANDWIDTH_ENV):
        return float(os.environ[BANDWIDTH_ENV])
    return _from_properties(device) or _from_datasheet(device)


# ------------------------------------------------------------------------------------- measured copy bandwidth

COPY_MIN_BYTES = 512 * 2**20
COPY_LLC_MULTIPLE = 4


def last_level_cache_bytes() -> int | None:
    """The largest CPU cache's size from sysfs (``/sys/devices/system/cpu/cpu0/cache/index*/size``), or None."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()  # e.g. "491520K"
        except OSError:
            continue
        units = {"K": 2**10, "M": 2**20, "G": 2**30}
        sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
    return max(sizes, default=None)


def _available_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def copy_buffer_bytes(device: torch.device, small: bool = False) -> int:
    """Size of each of the two copy buffers: much larger than the last-level cache (see the module docstring)."""
    if small:
        return 64 * 2**20
    if device.type == "cuda":
        l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 0
        return max(1 * 2**30, COPY_LLC_MULTIPLE * l2)
    wanted = max(COPY_MIN_BYTES, COPY_LLC_MULTIPLE * (last_level_cache_bytes() or 0))
    available = _available_memory_bytes()
    if available:  # two buffers, and leave most of the memory to the benchmarks
        wanted = min(wanted, max(COPY_MIN_BYTES, available // 8))
    return wanted


def copy_bandwidth(device: torch.device, nbytes: int, runs: int = 7) -> dict:
    """Measured bytes per second of ``dst.copy_(src)`` (read + write counted) on ``device``: the median of ``runs``
    copies after one untimed copy; returns the rate with how it was measured (for machine_info and extra_info)."""
    numel = nbytes // 4
    src = torch.ones(numel, dtype=torch.float32, device=device)  # written: every page is mapped before timing
    dst = torch.zeros_like(src)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    dst.copy_(src)
    sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        dst.copy_(src)
        sync()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    moved = 2 * numel * 4
    del src, dst
    quartiles = statistics.quantiles(times, n=4) if runs >= 2 else (median, median, median)
    return {
        "bytes_per_second": moved / median,
        "method": (f"dst.copy_(src), float32, {numel * 4 / 2**20:.0f} MiB each, read + write counted, median of "
                   f"{runs} after 1 untimed" + ("" if device.type == "cuda" else
                                                 f", {torch.get_num_threads()} torch threads")),
        "buffer_bytes": numel * 4,
        "llc_bytes": last_level_cache_bytes() if device.type == "cpu" else None,
        "iqr_over_median": (quartiles[2] - quartiles[0]) / median,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
    }
