"""``vectorized`` roi_align with a fixed sampling grid is one graph for ``torch.compile(fullgraph=True)``: every box
shares the grid, so its chunk loop depends on shapes only (the adaptive grid is read from the boxes' values and
stays a graph break, ``vectorized._roi_chunks``)."""

import torch

import impls


def test_vectorized_roi_align_compiles_as_one_graph():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 10, 12, generator=g)
    xy = torch.rand(5, 2, generator=g) * torch.tensor([40.0, 32.0]) - 2
    rois = torch.cat([torch.randint(0, 2, (5, 1), generator=g).float(), xy, xy + 9], dim=1)  # image px, scale 1/4

    def op(x, rois):
        return impls.roi_align(x, rois, (3, 4), 0.25, 2, True, backend="vectorized")

    torch._dynamo.reset()
    got = torch.compile(op, fullgraph=True)(x, rois)
    torch.testing.assert_close(got, op(x, rois), rtol=1e-5, atol=1e-6)  # Inductor may reorder float32 sums
