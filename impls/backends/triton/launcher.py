"""``triton``: both operators, and multi-level roi_align, as hand-written Triton kernels
(``impls/backends/triton/kernels.py``); this module is the launch glue and the backend record.

What it mirrors: the CUDA extension (``csrc/<op>/*_cuda.cu``), pass for pass, in Triton's tile model: a forward that
computes each output element from its samples, an image gradient that adds taps with atomics by default and
pulls them deterministically under ``torch.use_deterministic_algorithms(True)``, and a per-box box gradient with
a fixed reduction. The sampling math is ``impls/backends/reference.py``'s, expression by expression (CONVENTIONS.md §6):
crop_and_resize positions in the compute dtype, roi_align positions in float64 for every dtype.

Where it runs. On a machine with a CUDA GPU the kernels are compiled by Triton and take CUDA tensors: the record
lists ``("cuda",)``. With ``TRITON_INTERPRET=1`` in the environment before ``impls`` is imported, Triton's
interpreter runs the very same kernels on the CPU with numpy, and they take CPU tensors: the record then lists
``("cpu",)`` (``make test`` sets the variable, so the CI checks the kernels on a machine without a GPU). Neither:
the backend reports itself unavailable and says why. The record's devices are decided once, at import, and a
kernel called on the other device raises instead of falling back.

Cost. The feature map is read in place through its strides (contiguous, strided or channels_last: no copy), and
so is the incoming gradient; boxes and box_index are made contiguous (``K x 4``, ``K``). Outputs are written in
place in the layout the project's rule asks (``impls/core/layout.py``): the forward in the feature map's, the image
gradient in the incoming gradient's (channels_last or NCHW). No ``K x C x H x W`` buffer exists anywhere: the
outputs are ``K x C x PH x PW``, the image gradient ``N x C x H x W`` (float32 while accumulating half types,
rounded once). roi_align's per-box geometry (starts, bin sizes, sample grid) is computed on the host in float64
torch ops on ``K`` values, by the computation ``vectorized`` shares, and handed to the kernels as a table with
named rows (``geometry_table.py``): a Python float kernel argument would reach a GPU kernel as float32. The
deterministic image gradient lists every tap once without the channel (4 entries
per sample, 24 B each, 32 B in float64, plus 16 B for the sort), sorts the list by pixel (``torch.sort``,
stable) and then gathers (C reads per entry); roi_align's adaptive grid makes the list's length data-dependent,
which costs one device-to-host read of its total (a fixed sampling_ratio does not). Multi-level roi_align is the
same kernels over a pyramid (roi_align is its one-level case): the maps reach a kernel as a tuple, one entry per
level with its sizes and strides, each read in place; the table gets each box's level and its level's scale,
gathered on the device (no host read), so every pass is one launch for all levels. Under the interpreter every
program runs in Python: milliseconds per kernel on the tests' inputs, far too slow for real workloads (use it to
check, not to compute).

Under ``torch.compile`` each of the nine kernels is one opaque custom operator, ``impls::triton_<name>``
(``compilable`` below, schemas and fakes in ``impls/ops/<op>/spec.py``): the graph calls this module's launch code
at run time, so compiled and eager calls run the same kernels; eager calls skip the operator.

Not checked without a GPU (this module was written and tested on a CPU, under the interpreter): compilation of
these kernels by GPU Triton, in particular float64 arithmetic and ``tl.atomic_add`` on float64, and their speed.
"""

from __future__ import annotations

import os

import torch

from ...core import layout as _layout
from ...core import operators
from ...core.registry import FLOAT_DTYPES, Backend, OpKernels, register
from .geometry_table import GRID_H, GRID_W, roi_geometry_table

# The interpreter is chosen by triton when a kernel is decorated, i.e. when ``kernels`` is imported: read
# the variable once, here, so that the record and the kernels agree.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

try:
    import triton
    import triton.language as tl

    from . import kernels

    _IMPORT_ERROR = None
except Exception as e:  # noqa: BLE001  (triton missing, or a triton too old for these kernels)
    _IMPORT_ERROR = f"{type(e).__name__}: {e}"

# Where the kernels run in this process: the CPU under the interpreter, else the GPU.
DEVICE = "cpu" if INTERPRET else "cuda"
# Elements per program tile (BLOCK_K * BLOCK_E): 8 per thread at Triton's default 4 warps.
TILE = 1024
# Elements per program in the gather step of the deterministic image gradient.
GATHER_BLOCK = 1024


def _unavailable_reason():
    if _IMPORT_ERROR is not None:
        return f"triton could not be imported ({_IMPORT_ERROR}); install triton (it comes with torch's CUDA wheels)"
    if INTERPRET:
        return None
    if not torch.cuda.is_available():
        return (
            "no CUDA GPU on this machine; set TRITON_INTERPRET=1 before importing impls to run the Triton "
            "kernels on the CPU under Triton's interpreter (slow: for testing)"
        )
    return None


# ------------------------------------------------------------------------------------------------ helpers


def _check_device(*tensors: torch.Tensor) -> None:
    """The kernels run on DEVICE only: no silent fallback (and no interpreter run on CUDA tensors)."""
    for t in tensors:
        if t.device.type != DEVICE:
            how = (
                "under TRITON_INTERPRET=1 they take CPU tensors" if INTERPRET
                else "without TRITON_INTERPRET=1 they take CUDA tensors"
            )
            raise RuntimeError(f"the triton backend's kernels cannot run on {t.device.type} here: {how}")


def _compute(dtype: torch.dtype):
    """(torch dtype, triton dtype) of the arithmetic: float64 for float64, float32 for the others."""
    return (torch.float64, tl.float64) if dtype == torch.float64 else (torch.float32, tl.float32)


def _blocks(rows: int, cols: int) -> tuple[int, int]:
    """(BLOCK_K, BLOCK_E) for a [rows x cols] problem: a power-of-two row of up to TILE elements, and as many
    boxes as fill the rest of the tile (several boxes per program only when a box's row is short)."""
    block_e = min(triton.next_power_of_2(max(cols, 1)), TILE)
    block_k = min(triton.next_power_of_2(max(rows, 1)), TILE // block_e)
    return block_k, block_e


def _strides(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.stride())


# Compiler options of every launch. enable_fp_fusion=False: no fused multiply-add on a GPU, so that every
# expression rounds as the reference's does (tests/backends/triton_compile_check.py reads the PTX for it).
LAUNCH_OPTIONS = {"enable_fp_fusion": False}


def _launch(kernel, grid, *args, **meta):
    kernel[grid](*args, **LAUNCH_OPTIONS, **meta)


def _atomic_image_grad(kernel, grad: torch.Tensor, inputs: tuple, K: int, N: int, C: int, H: int, W: int,
                       out_height: int, out_width: int, **constexprs) -> torch.Tensor:
    """The default image gradient: ``kernel`` adds every sample's taps with atomics into a zeroed [N, C, H, W] in
    the incoming gradient's layout (float32 while accumulating half types), rounded once to grad's dtype.
    ``inputs`` are the kernel's arguments between ``grad`` and the output (the boxes, or the roi geometry)."""
    acc, compute = _compute(grad.dtype)
    grad_image = torch.empty((N, C, H, W), dtype=acc, device=grad.device, memory_format=_layout.memory_format(grad))
    grad_image.zero_()
    if grad.numel() > 0:
        block_k, block_e = _blocks(K, C * out_height * out_width)
        _launch(
            kernel, (triton.cdiv(K, block_k), triton.cdiv(C * out_height * out_width, block_e)),
            grad, *inputs, grad_image, K, N, C, H, W, out_height, out_width, *_strides(grad), *_strides(grad_image),
            COMPUTE=compute, BLOCK_K=block_k, BLOCK_E=block_e, **constexprs,
        )
    return grad_image.to(grad.dtype)  # half types: the one rounding (.to keeps the layout)


def _pixel_offsets(N: int, heights, widths) -> tuple[int, ...]:
    """Level l's first pixel in the tap entries' numbering: N * (H_0 * W_0 + ... + H_{l-1} * W_{l-1})."""
    offsets, total = [], 0
    for h, w in zip(heights, widths):
        offsets.append(total)
        total += N * h * w
    return tuple(offsets)


def _gather(entries, grad: torch.Tensor, N: int, C: int, heights, widths, cells: int, cw: int, roi: bool):
    """Deterministic image gradient, step 2: sort the tap entries by pixel (stably: the reference's order within
    a pixel) and let gather_taps_kernel sum each pixel's list, for every level at once (the entries number the
    levels' pixels one after another). Returns one [N, C, H_l, W_l] per level in grad's dtype and layout."""
    pixel, cell_of, weight_a, weight_b = entries
    layout = _layout.memory_format(grad)
    grad_images = [torch.empty((N, C, h, w), dtype=grad.dtype, device=grad.device, memory_format=layout)
                   for h, w in zip(heights, widths)]
    total = sum(g.numel() for g in grad_images)
    if total == 0:
        return grad_images
    planes = tuple(h * w for h, w in zip(heights, widths))
    firsts = tuple(N * C * sum(planes[:level]) for level in range(len(planes)))
    sorted_pixel, order = torch.sort(pixel, stable=True)
    # Entries without a tap (pixel -1) sort first, before start[0]: no pixel reads them.
    start = torch.searchsorted(sorted_pixel, torch.arange(N * sum(planes) + 1, device=pixel.device))
    _, compute = _compute(grad.dtype)
    _launch(
        kernels.gather_taps_kernel, (triton.cdiv(total, GATHER_BLOCK),),
        start, order, cell_of, weight_a, weight_b, grad, tuple(grad_images),
        total, C, cells, cw, firsts, planes, _pixel_offsets(N, heights, widths), *_strides(grad),
        ROI=roi, CHANNELS_LAST=layout == torch.channels_last, LEVELS=len(planes), COMPUTE=compute,
        BLOCK=GATHER_BLOCK,
    )
    return grad_images


def _sample_slots(grid_h: torch.Tensor, grid_w: torch.Tensor, cells: int, sampling_ratio: int):
    """(first_sample [K] int64, total): where box k's samples start in the deterministic image gradient's tap list,
    and the list's length in samples, from the boxes' grids (float64 [K] rows of a geometry table, 0 for a box not
    read). With a fixed sampling_ratio every box has its cells * ratio^2 slots (a box not read leaves them without
    taps), so the length is known on the host; the adaptive grids make it data-dependent, read back once (one
    synchronization on a GPU). A negative adaptive grid (a flipped aligned box) has no samples."""
    K = grid_h.shape[0]
    if sampling_ratio > 0:
        per_box = torch.full((K,), cells * sampling_ratio**2, dtype=torch.int64, device=grid_h.device)  # [K]
        total = K * cells * sampling_ratio**2
    else:  # [K]; 0 for a box not read
        per_box = (cells * grid_h.clamp(min=0) * grid_w.clamp(min=0)).to(torch.int64)
        total = int(per_box.sum()) if K else 0
    return torch.cumsum(per_box, 0) - per_box, total


def _tap_entries(count: int, dtype: torch.dtype, device):
    """(pixel, cell, weight a, weight b) arrays for ``count`` tap entries, pixel -1 (no tap) until a kernel writes
    an entry: an entry left unwritten is never read."""
    acc, _ = _compute(dtype)
    return (
        torch.full((count,), -1, dtype=torch.int64, device=device),
        torch.empty(count, dtype=torch.int64, device=device),
        torch.empty(count, dtype=acc, device=device),
        torch.empty(count, dtype=acc, device=device),
    )


# ------------------------------------------------------------------------------------------ crop_and_resize


def crop_and_resize_forward(image, boxes, box_index, crop_height, crop_width, method, extrapolation_value):
    _check_device(image, boxes, box_index)
    N, C, H, W = image.shape
    K = boxes.shape[0]
    out = torch.empty((K, C, crop_height, crop_width), dtype=image.dtype, device=image.device,
                      memory_format=_layout.memory_format(image))  # the feature map's layout
    if out.numel() == 0:
        return out
    acc, compute = _compute(image.dtype)
    # One element of the compute dtype: a float64 extrapolation value must not pass through a float32 argument.
    extrapolation = torch.full((1,), float(extrapolation_value), dtype=acc, device=image.device)
    block_k, block_e = _blocks(K, C * crop_height * crop_width)
    _launch(
        kernels.crop_and_resize_forward_kernel,
        (triton.cdiv(K, block_k), triton.cdiv(C * crop_height * crop_width, block_e)),
        image, boxes.contiguous(), box_index.contiguous(), extrapolation, out,
        K, N, C, H, W, crop_height, crop_width, *_strides(image), *_strides(out),
        NEAREST=method == "nearest", COMPUTE=compute, BLOCK_K=block_k, BLOCK_E=block_e,
    )
    return out


def crop_and_resize_backward_input(
    grad, boxes, box_index, crop_height, crop_width, batch_size, channels, height, width, method
):
    _check_device(grad, boxes, box_index)
    N, C, H, W = batch_size, channels, height, width
    K = boxes.shape[0]
    cells = crop_height * crop_width
    nearest = method == "nearest"
    boxes, box_index = boxes.contiguous(), box_index.contiguous()
    if torch.are_deterministic_algorithms_enabled():
        _, compute = _compute(grad.dtype)
        entries = _tap_entries(K * cells * 4, grad.dtype, grad.device)
        if K * cells > 0:
            block_k, block_e = _blocks(K, cells)
            _launch(
                kernels.crop_and_resize_taps_kernel, (triton.cdiv(K, block_k), triton.cdiv(cells, block_e)),
                boxes, box_index, *entries, K, N, H, W, crop_height, crop_width,
                NEAREST=nearest, COMPUTE=compute, BLOCK_K=block_k, BLOCK_E=block_e,
            )
        return _gather(entries, grad, N, C, [H], [W], cells, crop_width, roi=False)[0]
    return _atomic_image_grad(kernels.crop_and_resize_image_grad_atomic_kernel, grad, (boxes, box_index), K, N, C, H,
                              W, crop_height, crop_width, NEAREST=nearest)


def crop_and_resize_backward_boxes(grad, image, boxes, box_index, crop_height, crop_width, method):
    _check_device(grad, image, boxes, box_index)
    N, C, H, W = image.shape
    K = boxes.shape[0]
    grad_boxes = torch.zeros((K, 4), dtype=boxes.dtype, device=boxes.device)
    # Nearest sampling has zero derivative with respect to the box almost everywhere: the gradient stays 0.
    if method == "nearest" or K == 0 or C == 0:
        return grad_boxes
    _, compute = _compute(image.dtype)
    block_k, block_e = _blocks(K, C * crop_height * crop_width)
    _launch(
        kernels.crop_and_resize_boxes_grad_kernel, (triton.cdiv(K, block_k),),
        grad, image, boxes.contiguous(), box_index.contiguous(), grad_boxes,
        K, N, C, H, W, crop_height, crop_width, *_strides(image), *_strides(grad),
        COMPUTE=compute, BLOCK_K=block_k, BLOCK_E=block_e,
    )
    return grad_boxes


# ------------------------------------------------------------------------------------------------ roi_align
#
# roi_align is multi-level roi_align's one-level case: one set of kernels (``kernels.py``) takes the pyramid's
# maps as tuples, one entry per level, and box k's level from the geometry table (levels None: every box on 0).


def _per_level(tensors) -> dict:
    """The levels' sizes and strides as the kernels take them: tuples with one entry per tensor."""
    strides = [_strides(t) for t in tensors]
    return dict(
        heights=tuple(t.shape[2] for t in tensors), widths=tuple(t.shape[3] for t in tensors),
        s_n=tuple(s[0] for s in strides), s_c=tuple(s[1] for s in strides),
        s_h=tuple(s[2] for s in strides), s_w=tuple(s[3] for s in strides),
    )


def _pyramid_forward(features, rois, levels, scales, pooled_height, pooled_width, sampling_ratio, aligned):
    _check_device(*features, rois)
    N, C = features[0].shape[:2]
    K = rois.shape[0]
    out = torch.empty((K, C, pooled_height, pooled_width), dtype=features[0].dtype, device=features[0].device,
                      memory_format=_layout.memory_format(features[0]))  # the (first) feature map's layout
    if out.numel() == 0:
        return out
    geometry = roi_geometry_table(rois, N, scales, levels, pooled_height, pooled_width, sampling_ratio, aligned)
    _, compute = _compute(features[0].dtype)
    block_k, block_e = _blocks(K, C * pooled_height * pooled_width)
    level = _per_level(features)
    _launch(
        kernels.roi_align_forward_kernel,
        (triton.cdiv(K, block_k), triton.cdiv(C * pooled_height * pooled_width, block_e)),
        tuple(features), geometry, out, K, N, C, pooled_height, pooled_width, level["heights"], level["widths"],
        level["s_n"], level["s_c"], level["s_h"], level["s_w"], *_strides(out),
        LEVELS=len(features), COMPUTE=compute, BLOCK_K=block_k, BLOCK_E=block_e,
    )
    return out


def _pyramid_backward_input(grad, rois, levels, scales, pooled_height, pooled_width, N, C, heights, widths,
                            sampling_ratio, aligned):
    """One gradient per level, [N, C, H_l, W_l] each in the incoming gradient's layout."""
    _check_device(grad, rois)
    K = rois.shape[0]
    cells = pooled_height * pooled_width
    heights, widths = tuple(heights), tuple(widths)
    geometry = roi_geometry_table(rois, N, scales, levels, pooled_height, pooled_width, sampling_ratio, aligned)
    acc, compute = _compute(grad.dtype)
    if torch.are_deterministic_algorithms_enabled():
        first_sample, total = _sample_slots(geometry[GRID_H], geometry[GRID_W], cells, sampling_ratio)
        entries = _tap_entries(total * 4, grad.dtype, grad.device)
        if total > 0:
            block_k, block_e = _blocks(K, cells)
            _launch(
                kernels.roi_align_taps_kernel, (triton.cdiv(K, block_k), triton.cdiv(cells, block_e)),
                geometry, first_sample, *entries, K, N, pooled_height, pooled_width, heights, widths,
                _pixel_offsets(N, heights, widths),
                LEVELS=len(heights), COMPUTE=compute, BLOCK_K=block_k, BLOCK_E=block_e,
            )
        return _gather(entries, grad, N, C, heights, widths, cells, pooled_width, roi=True)
    layout = _layout.memory_format(grad)
    grad_inputs = [torch.zeros((N, C, h, w), dtype=acc, device=grad.device).contiguous(memory_format=layout)
                   for h, w in zip(heights, widths)]
    if grad.numel() > 0:
        block_k, block_e = _blocks(K, C * cells)
        level = _per_level(grad_inputs)
        _launch(
            kernels.roi_align_image_grad_atomic_kernel, (triton.cdiv(K, block_k), triton.cdiv(C * cells, block_e)),
            grad, geometry, tuple(grad_inputs), K, N, C, pooled_height, pooled_width, heights, widths,
            *_strides(grad), level["s_n"], level["s_c"], level["s_h"], level["s_w"],
            LEVELS=len(heights), COMPUTE=compute, BLOCK_K=block_k, BLOCK_E=block_e,
        )
    return [g.to(grad.dtype) for g in grad_inputs]  # half types: the one rounding (.to keeps the layout)


def _pyramid_backward_boxes(grad, features, rois, levels, scales, pooled_height, pooled_width, sampling_ratio,
                            aligned):
    _check_device(grad, *features, rois)
    N, C = features[0].shape[:2]
    K = rois.shape[0]
    grad_rois = torch.zeros((K, 5), dtype=rois.dtype, device=rois.device)
    if K == 0 or C == 0:
        return grad_rois
    geometry = roi_geometry_table(rois, N, scales, levels, pooled_height, pooled_width, sampling_ratio, aligned)
    _, compute = _compute(features[0].dtype)
    block_k, block_e = _blocks(K, C * pooled_height * pooled_width)
    level = _per_level(features)
    _launch(
        kernels.roi_align_boxes_grad_kernel, (triton.cdiv(K, block_k),),
        grad, tuple(features), geometry, grad_rois, K, N, C, pooled_height, pooled_width,
        level["heights"], level["widths"], level["s_n"], level["s_c"], level["s_h"], level["s_w"], *_strides(grad),
        LEVELS=len(features), COMPUTE=compute, BLOCK_K=block_k, BLOCK_E=block_e,
    )
    return grad_rois


def roi_align_forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    return _pyramid_forward([input], rois, None, [spatial_scale], pooled_height, pooled_width, sampling_ratio,
                            aligned)


def roi_align_backward_input(
    grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width, sampling_ratio,
    aligned,
):
    return _pyramid_backward_input(grad, rois, None, [spatial_scale], pooled_height, pooled_width, batch_size,
                                   channels, [height], [width], sampling_ratio, aligned)[0]


def roi_align_backward_boxes(grad, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    return _pyramid_backward_boxes(grad, [input], rois, None, [spatial_scale], pooled_height, pooled_width,
                                   sampling_ratio, aligned)


def multiscale_roi_align_forward(features, rois, levels, scales, pooled_height, pooled_width, sampling_ratio,
                                 aligned):
    _check_device(levels)
    return _pyramid_forward(features, rois, levels, scales, pooled_height, pooled_width, sampling_ratio, aligned)


def multiscale_roi_align_backward_input(grad, rois, levels, scales, pooled_height, pooled_width, batch_size,
                                        channels, heights, widths, sampling_ratio, aligned):
    _check_device(levels)
    return _pyramid_backward_input(grad, rois, levels, scales, pooled_height, pooled_width, batch_size, channels,
                                   heights, widths, sampling_ratio, aligned)


def multiscale_roi_align_backward_boxes(grad, features, rois, levels, scales, pooled_height, pooled_width,
                                        sampling_ratio, aligned):
    _check_device(levels)
    return _pyramid_backward_boxes(grad, features, rois, levels, scales, pooled_height, pooled_width,
                                   sampling_ratio, aligned)


# ---------------------------------------------------------------------------------- torch.compile


def compilable(fn, tags=(), name=None):
    """``fn`` for eager calls; while ``torch.compile`` traces, the opaque operator ``impls::triton_<fn name>``
    (the schema and fake of ``impls::<fn name>``, ``core/operators.py``), which runs ``fn`` when the graph runs.

    Dynamo cannot trace this module's launch code: under the interpreter it fails inside triton, and on a GPU it
    would have to follow every kernel's launch arguments. Eager calls skip the operator's dispatch."""
    name = name or fn.__name__
    schema = operators.SCHEMAS[name]
    op = torch.library.custom_op(f"impls::triton_{name}", fn, mutates_args=(), schema=schema, tags=tags)
    op.register_fake(operators.FAKES[name])

    def call(*args):
        return op(*args) if torch.compiler.is_compiling() else fn(*args)

    return call


BACKEND = register(
    Backend(
        name="triton",
        summary=(
            "hand-written Triton kernels (impls/backends/triton/kernels.py): atomic or deterministic (sorted gather) "
            "image gradient; runs on cuda, or on cpu under TRITON_INTERPRET=1 (Triton's interpreter: slow, for testing)"
        ),
        devices=(DEVICE,),
        dtypes=FLOAT_DTYPES,
        image_grad_modes=("atomic", "deterministic"),
        kernels={
            "crop_and_resize": OpKernels(
                compilable(crop_and_resize_forward), compilable(crop_and_resize_backward_input),
                compilable(crop_and_resize_backward_boxes),
            ),
            "roi_align": OpKernels(
                compilable(roi_align_forward),
                # The deterministic image gradient reads a length back to the host with the adaptive grid: no CUDA
                # graph may hold it.
                compilable(roi_align_backward_input, tags=(torch.Tag.cudagraph_unsafe,)),
                compilable(roi_align_backward_boxes),
            ),
            "multiscale_roi_align": OpKernels(
                compilable(multiscale_roi_align_forward),
                compilable(multiscale_roi_align_backward_input, tags=(torch.Tag.cudagraph_unsafe,)),
                compilable(multiscale_roi_align_backward_boxes),
            ),
        },
        unavailable_reason=_unavailable_reason,
    )
)
