"""``vectorized`` and ``compiled`` are one graph for ``torch.compile(fullgraph=True)``, forward and backward, for
every operator's cases (``tests/ops/<op>/op_cases.py``): with a fixed sampling grid (every box shares it, so the
chunk loop depends on shapes only) and with the adaptive one (whose grouping of boxes reads their values: under
``torch.compile`` it is one opaque custom operator per pass, ``impls/backends/_adaptive_ops.py`` for roi_align and
an operator's own where its kernels live in its folder). Oracle: the same call, eager."""

import cases
import pytest
import torch

# The cases whose boxes all lie inside the map test a peer's convention, not the graph: left out.
GRAPH_CASES = [pytest.param(case, id=case.id) for case in cases.OP_CASES if case.boxes != "interior"]


@pytest.mark.parametrize("case", GRAPH_CASES)
@pytest.mark.parametrize("backend", ["vectorized", "compiled"])
def test_op_compiles_as_one_graph(backend, case):
    x, boxes, box_index = cases.inputs(case, seed=5)
    grad = torch.randn_like(cases.call(case, "reference", x, boxes, box_index))

    def op(x, boxes):
        return cases.call(case, backend, x, boxes, box_index)

    def run(fn):
        xg, bg = x.clone().requires_grad_(), boxes.clone().requires_grad_()
        out = fn(xg, bg)
        out.backward(grad)
        return out, xg.grad, bg.grad

    torch._dynamo.reset()
    got = run(torch.compile(op, fullgraph=True))
    for name, a, b in zip(("output", "input grad", "box grad"), got, run(op)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=name)  # float64: Inductor may reorder sums
