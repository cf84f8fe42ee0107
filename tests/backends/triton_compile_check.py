"""Compiles the ``triton`` backend's kernels for NVIDIA GPUs without a GPU, and checks the instructions that the
precision rules depend on. Run as a script (``tests/backends/test_triton_backend.py`` does, in a subprocess):
``TRITON_INTERPRET`` must be unset when the kernels are imported, or triton hands out interpreted functions.

Triton's interpreter, which runs the tests on a CPU, accepts code that the GPU compiler rejects (and the other
way round); this compiles every kernel ahead of time (``triton.compile`` with an explicit target, down to a
cubin with the ptxas that ships with triton) for sm_90 in float64, float32 and bfloat16 storage, for sm_80 in
float64 and float32, and once with every integer argument that triton may specialize to the constant 1 (the
strides; the sizes are listed in ``do_not_specialize``). It then reads the PTX: no fused multiply-add
(``enable_fp_fusion=False``; the positions round as the reference's), only IEEE-rounded divisions (``div.rn``:
``_div``), and relaxed float32/float64 atomics in the atomic image gradients.

Prints one line per failure and exits 1 if there was one.
"""

from __future__ import annotations

import importlib
import os
import pathlib
import re
import sys

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("run with TRITON_INTERPRET unset: the kernels must be compiled, not interpreted")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from impls.backends.triton import kernels  # noqa: E402
from impls.backends.triton.launcher import LAUNCH_OPTIONS  # noqa: E402

# Pointer arguments by name: the element type given the storage dtype and the compute dtype.
POINTERS = {
    "image": "store", "input": "store", "out": "store", "grad": "store", "boxes": "store", "grad_boxes": "store",
    "grad_rois": "store", "extrapolation": "compute", "grad_image": "compute", "grad_input": "compute",
    "weight_a": "compute", "weight_b": "compute", "geometry": "fp64",
    "box_index": "i64", "first_sample": "i64", "pixel": "i64", "cell_of": "i64", "start": "i64", "order": "i64",
}
# Tuple arguments, one entry per pyramid level (roi_align's kernels and the gather): pointers (by the kind above)
# or integers (sizes, strides, offsets), in the kernels that take LEVELS. Each is compiled for one level and for
# LEVELS levels.
TUPLE_POINTERS = {"maps": "store", "grad_inputs": "compute", "grad_images": "store"}
TUPLE_INTEGERS = ("heights", "widths", "s_n", "s_c", "s_h", "s_w", "b_n", "b_c", "b_h", "b_w", "pixel_offsets",
                  "firsts", "planes")
LEVELS = 4
# (kernel, constexprs) with small blocks: what is checked is the code, not the tile size.
KERNELS = [
    (kernels.crop_and_resize_forward_kernel, dict(NEAREST=False, BLOCK_K=2, BLOCK_E=64)),
    (kernels.crop_and_resize_forward_kernel, dict(NEAREST=True, BLOCK_K=2, BLOCK_E=64)),
    (kernels.crop_and_resize_image_grad_atomic_kernel, dict(NEAREST=False, BLOCK_K=2, BLOCK_E=64)),
    (kernels.crop_and_resize_image_grad_atomic_kernel, dict(NEAREST=True, BLOCK_K=2, BLOCK_E=64)),
    (kernels.crop_and_resize_taps_kernel, dict(NEAREST=False, BLOCK_K=2, BLOCK_E=64)),
    (kernels.crop_and_resize_taps_kernel, dict(NEAREST=True, BLOCK_K=2, BLOCK_E=64)),
    (kernels.crop_and_resize_boxes_grad_kernel, dict(BLOCK_K=2, BLOCK_E=64)),
    *((kernel, dict(LEVELS=levels, BLOCK_K=2, BLOCK_E=64)) for levels in (1, LEVELS) for kernel in (
        kernels.roi_align_forward_kernel, kernels.roi_align_image_grad_atomic_kernel, kernels.roi_align_taps_kernel,
        kernels.roi_align_boxes_grad_kernel)),
    (kernels.gather_taps_kernel, dict(ROI=False, CHANNELS_LAST=False, LEVELS=1, BLOCK=128)),
    (kernels.gather_taps_kernel, dict(ROI=True, CHANNELS_LAST=True, LEVELS=1, BLOCK=128)),
    (kernels.gather_taps_kernel, dict(ROI=True, CHANNELS_LAST=False, LEVELS=LEVELS, BLOCK=128)),
]


def _operator_kernels() -> list:
    """Every ``*_kernel`` of an operator's own kernel module (``impls/backends/triton/<op>_kernels.py``), whose
    only constexprs are the tile's block sizes."""
    found = []
    for path in sorted(pathlib.Path(kernels.__file__).parent.glob("*_kernels.py")):
        module = importlib.import_module(f"impls.backends.triton.{path.stem}")
        found += [(fn, dict(BLOCK_K=2, BLOCK_E=64)) for name, fn in vars(module).items()
                  if name.endswith("_kernel") and isinstance(fn, triton.runtime.JITFunction)
                  and fn.fn.__module__ == module.__name__]
    assert found, "no operator kernel module found next to kernels.py"
    return found


KERNELS += _operator_kernels()


def compile_kernel(fn, store: str, compute, constexprs: dict, ones: bool, sm: int) -> str:
    signature, constants = {}, {}
    levels = constexprs.get("LEVELS")  # None: a kernel without tuple arguments (crop_and_resize's s_n is an int)
    for name in fn.arg_names:
        if name in constexprs or name == "COMPUTE":
            signature[name] = "constexpr"
            constants[name] = compute if name == "COMPUTE" else constexprs[name]
        elif name in POINTERS:
            kind = POINTERS[name]
            signature[name] = "*" + {"store": store, "compute": compute.name}.get(kind, kind)
        elif levels and name in TUPLE_POINTERS:
            signature[name] = ("*" + {"store": store, "compute": compute.name}[TUPLE_POINTERS[name]],) * levels
        elif levels and name in TUPLE_INTEGERS:
            signature[name] = ("i32",) * levels
        elif ones and name not in fn.do_not_specialize:  # an integer triton compiles as the constant 1 when it is
            signature[name] = "constexpr"
            constants[name] = 1
        else:
            signature[name] = "i32"
    compiled = triton.compile(ASTSource(fn, signature, constants), target=GPUTarget("cuda", sm, 32),
                              options=dict(LAUNCH_OPTIONS))  # the options the backend launches with
    return compiled.asm["ptx"]


def main() -> int:
    failures = []
    for sm, stores in ((90, ("fp64", "fp32", "bf16")), (80, ("fp64", "fp32"))):
        for store in stores:
            compute = tl.float64 if store == "fp64" else tl.float32
            for fn, constexprs in KERNELS:
                for ones in (False, True) if store == "fp32" else (False,):
                    what = f"sm_{sm} {fn.__name__} {store} {constexprs} ones={ones}"
                    try:
                        ptx = compile_kernel(fn, store, compute, constexprs, ones, sm)
                    except Exception as e:  # noqa: BLE001
                        failures.append(f"{what}: does not compile: {type(e).__name__}: {str(e)[:500]}")
                        continue
                    if re.search(r"\bdiv\.(full|approx)", ptx):
                        failures.append(f"{what}: approximate division in the PTX")
                    if re.search(r"\bfma\.", ptx):
                        failures.append(f"{what}: fused multiply-add in the PTX")
                    atomics = set(re.findall(r"\b(?:atom|red)\.[\w.]*add\.f\d+", ptx))
                    expected = {"atom.global.gpu.relaxed.add." + ("f64" if store == "fp64" else "f32")}
                    if "atomic" in fn.__name__ and atomics != expected:
                        failures.append(f"{what}: atomics {sorted(atomics)}, expected {sorted(expected)}")
    for line in failures:
        print(line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
