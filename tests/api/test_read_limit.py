"""The read-limit rows of ``make bench`` (issue 29; ``bench/matrix.py``): the cache lines a crop_and_resize forward's
taps touch in each layout (``work.touched_lines``), the loop that reads them (``bench/read_lines.cpp``), and the
report's table of each forward's share of that limit (``report.read_limit_table``)."""

import json
import sys
from pathlib import Path

import pytest
import torch
from bench_rows import benchmark_row

import impls

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import work  # noqa: E402  (bench/work.py)


def _box(y1: float, x1: float, y2: float, x2: float, height: int, width: int) -> torch.Tensor:
    """A normalized (y1, x1, y2, x2) box [1, 4] from map pixel positions."""
    return torch.tensor([[y1 / (height - 1), x1 / (width - 1), y2 / (height - 1), x2 / (width - 1)]],
                        dtype=torch.float64)


def test_lines_of_one_box_by_hand():
    # A [1, 2, 4, 40] map, one 2x4 crop: samples at rows 1.25 and 1.75, columns 17.25 to 19.75, so taps on rows 1-2
    # and columns 17-20. NCHW: element (c * 4 + r) * 40 + x, line = element // 16: plane 0 rows 1 and 2 give
    # elements 57-60 (line 3) and 97-100 (line 6); plane 1 gives 217-220 (line 13) and 257-260 (line 16).
    # Channels_last: element (r * 40 + x) * 2 + c: row 1 gives 114-121 (line 7), row 2 194-201 (line 12).
    boxes = _box(1.25, 17.25, 1.75, 19.75, 4, 40)
    index = torch.zeros(1, dtype=torch.int64)
    nchw = work.touched_lines((1, 2, 4, 40), boxes, index, (2, 4), "contiguous")
    nhwc = work.touched_lines((1, 2, 4, 40), boxes, index, (2, 4), "channels_last")
    assert nchw.tolist() == [3, 6, 13, 16]
    assert nhwc.tolist() == [7, 12]


def _random_boxes(count: int, images: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    corners = torch.rand(count, 2, 2, generator=g, dtype=torch.float64) * 1.2 - 0.1  # some past the map's edges
    boxes = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values], dim=1)  # [K, 4] (y1, x1, y2, x2)
    return boxes, torch.randint(images, (count,), generator=g)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_lines_hold_every_pixel_the_gradient_reaches(layout):
    # Oracle: the reference backend's image gradient of the sum of the crops is nonzero only at pixels some tap
    # reads with a nonzero weight; each of those pixels' lines must be listed.
    shape, crop = (3, 5, 13, 37), (6, 9)
    boxes, index = _random_boxes(12, shape[0], seed=3)
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    image = torch.zeros(shape, dtype=torch.float32).contiguous(memory_format=memory_format).requires_grad_()
    out = impls.crop_and_resize(image, boxes.float(), index, crop, backend="reference")
    (grad,) = torch.autograd.grad(out.sum(), image)
    stored = grad.permute(0, 2, 3, 1) if layout == "channels_last" else grad  # in storage order
    reached = (stored.reshape(-1) != 0).nonzero().flatten() // 16
    lines = work.touched_lines(shape, boxes, index, crop, layout)
    assert reached.numel() > 0
    assert torch.isin(reached.unique(), lines).all()


def test_one_pixel_a_line_counts_the_touched_pixels():
    # With 16 float32 channels a pixel is one channels_last line: the lines are the pixels touched_pixels counts.
    shape, crop = (2, 16, 11, 23), (5, 7)
    boxes, index = _random_boxes(9, shape[0], seed=5)
    lines = work.touched_lines(shape, boxes, index, crop, "channels_last")
    assert len(lines) == work.touched_pixels("crop_and_resize", shape, boxes, dict(crop_size=crop), index)


def test_read_lines_loads_the_listed_lines():
    import read_lines

    image = torch.randn(2, 3, 8, 32).contiguous(memory_format=torch.channels_last)
    lines = torch.tensor([0, 5, 17, 95], dtype=torch.int32)  # the storage has 2 * 3 * 8 * 32 / 16 = 96 lines
    expected = image.permute(0, 2, 3, 1).reshape(-1)[lines.long() * 16].double().sum()
    assert read_lines.module().read_lines(image, lines) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(RuntimeError, match=r"lines: line numbers outside \[0, 96\)"):
        read_lines.module().read_lines(image, torch.tensor([3, 96], dtype=torch.int32))
    with pytest.raises(RuntimeError, match=r"lines: line numbers outside"):
        read_lines.module().read_lines(image, torch.tensor([-1], dtype=torch.int32))
    # 20 floats: a whole line and a partial one, whose first float (the one loaded) is element 16.
    short = torch.arange(20, dtype=torch.float32).reshape(1, 1, 1, 20)
    assert read_lines.module().read_lines(short, torch.tensor([0, 1], dtype=torch.int32)) == 16.0
    with pytest.raises(RuntimeError, match=r"lines: line numbers outside \[0, 2\)"):
        read_lines.module().read_lines(short, torch.tensor([2], dtype=torch.int32))


def _row(label: str, median: float, allocator: str, **extra) -> dict:
    return benchmark_row(label, median, allocator, case="p3_k32_14x14_n32", iqr=median / 10, **extra)


def test_report_sets_each_forward_against_its_layouts_limit(tmp_path):
    import report
    import results_json

    rows = [_row("read_nchw", 0.0006, "glibc", read_limit="contiguous", read_bytes=23_000_000),
            _row("read_nhwc", 0.0003, "glibc", read_limit="channels_last", read_bytes=13_100_000),
            _row("cpp", 0.0012, "glibc"), _row("cpp_nhwc", 0.0004, "glibc"), _row("tensorflow", 0.0005, "glibc"),
            _row("cpp", 0.0009, "mimalloc"), _row("kornia", 0.003, "glibc")]
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"machine_info": {"allocator": "glibc"}, "benchmarks": rows}))
    main, _ = results_json.load([path])
    assert sorted(r["backend"] for r in main) == ["cpp", "cpp_nhwc", "kornia", "tensorflow"]  # limits are side rows
    every, runs = results_json.load([path], side_rows=True)
    table = report.read_limit_table(every, runs)
    # cpp 1.2 ms against the NCHW limit 0.6 ms: 50%; cpp_nhwc 0.4 ms and tensorflow 0.5 ms against NHWC's 0.3 ms.
    assert ("| p3_k32_14x14_n32 | glibc | 23 / 13.1 | 0.6 ms (IQR 0.06 ms) / 0.3 ms (IQR 0.03 ms) "
            "| 1.2 ms (50%) | 0.4 ms (75%) | 0.5 ms (60%) |") in table
    assert ("| p3_k32_14x14_n32 | mimalloc | 23 / 13.1 | 0.6 ms (IQR 0.06 ms) / 0.3 ms (IQR 0.03 ms) "
            "| 0.9 ms (67%) | - | - |") in table
    assert "kornia" not in table
    assert report.read_limit_table([r for r in every if not r.get("read_limit")], runs) == ""
