"""The ``compiled`` backend: its steps really run compiled, new sizes (box counts, maps, channels, sampling grids,
output sizes, sizes of 1 included) reuse the compiled graphs instead of recompiling, and its image gradient repeats
bit for bit under ``torch.use_deterministic_algorithms(True)`` (``impls/backends/compiled.py``). Its values are
checked against ``reference`` by the shared matrix, gradcheck and the fuzz tests, like every backend's."""

import torch
from torch._dynamo.utils import counters

import impls
from impls.backends import compiled
from impls.core.determinism import deterministic_algorithms


def _graphs() -> int:
    """Graphs Dynamo has compiled in this process so far."""
    return counters["stats"]["unique_graphs"]


def _rois(K: int, N: int, H: int, W: int, g: torch.Generator) -> torch.Tensor:
    """K boxes of 6-30 px in image pixels (scale 1/4) on an H x W map, images drawn from N: [K, 5]."""
    xy = torch.rand(K, 2, generator=g) * torch.tensor([4.0 * W, 4.0 * H]) - 4
    wh = 6 + 24 * torch.rand(K, 2, generator=g)
    n = torch.randint(0, N, (K, 1), generator=g).float()
    return torch.cat([n, xy, xy + wh], dim=1)


def _train_step(x, rois, sampling_ratio, output_size=(3, 4)):
    x = x.clone().requires_grad_()
    rois = rois.clone().requires_grad_()
    out = impls.roi_align(x, rois, output_size, 0.25, sampling_ratio, True, backend="compiled")
    out.square().sum().backward()
    return out, x.grad, rois.grad


def test_steps_are_compiled():
    g = torch.Generator().manual_seed(0)
    _train_step(torch.randn(2, 5, 9, 11, generator=g), _rois(6, 2, 9, 11, g), 2)
    steps = compiled.STEPS
    assert steps.name == "compiled"
    for step in (steps.sample, steps.scatter, steps.box_grad):
        assert step._compiled is not None, step.step.__name__


def test_new_sizes_do_not_recompile():
    g = torch.Generator().manual_seed(1)
    # Warm-up: the float32 graphs of roi_align, forward and both gradients, for several boxes per chunk.
    _train_step(torch.randn(2, 6, 12, 14, generator=g), _rois(7, 2, 12, 14, g), 2)
    before = _graphs()
    # New box counts, maps, channel counts, sampling grids and output sizes, and every size that Dynamo would
    # specialize when it is 1 (compiled.py, _FREE_DIMS): one box, one channel, one sample per bin, one output cell.
    for K, (N, C, H, W), sampling_ratio, output_size in [
        (3, (2, 6, 12, 14), 2, (3, 4)), (40, (2, 6, 12, 14), 2, (3, 4)), (13, (3, 10, 21, 9), 3, (2, 2)),
        (150, (1, 3, 30, 33), 2, (7, 7)), (1, (1, 3, 30, 33), 2, (3, 4)), (5, (2, 1, 12, 14), 2, (3, 4)),
        (5, (2, 4, 12, 14), 1, (3, 4)), (5, (2, 4, 12, 14), 2, (1, 1)), (1, (1, 1, 12, 14), 1, (1, 1)),
    ]:
        x = torch.randn(N, C, H, W, generator=g)
        rois = _rois(K, N, H, W, g)
        got = _train_step(x, rois, sampling_ratio, output_size)
        want = impls.roi_align(x, rois, output_size, 0.25, sampling_ratio, True, backend="vectorized")
        torch.testing.assert_close(got[0], want, rtol=1e-5, atol=1e-5)  # Inductor may reorder float32 sums
    assert _graphs() == before, "a new size recompiled a step"


def test_image_gradient_is_reproducible_under_deterministic_algorithms():
    # By default the compiled scatter adds with atomics from several threads, so the order of the float sums (and
    # the last bits) can change from run to run; torch.use_deterministic_algorithms(True) must make it repeatable.
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 64, 40, 50, generator=g)
    xy = torch.rand(300, 2, generator=g) * 150
    rois = torch.cat([torch.randint(0, 2, (300, 1), generator=g).float(), xy, xy + 30], dim=1)
    grad = torch.randn(300, 64, 7, 7, generator=g)

    def image_grad():
        xg = x.clone().requires_grad_()
        impls.roi_align(xg, rois, 7, 0.25, 2, True, backend="compiled").backward(grad)
        return xg.grad

    with deterministic_algorithms():
        first, second = image_grad(), image_grad()
    assert torch.equal(first, second)
    xg = x.clone().requires_grad_()
    impls.roi_align(xg, rois, 7, 0.25, 2, True, backend="cpp").backward(grad)
    torch.testing.assert_close(first, xg.grad, rtol=1e-5, atol=1e-5)  # float32 sums in another order
