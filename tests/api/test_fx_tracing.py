"""torch.fx: a model that calls the public ops or modules traces, each call recorded as one node (a leaf, as
torchvision's ops are), and the traced module computes what the model does; torchvision's feature extraction
(``get_graph_node_names``, ``create_feature_extractor``) works on such a model.

Oracle: the model itself, called eagerly on the same inputs (the traced graph must give the same tensors), and the
node list (one call per op, none of our validation inside)."""

import pytest
import torch
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import impls

BACKEND = "cpp"


class Head(torch.nn.Module):
    """A box head on a conv map, through every public op and module."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.crop = impls.CropAndResize(3, 3, backend=BACKEND)
        self.port = impls.RoIAlign(3, 3, backend=BACKEND)
        self.pyramid = impls.MultiScaleRoIAlign(["p2", "p3"], 3, 2, backend=BACKEND)

    def forward(self, image, rois, boxes, box_index, port_boxes):
        x = self.conv(image)
        pooled = impls.roi_align(x, rois, 3, 0.5, 2, True, backend=BACKEND)
        crops = impls.crop_and_resize(x, boxes, box_index, (3, 3), backend=BACKEND)
        fpn = {"p2": x, "p3": torch.nn.functional.avg_pool2d(x, 2)}
        levels = impls.multiscale_roi_align([x, fpn["p3"]], [rois[:, 1:]], [(32, 40)], 3, 2, backend=BACKEND)
        module_outputs = (self.crop(x, boxes, box_index), self.port(x, port_boxes, box_index),
                          self.pyramid(fpn, [rois[:, 1:]], [(32, 40)]))
        return torch.cat([pooled, crops, levels, *module_outputs]).flatten(1).sum(1)


def inputs():
    g = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, 16, 20, generator=g)
    rois = torch.tensor([[0, 1.0, 2.0, 9.0, 12.0], [0, 4.0, 1.0, 30.0, 28.0]])
    boxes = torch.tensor([[0.1, 0.2, 0.7, 0.9], [0.3, 0.0, 1.0, 0.6]])
    box_index = torch.tensor([0, 0])
    port_boxes = torch.tensor([[1.0, 2.0, 8.0, 9.0], [0.5, 0.5, 15.0, 12.0]])
    return image, rois, boxes, box_index, port_boxes


def test_symbolic_trace_records_each_op_as_one_call():
    model = Head()
    traced = torch.fx.symbolic_trace(model)
    calls = [node.target.__name__ for node in traced.graph.nodes if node.op == "call_function"
             and getattr(node.target, "__module__", "").startswith("impls")]
    assert sorted(calls) == sorted(["roi_align", "crop_and_resize", "multiscale_roi_align", "crop_and_resize",
                                    "port_roi_align", "pool_pyramid"])
    torch.testing.assert_close(traced(*inputs()), model(*inputs()), rtol=0, atol=0)


def test_torchvision_feature_extraction():
    model = Head()
    train_nodes, eval_nodes = get_graph_node_names(model)
    for name in ("roi_align", "crop_and_resize", "multiscale_roi_align", "crop.crop_and_resize",
                 "port.port_roi_align", "pyramid.pool_pyramid"):
        assert name in eval_nodes and name in train_nodes, (name, eval_nodes)
    extractor = create_feature_extractor(model, return_nodes={"roi_align": "pooled", "pyramid.pool_pyramid": "fpn"})
    features = extractor(*inputs())
    image, rois, *_ = inputs()
    x = model.conv(image)
    torch.testing.assert_close(features["pooled"], impls.roi_align(x, rois, 3, 0.5, 2, True, backend=BACKEND),
                               rtol=0, atol=0)
    fpn = {"p2": x, "p3": torch.nn.functional.avg_pool2d(x, 2)}
    torch.testing.assert_close(features["fpn"], model.pyramid(fpn, [rois[:, 1:]], [(32, 40)]), rtol=0, atol=0)


@pytest.mark.parametrize("op", ["roi_align", "crop_and_resize", "multiscale_roi_align"])
def test_public_ops_are_leaves_only_while_tracing(op):
    # The package's names are the functions themselves outside a trace (the patch is undone after it).
    import impls.ops

    torch.fx.symbolic_trace(Head())
    assert getattr(impls, op) is getattr(getattr(impls.ops, op), op)


def test_leaf_modules_give_the_pooler_torchvisions_node_name():
    # torchvision's feature extraction makes its own ops' modules leaves: its MultiScaleRoIAlign is the node
    # "pyramid". Ours is "pyramid.pool_pyramid" unless the caller names it a leaf too (README, "Use").
    import torchvision

    theirs = Head()
    theirs.pyramid = torchvision.ops.MultiScaleRoIAlign(["p2", "p3"], 3, 2)
    assert "pyramid" in get_graph_node_names(theirs)[1]
    model = Head()
    leaves = {"leaf_modules": [impls.MultiScaleRoIAlign]}
    assert "pyramid" in get_graph_node_names(model, tracer_kwargs=leaves)[1]
    extractor = create_feature_extractor(model, return_nodes={"pyramid": "fpn"}, tracer_kwargs=leaves)
    image, rois, *_ = inputs()
    x = model.conv(image)
    fpn = {"p2": x, "p3": torch.nn.functional.avg_pool2d(x, 2)}
    torch.testing.assert_close(extractor(*inputs())["fpn"], model.pyramid(fpn, [rois[:, 1:]], [(32, 40)]),
                               rtol=0, atol=0)
