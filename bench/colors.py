"""One colour per backend and one marker per memory layout, for every figure: ``bench/plots.py`` and the notebooks
(which put ``bench/`` on ``sys.path``) import these, so that ``cpp`` is the same red everywhere.

A row label such as ``cpp_nhwc`` takes its backend's colour (``cpp``) and its layout's marker (channels_last:
a square; NCHW: a circle).
"""

from __future__ import annotations

BACKEND_COLORS = {
    "reference": "#7f7f7f",
    "vectorized": "#1f77b4",
    "compiled": "#9467bd",
    "cpp": "#d62728",
    "cuda": "#2ca02c",
    "triton": "#17becf",
    "torchvision": "#ff7f0e",
    "tensorflow": "#8c564b",
    "tensorflow+convert": "#e377c2",
    "cpp_nhwc+convert": "#ff9896",
    # The other peers, apart from each other and from OTHER (one op's plot may hold several of them).
    "onnxruntime": "#393b79",
    "openvino": "#637939",
    "grid_sample": "#222222",
    "kornia": "#e7ba52",
}
LAYOUT_MARKERS = {"NCHW": "o", "NHWC": "s"}
OTHER = "#bcbd22"  # a label that is no backend (a copy, a bound)


def backend_of(label: str) -> str:
    """``cpp_nhwc`` -> ``cpp``; a plain backend name is returned as it is."""
    return label.removesuffix("_nhwc")


def color(label: str) -> str:
    """The colour of a backend or row label (``OTHER`` for anything else); a row label with a colour of its own
    (``cpp_nhwc+convert``) keeps it."""
    return BACKEND_COLORS.get(label, BACKEND_COLORS.get(backend_of(label), OTHER))


def layout(label: str) -> str:
    """``NHWC`` for a channels_last row label (``*_nhwc``), else ``NCHW``."""
    return "NHWC" if label.endswith("_nhwc") else "NCHW"


def marker(label: str) -> str:
    return LAYOUT_MARKERS[layout(label)]
