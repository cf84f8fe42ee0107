"""``vectorized`` and ``compiled`` roi_align and roi_align_rotated are one graph for ``torch.compile(fullgraph=True)``,
forward and backward, with a fixed sampling grid (every box shares it, so the chunk loop depends on shapes only) and
with the adaptive one (whose grouping of boxes reads their values: under ``torch.compile`` it is one opaque custom
operator per pass, ``impls/backends/_adaptive_ops.py`` and ``impls/ops/roi_align_rotated/traced_adaptive.py``)."""

import pytest
import torch

import impls


@pytest.mark.parametrize("sampling_ratio", [2, 0])
@pytest.mark.parametrize("backend", ["vectorized", "compiled"])
def test_roi_align_compiles_as_one_graph(backend, sampling_ratio):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 10, 12, generator=g)
    xy = torch.rand(5, 2, generator=g) * torch.tensor([40.0, 32.0]) - 2
    # 2 or 3 samples per bin side under the adaptive grid (several groups of boxes)
    wh = 17 + 19 * torch.rand(5, 2, generator=g)
    rois = torch.cat([torch.randint(0, 2, (5, 1), generator=g).float(), xy, xy + wh], dim=1)  # image px, scale 1/4
    grad = torch.randn(5, 3, 3, 4, generator=g)

    def op(x, rois):
        return impls.roi_align(x, rois, (3, 4), 0.25, sampling_ratio, True, backend=backend)

    _assert_compiled_equals_eager(op, x, rois, grad)


@pytest.mark.parametrize("sampling_ratio", [2, 0])
@pytest.mark.parametrize("backend", ["vectorized", "compiled"])
def test_roi_align_rotated_compiles_as_one_graph(backend, sampling_ratio):
    """The same for roi_align_rotated: its adaptive grid goes through the opaque operators of
    ``impls/ops/roi_align_rotated/traced_adaptive.py`` while traced. Oracle: the eager call."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 10, 12, generator=g)
    centre = torch.rand(5, 2, generator=g) * torch.tensor([44.0, 36.0])
    size = 17 + 19 * torch.rand(5, 2, generator=g)  # 2 or 3 samples per bin side under the adaptive grid
    angle = torch.rand(5, 1, generator=g) * 360 - 180
    rois = torch.cat([torch.randint(0, 2, (5, 1), generator=g).float(), centre, size, angle], dim=1)
    grad = torch.randn(5, 3, 3, 4, generator=g)

    def op(x, rois):
        return impls.roi_align_rotated(x, rois, (3, 4), 0.25, sampling_ratio, backend=backend)

    _assert_compiled_equals_eager(op, x, rois, grad)


def _assert_compiled_equals_eager(op, x, rois, grad):
    """op(x, rois) compiled with fullgraph=True (no graph break, or it raises) against the eager call: output and
    both gradients."""

    def run(fn):
        xg, rg = x.clone().requires_grad_(), rois.clone().requires_grad_()
        out = fn(xg, rg)
        out.backward(grad)
        return out, xg.grad, rg.grad

    torch._dynamo.reset()
    got = run(torch.compile(op, fullgraph=True))
    for name, a, b in zip(("output", "input grad", "box grad"), got, run(op)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)  # Inductor may reorder float32 sums
