"""roi_align's per-box geometry as the table the Triton kernels read: float64 ``[ROWS, K]``, one column per box and
one row per quantity, so that a tile of boxes reads each quantity contiguously.

The rows are named here, once: the launcher builds the table by these names and ``kernels.py`` reads it by the
same names (its ``GEO_*`` constants are these numbers). The geometry itself is ``_roi_geometry.roi_boxes``, the
computation ``vectorized`` and ``compiled`` share; it is handed over as a float64 tensor because a Python float
kernel argument would reach a GPU kernel as float32.
"""

from __future__ import annotations

import torch

from .._roi_geometry import adaptive_grid, roi_boxes

BATCH = 0  # image index as a float; -1 for a box that may not be read
Y_START = 1  # y1 * s - offset
X_START = 2
BIN_H = 3  # roi_h / PH
BIN_W = 4
GRID_H = 5  # samples per bin along y (sampling_ratio, or ceil(roi_h / PH); may be <= 0); 0 for a box not read
GRID_W = 6
COUNT = 7  # max(grid_h * grid_w, 1): the divisor of the bin mean; 1 for a box not read
Y_ALONG = 8  # 1.0, or 0.0 where aligned=False forced roi_h to 1 (the size ignores the box)
X_ALONG = 9
SCALE = 10  # spatial_scale (the box's level's), in float64
LEVEL = 11  # the box's pyramid level: 0 for roi_align, levels[k] for multi-level roi_align
ROWS = 12


def roi_geometry_table(rois, N, scales, levels, pooled_height, pooled_width, sampling_ratio,
                       aligned) -> torch.Tensor:
    """``reference._roi_geometry`` for every box at once, box k at ``scales[levels[k]]``: float64 ``[ROWS, K]``,
    contiguous. ``levels`` is int64 ``[K]``, or None for one map (roi_align: every box on level 0); it is read on
    its device, never on the host. A box that may not be read (batch index outside ``[0, N)`` or, past validation,
    a non-finite geometry) gets batch -1 and an empty grid."""
    batch = rois[:, 0].to(torch.float64)  # [K]
    if levels is None:
        spatial_scale = scales[0]  # a Python float: the single-map expressions, unchanged
        level = torch.zeros_like(batch)
    else:  # [K]: each box's level's scale, gathered on the device
        spatial_scale = torch.tensor(scales, dtype=torch.float64, device=rois.device)[levels]
        level = levels.to(torch.float64)
    b = roi_boxes(rois, spatial_scale, pooled_height, pooled_width, aligned)
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full_like(b.roi_h, float(sampling_ratio))
    else:
        grid_h, grid_w = adaptive_grid(b, pooled_height, pooled_width)
    rows = {
        BATCH: batch,
        Y_START: b.y_start,
        X_START: b.x_start,
        BIN_H: b.bin_h,
        BIN_W: b.bin_w,
        GRID_H: grid_h,
        GRID_W: grid_w,
        COUNT: torch.clamp(grid_h * grid_w, min=1.0),
        Y_ALONG: (~b.h_clamped).to(torch.float64),
        X_ALONG: (~b.w_clamped).to(torch.float64),
        SCALE: torch.full_like(b.roi_h, spatial_scale) if levels is None else spatial_scale,
        LEVEL: level,
    }
    table = torch.stack([rows[row] for row in range(ROWS)])  # [ROWS, K]
    readable = (batch > -1) & (batch < N) & torch.isfinite(table).all(dim=0)
    table[BATCH] = torch.where(readable, torch.trunc(batch), -1.0)  # int(b): truncation, as the reference
    table[GRID_H] = torch.where(readable, table[GRID_H], 0.0)
    table[GRID_W] = torch.where(readable, table[GRID_W], 0.0)
    table[COUNT] = torch.where(readable, table[COUNT], 1.0)
    return table.contiguous()
