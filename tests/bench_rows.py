"""pytest-benchmark JSON rows made by hand, for the tests of ``bench/report.py`` and ``bench/results_json.py``: a
crop_and_resize float32 forward row on the CPU with a chosen median, so that a table's numbers can be worked out by
hand."""


def benchmark_row(label: str, median: float, allocator: str, case: str = "p2_k512_14x14", iqr: float = 0.0,
                  **extra) -> dict:
    """The row of ``label`` (its backend and impl) timed at ``median`` seconds under ``allocator``; ``extra`` goes into
    its ``extra_info`` (``write_limit``, ``read_limit``, ...)."""
    info = {"op": "crop_and_resize", "backend": label, "impl": label, "device": "cpu", "dtype": "float32",
            "case": case, "pass": "fwd", "allocator": allocator, **extra}
    stats = {"median": median, "mean": median, "iqr": iqr, "q1": median, "q3": median, "min": median, "rounds": 5}
    return {"name": f"test_crop_and_resize[{label}]", "extra_info": info, "stats": stats}
