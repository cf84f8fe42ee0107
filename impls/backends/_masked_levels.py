"""Multi-level roi_align from a backend's single-level kernels, with no host sync: a loop over levels, each pooling
every box and keeping the rows of its own boxes (``torch.where`` on the level).

Used by ``vectorized`` and ``compiled``. Gathering each level's boxes (``rois[levels == l]``) would read the count of
boxes per level back to the host, a sync on CUDA that also stops a CUDA graph capture and gives ``torch.compile``
a data-dependent shape. Here every shape is ``K``: one graph, no sync.

Cost: each level pools all ``K`` boxes, so the sampling work is about ``L`` times one level's (4 on an FPN's
P2-P5). The boxes of other levels are pooled as empty boxes at the origin of their image (no sample is read
twice, and an adaptive grid stays 1 x 1 for them instead of growing with a large box on a fine level). The
gradients pass through the same masks: a box's rows of the incoming gradient go to its own level only, so each
level's map and the boxes get exactly the single-level gradients.
"""

from __future__ import annotations

import torch

from ..core.registry import OpKernels


def _by_level(rois: torch.Tensor, levels: torch.Tensor, n_levels: int):
    """Per level: ``(level, mine [K, 1, 1, 1] bool, rois [K, 5])``, the rois with each box of another level made
    empty at its image's origin (batch column kept)."""
    for level in range(n_levels):
        mine = levels == level  # [K]
        level_rois = torch.cat([rois[:, :1], torch.where(mine.unsqueeze(1), rois[:, 1:], 0)], dim=1)  # [K, 5]
        yield level, mine.view(-1, 1, 1, 1), level_rois


def multiscale_kernels(roi: OpKernels) -> OpKernels:
    """The ``multiscale_roi_align`` kernels (``_registry`` signatures) over a backend's ``roi_align`` kernels."""

    def forward(features, rois, levels, scales, pooled_height, pooled_width, sampling_ratio, aligned):
        out = None
        for level, mine, level_rois in _by_level(rois, levels, len(features)):
            pooled = roi.forward(features[level], level_rois, scales[level], pooled_height, pooled_width,
                                 sampling_ratio, aligned)  # [K, C, PH, PW]
            out = pooled if out is None else torch.where(mine, pooled, out)
        return out

    def backward_input(grad, rois, levels, scales, pooled_height, pooled_width, batch_size, channels, heights,
                       widths, sampling_ratio, aligned):
        return [
            roi.backward_input(torch.where(mine, grad, 0), level_rois, scales[level], pooled_height, pooled_width,
                               batch_size, channels, heights[level], widths[level], sampling_ratio, aligned)
            for level, mine, level_rois in _by_level(rois, levels, len(scales))
        ]

    def backward_boxes(grad, features, rois, levels, scales, pooled_height, pooled_width, sampling_ratio, aligned):
        total = None
        for level, mine, level_rois in _by_level(rois, levels, len(features)):
            # [K, 5], zero rows for the other levels' boxes
            part = roi.backward_boxes(torch.where(mine, grad, 0), features[level], level_rois, scales[level],
                                      pooled_height, pooled_width, sampling_ratio, aligned)
            total = part if total is None else total + part
        return total

    return OpKernels(forward, backward_input, backward_boxes if roi.boxes_grad else None)
