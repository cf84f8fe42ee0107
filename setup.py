"""Builds the one extension module ``impls._C``: the C++ CPU kernels, plus the CUDA kernels when a toolkit is found.

    pip install --no-build-isolation -e .

A CUDA toolkit is used when ``CUDA_HOME`` (default ``/usr/local/cuda``) holds ``bin/nvcc``; a GPU is not needed
to compile. Without a toolkit only the CPU kernels are built and the ``cuda`` backend reports itself unavailable.
Compiler flags keep float64 results bit-exact with ``impls/backends/reference.py``: no fast-math and no FP contraction
(a fused multiply-add rounds once where the reference rounds twice).
"""

import glob
import os
import platform

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _cuda_home():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    return home if os.path.exists(os.path.join(home, "bin", "nvcc")) else None


def _cpu_isa_flags():
    """``-mavx2`` when the machine building the extension (which is the one running it: it is built in place) has
    AVX2: the channels-innermost loops then run 8 floats wide instead of SSE2's 4; and AVX-512 (F, VL, BW, DQ: the
    x86-64-v4 set) where it has those too, 16 floats wide; with AVX2, F16C (float16 <-> float32 in registers: the
    NCHW kernels' transposes, and c10::Half's own conversion, which then uses the same instruction). Vector width
    changes no result (contraction stays off, and the compiler never reassociates without fast-math).
    ``IMPLS_CPU_ISA=generic`` builds for any x86-64 CPU, ``IMPLS_CPU_ISA=avx2`` stops at AVX2."""
    isa = os.environ.get("IMPLS_CPU_ISA")
    if isa == "generic" or platform.machine() not in ("x86_64", "AMD64"):
        return []
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
    if "avx2" not in flags:
        return []
    avx2 = ["-mavx2", *(["-mf16c"] if "f16c" in flags else [])]
    avx512 = ["avx512f", "avx512vl", "avx512bw", "avx512dq"]
    if isa == "avx2" or not all(flag in flags for flag in avx512):
        return avx2
    return [*avx2, *(f"-m{flag}" for flag in avx512)]


def _sources(pattern):
    """Every file matching ``pattern`` under csrc/ (``csrc/common`` and one folder per operator), relative paths."""
    return [os.path.relpath(p, ROOT) for p in sorted(glob.glob(os.path.join(ROOT, "csrc", "**", pattern),
                                                               recursive=True))]


def _extension():
    cuda_home = _cuda_home()
    if cuda_home is not None:
        # Must be set before torch.utils.cpp_extension is imported: unset, torch guesses /usr/local (where an
        # nvcc wrapper may live) and linking fails with `cannot find -lcudart`.
        os.environ["CUDA_HOME"] = cuda_home
        # Unset, torch asks the (possibly absent) GPU for its architecture and fails with an IndexError.
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")

    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    sources = _sources("*.cpp")
    # Every kernel file includes its headers from the csrc root: "common/bilinear.h", "crop_and_resize/...".
    include_dirs = [os.path.join(ROOT, "csrc")]
    # -fopenmp: at::parallel_for is an OpenMP loop compiled into the extension itself; without the flag its pragma
    # is ignored and every CPU kernel runs on one thread.
    cxx = ["-O3", "-ffp-contract=off", "-fno-fast-math", "-fopenmp", *_cpu_isa_flags()]
    link = ["-fopenmp"]
    if cuda_home is None:
        return (CppExtension("impls._C", sources, include_dirs=include_dirs, extra_compile_args={"cxx": cxx},
                             extra_link_args=link), BuildExtension)

    sources += _sources("*.cu")
    try:
        # cuBLAS/cuSPARSE headers (needed by ATen/cuda/CUDAContext.h) ship in the nvidia wheels torch installed,
        # not in a minimal toolkit.
        from cuda.pathfinder import find_nvidia_header_directory

        header_dir = find_nvidia_header_directory("cusparse")
        if header_dir:
            include_dirs.append(header_dir)
    except ImportError:
        pass
    # --fmad=false: no contraction on the GPU either, so CUDA float64 follows the same roundings as the CPU.
    nvcc = ["-O3", "--fmad=false"]
    ext = CUDAExtension(
        "impls._C",
        sources,
        include_dirs=include_dirs,
        extra_compile_args={"cxx": cxx, "nvcc": nvcc},
        extra_link_args=link,
    )
    return ext, BuildExtension


ext, build_ext = _extension()


class BuildInBuildDir(build_ext.with_options(use_ninja=True)):
    """build_ext that always builds in build/ (objects in build/temp, the library in build/lib, then copied in
    place): `pip install -e .` (`make env`) would otherwise compile in a temporary directory that it then deletes,
    and `setup.py build_ext --inplace` (`make build`) compile every object again. In one directory ninja finds the
    objects up to date, so make build after make env only relinks, and later recompiles what changed in csrc/."""

    def initialize_options(self):
        super().initialize_options()
        self.build_temp = os.path.join(ROOT, "build", "temp")
        self.build_lib = os.path.join(ROOT, "build", "lib")


setup(ext_modules=[ext], cmdclass={"build_ext": BuildInBuildDir})
