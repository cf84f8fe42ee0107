"""The report's rotated RoIAlign section (``bench/operators/roi_align_rotated.py``, in ``bench/report.py``): each
row's speed-up over the faster of the op's peers in its case and pass, the goals marked met or missed, and the
adaptive cases said to have no grid_sample row."""

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "bench"
sys.path.insert(0, str(BENCH))


def _benchmark(backend: str, case: str, pass_: str, median: float) -> dict:
    info = {"op": "roi_align_rotated", "backend": backend, "impl": backend.removesuffix("_nhwc"), "device": "cpu",
            "dtype": "float32", "case": case, "pass": pass_}
    stats = {"median": median, "mean": median, "iqr": 0.1 * median, "q1": 0.95 * median, "q3": 1.05 * median,
             "min": median, "rounds": 5}
    return {"name": f"test_roi_align_rotated[{backend}-{case}-{pass_}]", "extra_info": info, "stats": stats}


def _rows(tmp_path, times: dict[tuple[str, str, str], float]):
    import results_json

    path = tmp_path / "rotated.json"
    path.write_text(json.dumps({"machine_info": {"node": "test"}, "benchmarks": [
        _benchmark(backend, case, pass_, median) for (backend, case, pass_), median in times.items()]}))
    return results_json.load([path])


def test_rotated_section_compares_with_the_faster_peer_and_marks_the_goals(tmp_path):
    import report
    from operators import roi_align_rotated as rotated

    sr2, sr0 = "dota_p2_k512_7x7_sr2", "dota_p2_k512_7x7_sr0"
    rows, runs = _rows(tmp_path, {
        ("cpp", sr2, "fwd"): 0.010, ("cpp_nhwc", sr2, "fwd"): 0.020,
        ("openvino", sr2, "fwd"): 0.040, ("grid_sample", sr2, "fwd"): 0.050,
        ("cpp", sr2, "fwdbwd"): 0.030, ("grid_sample", sr2, "fwdbwd"): 0.120,
        ("cpp", sr0, "fwd"): 0.010, ("openvino", sr0, "fwd"): 0.020,
        ("cpp", sr0, "fwdbwd"): 0.030,
    })
    table = rotated.report_section(rows, runs)
    # fwd: OpenVINO is the faster peer (40 ms against grid_sample's 50 ms).
    assert "| 4.00x over openvino (3.62-4.42x) | >= 3x: met |" in table
    assert "| 2.00x over openvino (1.81-2.21x) | >= 3x: missed by 1.50x (67% of it) |" in table  # cpp_nhwc
    assert "| grid_sample | cpu | float32 | 50 ms | 5 ms | 0.80x over openvino" in table
    assert "| openvino | cpu | float32 | 40 ms | 4 ms | 1 (the faster peer) | - |" in table
    # fwd+bwd: grid_sample alone (OpenVINO has no backward); adaptive: OpenVINO alone, and no peer with a backward.
    assert "| 4.00x over grid_sample" in table
    assert ("| 30 ms | 3 ms | no peer (grid_sample has no adaptive grid; OpenVINO has no backward) "
            "| not measurable: no peer |") in table
    lines = rotated.goal_lines(rows)
    assert ("- `cpp` (NCHW) fwd >= 3x the faster peer: **missed** (1 of 2 cases with a peer); "
            f"met: {sr2} 4.00x over openvino; missed: {sr0} 2.00x over openvino.") in lines
    assert ("- `cpp_nhwc` (channels_last) fwd >= 3x the faster peer: **missed** (0 of 1 cases with a peer); "
            f"missed: {sr2} 2.00x over openvino.") in lines
    assert (f"- `cpp` (NCHW) fwd+bwd >= 3x the faster peer: **met** (1 of 1 cases with a peer); met: {sr2} 4.00x over "
            f"grid_sample; no peer in {sr0}.") in lines
    assert "roi_align_rotated" not in report.head_ops()  # its own section, not a wide head table
