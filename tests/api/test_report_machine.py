"""The report's machine line (``bench/report.py``: ``cpu_description``) says what each run's CPU reported beyond its
name: two hosts that py-cpuinfo names alike ("Intel(R) Xeon(R) Processor", 2 cores) reported 300 and 480 MiB of
L3 and gave different ratios against TensorFlow."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import report  # noqa: E402


def test_the_report_names_the_cpus_l3_and_vector_isa():
    flags = ["avx", "avx2", "avx512f", "amx_tile"]
    cpu = {"brand_raw": "Intel(R) Xeon(R) Processor", "count": 2, "l3_cache_size": 480 * 2**20, "flags": flags}
    assert report.cpu_description(cpu) == "Intel(R) Xeon(R) Processor x 2 cores, 480 MiB of L3, AVX-512 and AMX"
    cpu = {"brand_raw": "AMD EPYC", "count": 4, "l3_cache_size": 32 * 2**20, "flags": ["avx", "avx2"]}
    assert report.cpu_description(cpu) == "AMD EPYC x 4 cores, 32 MiB of L3, AVX2"
    assert report.cpu_description({}) == "? x ? cores"
