"""A real client nobody here wrote: torchvision's Mask R-CNN with its box and mask poolers replaced by
``impls.MultiScaleRoIAlign``.

Oracle: the same model (random weights, float64, small images) with torchvision's own poolers: the detections in
eval mode, and the losses and backbone gradients of one training step, from the same random state. Every CPU
backend but ``reference`` (minutes per step; the matrix ties it to the others) and ``triton`` (its interpreter runs
each program in Python: far too slow for a ResNet-50 step; tests/contract/test_multiscale.py checks it against
torchvision).
"""

import pytest
import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn

import impls

BACKENDS = ("vectorized", "compiled", "cpp")
NAMES = ["0", "1", "2", "3"]
# float64 end to end: the poolers agree to ~1e-15, and through ~60 layers that stays far below this bound, while a
# wrong level, scale or box order moves outputs by O(1).
TOLERANCE = 1e-8


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=128, max_size=160, box_score_thresh=0.0,
        box_detections_per_img=10, rpn_pre_nms_top_n_train=60, rpn_post_nms_top_n_train=30,
        rpn_pre_nms_top_n_test=60, rpn_post_nms_top_n_test=30, box_batch_size_per_image=16,
    )
    net = net.double()
    # Its backbone has plain BatchNorm (no pretrained weights to freeze), whose running statistics a training step
    # updates: every run starts from this state.
    net.initial_state = {k: v.clone() for k, v in net.state_dict().items()}
    return net


def images_and_targets():
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 120, 150, generator=g, dtype=torch.float64),
              torch.rand(3, 100, 160, generator=g, dtype=torch.float64)]
    targets = []
    for img, boxes in zip(images, ([[10.0, 12, 70, 90], [40, 30, 140, 110]], [[5.0, 5, 60, 40]])):
        boxes = torch.tensor(boxes, dtype=torch.float64)
        masks = torch.zeros(len(boxes), *img.shape[1:], dtype=torch.uint8)
        for m, (x1, y1, x2, y2) in zip(masks, boxes.long().tolist()):
            m[y1:y2, x1:x2] = 1
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 2][:len(boxes)]), "masks": masks})
    return images, targets


def run(net, box_pool, mask_pool):
    """Eval detections, then one training step's losses and backbone gradients, from fixed random states."""
    net.load_state_dict(net.initial_state)
    net.roi_heads.box_roi_pool, net.roi_heads.mask_roi_pool = box_pool, mask_pool
    images, targets = images_and_targets()
    net.eval()
    with torch.no_grad():
        detections = net(images)
    net.train()
    net.zero_grad()
    torch.manual_seed(2)  # the proposal samplers draw with torch's generator
    losses = net(images, targets)
    sum(losses.values()).backward()
    grads = {name: p.grad.clone() for name, p in net.backbone.named_parameters() if p.grad is not None}
    return detections, losses, grads


@pytest.fixture(scope="module")
def torchvision_run(model):
    pools = (model.roi_heads.box_roi_pool, model.roi_heads.mask_roi_pool)
    yield run(model, *pools)
    model.roi_heads.box_roi_pool, model.roi_heads.mask_roi_pool = pools


def close(a, b, what):
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    err = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
    scale = max(1.0, b.double().abs().max().item()) if b.numel() else 1.0
    assert err <= TOLERANCE * scale, f"{what}: max error {err:.3g}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_mask_rcnn_with_our_poolers_equals_torchvision(model, torchvision_run, backend):
    theirs = torchvision_run
    box_pool = impls.MultiScaleRoIAlign(NAMES, 7, 2, backend=backend)
    mask_pool = impls.MultiScaleRoIAlign(NAMES, 14, 2, backend=backend)
    ours = run(model, box_pool, mask_pool)
    assert len(theirs[0][0]["boxes"]) > 0, "the check needs detections"
    for i, (d_ours, d_theirs) in enumerate(zip(ours[0], theirs[0])):
        for key in ("boxes", "labels", "scores", "masks"):
            close(d_ours[key], d_theirs[key], f"image {i} {key}")
    assert ours[1].keys() == theirs[1].keys()
    for key in theirs[1]:
        close(ours[1][key], theirs[1][key], f"loss {key}")
    assert ours[2].keys() == theirs[2].keys() and len(theirs[2]) > 0
    for name in theirs[2]:
        close(ours[2][name], theirs[2][name], f"gradient of {name}")
