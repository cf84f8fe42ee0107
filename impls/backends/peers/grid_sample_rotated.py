"""``grid_sample`` for roi_align_rotated: rotated RoIAlign as a user writes it in pure PyTorch, a rotated
``F.affine_grid`` per box with ``align_corners=False``, ``F.grid_sample`` (bilinear, zero padding) on ``PH*s x PW*s``
points, then ``F.avg_pool2d`` over ``s x s`` (``roi_align_rotated`` below). Both gradients come from torch
autograd through it (the box gradient through ``affine_grid``'s ``theta``); float32 and float64, CPU and CUDA.

Inside the map it is our op (CONVENTIONS.md §3b): the grid's points are our sample positions and the pool is our
bin mean over ``s*s`` samples. It differs in two ways:

* **Fixed sampling only.** ``s`` is one Python int for every box (the pool's kernel size); our adaptive grid
  (``sampling_ratio <= 0``: ``ceil(side / pooled)`` samples per bin, per box) would need a grid and a pool per box,
  so the forward raises for it, naming ``sampling_ratio``.
* **The border.** ``grid_sample`` reads each tap outside the map as 0 and blends it with the taps inside, where our
  rule (§3.3) clamps a sample within one pixel of the edge onto the edge row or column. A sample at ``y = -0.25``
  reads ``0.75 * v[0]``, not ``v[0]``; one at ``y = H - 0.5`` reads ``0.5 * v[H-1]``. In full: this peer is our op
  on the map padded with one zero pixel on every side (box centres moved by one map pixel); samples more than a
  pixel outside are 0 in both. The box gradient differs there too (ours is 0 along a clamped axis).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...core.layout import like


def rotated_theta(rois: torch.Tensor, spatial_scale: float, height: int, width: int,
                  clockwise: bool) -> torch.Tensor:
    """``rois [K, 6]`` ``(batch, cx, cy, w, h, degrees)`` -> ``affine_grid``'s ``theta [K, 2, 3]`` for
    ``align_corners=False`` on an ``height x width`` map (differentiable in the box).

    ``affine_grid`` gives the output point ``(i, j)`` of a ``PH*s x PW*s`` grid the coordinates ``u = (2j + 1)/(PW*s)
    - 1`` and ``v`` alike, the centres of equal cells of ``[-1, 1]``: ``u * w_s/2`` is our ``xx`` (the sample's place
    along the box's x axis, CONVENTIONS.md §3b.2) and ``v * h_s/2`` our ``yy``. ``grid_sample`` reads the grid value
    ``X`` at pixel ``x = ((X + 1)*W - 1)/2``, so our ``x = cx_s + xx*cos + yy*sin`` (``cx_s = cx*s - 0.5``) is
    ``X = (w_s*cos/W)*u + (h_s*sin/W)*v + 2*cx*s/W - 1``; ``y = cy_s + yy*cos - xx*sin`` alike with ``H``.
    """
    _, cx, cy, w, h, angle = rois.unbind(1)  # [K] each
    theta = angle * (math.pi / 180.0)
    if clockwise:
        theta = -theta
    cos, sin = torch.cos(theta), torch.sin(theta)
    w_s, h_s = w * spatial_scale, h * spatial_scale
    row_x = torch.stack([w_s * cos / width, h_s * sin / width, 2 * cx * spatial_scale / width - 1], 1)
    row_y = torch.stack([-w_s * sin / height, h_s * cos / height, 2 * cy * spatial_scale / height - 1], 1)
    return torch.stack([row_x, row_y], 1)  # [K, 2, 3]


def roi_align_rotated(input: torch.Tensor, rois: torch.Tensor, output_size: tuple[int, int], spatial_scale: float,
                      sampling_ratio: int, clockwise: bool = False) -> torch.Tensor:
    """``input (Tensor[N, C, H, W])``, ``rois (Tensor[K, 6])`` rows ``(batch_index, cx, cy, w, h, angle_degrees)``
    in image pixels -> ``Tensor[K, C, PH, PW]``: ``grid_sample`` on each box's ``PH*s x PW*s`` rotated grid,
    ``avg_pool2d`` over ``s x s`` (``s = sampling_ratio > 0``; differentiable in both). Each image's box grids are
    stacked along the rows: one ``grid_sample`` per image, the crops put back in box order."""
    pooled_height, pooled_width = output_size
    s = sampling_ratio
    n, c, height, width = input.shape
    k = rois.shape[0]
    theta = rotated_theta(rois, spatial_scale, height, width, clockwise)
    grid = F.affine_grid(theta, [k, 1, pooled_height * s, pooled_width * s], align_corners=False)  # [K, PHs, PWs, 2]
    batch = rois[:, 0].detach().to(torch.int64)  # [K], truncated as the kernels convert it
    mine = [torch.nonzero(batch == i).squeeze(1) for i in range(n)]  # each image's boxes
    samples = torch.cat([
        F.grid_sample(input[i:i + 1], grid[m].reshape(1, -1, pooled_width * s, 2), mode="bilinear",
                      padding_mode="zeros", align_corners=False)
        .view(c, -1, pooled_height * s, pooled_width * s).transpose(0, 1)
        for i, m in enumerate(mine)
    ])  # [K, C, PH*s, PW*s], grouped by image
    out = F.avg_pool2d(samples, s)  # [K, C, PH, PW]
    return out[torch.argsort(torch.cat(mine))]


def check_supported(sampling_ratio: int) -> None:
    """Raises for what one ``grid_sample`` + ``avg_pool2d`` cannot express: the adaptive grid."""
    if sampling_ratio <= 0:
        raise ValueError(f"backend 'grid_sample' takes a fixed sampling_ratio > 0 for roi_align_rotated (the pool's "
                         f"kernel size, the same for every box), got sampling_ratio={sampling_ratio}: its adaptive "
                         f"grid differs per box")


def forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise):
    """The registry's forward (SPEC signature): ``roi_align_rotated`` in the input's memory format."""
    check_supported(sampling_ratio)
    out = roi_align_rotated(input, rois, (pooled_height, pooled_width), spatial_scale, sampling_ratio, clockwise)
    return like(out, input)


def backward_input(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width,
                   sampling_ratio, clockwise):
    """torch autograd's image gradient through ``forward``, in ``grad``'s memory format. ``grid_sample`` is linear
    in the map, so the gradient does not read it: taken at a zero map of the right shape."""
    image = grad.new_zeros((batch_size, channels, height, width), requires_grad=True)
    with torch.enable_grad():
        out = forward(image, rois.detach(), spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise)
        return like(torch.autograd.grad(out, image, grad)[0], grad)


def backward_boxes(grad, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise):
    """torch autograd's box gradient through ``forward`` (via ``affine_grid``'s ``theta``): ``Tensor[K, 6]``, the
    batch column 0, the angle's per degree."""
    rois = rois.detach().requires_grad_()
    with torch.enable_grad():
        out = forward(input.detach(), rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, clockwise)
        return torch.autograd.grad(out, rois, grad)[0]
