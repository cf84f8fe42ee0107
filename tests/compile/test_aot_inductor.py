"""AOTInductor: a model calling our public ops, exported (``torch.export``), compiled ahead of time into a package
(``torch._inductor.aoti_compile_and_package``) and loaded back (``aoti_load_package``) as a deployment would.

One model holds all four operators, since each package is a C++ compile of its own (the slow part of the test):
the extension's kernels are called from the compiled code as they are registered (``impls::*_forward``), and the
value checks (``impls::checked_rois`` / ``impls::checked_boxes``) travel with them, so the loaded package raises
the eager error on a box of no image instead of reading outside the map. Runs on every device this machine has
(CUDA in the GPU run).
"""

import cases
import pytest
import torch

import impls

# The backend a deployment would ship on each device: the compiled kernels of the extension.
DEPLOYED = {"cpu": "cpp", "cuda": "cuda"}


class Heads(torch.nn.Module):
    """A box head (roi_align), a crop head (crop_and_resize), an FPN pooler and an oriented-box head
    (roi_align_rotated), as a detector ships them."""

    def __init__(self, backend):
        super().__init__()
        self.backend = backend
        self.pooler = impls.MultiScaleRoIAlign(["p2", "p3"], 3, 2, backend=backend)

    def forward(self, x, rois, image, boxes, box_index, p2, p3, image_boxes, rotated):
        pooled = impls.roi_align(x, rois, 3, 0.5, 2, True, backend=self.backend)
        crops = impls.crop_and_resize(image, boxes, box_index, (4, 5), extrapolation_value=-1.0,
                                      backend=self.backend)
        levels = self.pooler({"p2": p2, "p3": p3}, [image_boxes], [(64, 64)])
        oriented = impls.roi_align_rotated(x, rotated, 3, 0.5, 0, backend=self.backend)
        return pooled, crops, levels, oriented


def _inputs(device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 16, 20, generator=g)
    rois = torch.tensor([[0, 1.0, 2, 20, 25], [1, 4, 4, 30, 10], [1, -3, 30, 45, 36]])
    image = torch.randn(2, 3, 8, 9, generator=g)
    boxes = torch.tensor([[0.1, 0.2, 0.9, 0.7], [-0.1, 0.0, 1.2, 0.5], [0.5, 0.9, 0.2, 0.1]])  # border, flipped
    box_index = torch.tensor([0, 1, 1])
    p2, p3 = torch.randn(1, 3, 16, 16, generator=g), torch.randn(1, 3, 8, 8, generator=g)
    # 4 px to the whole image: with 224/4 canonical and a 64 px image, both levels take boxes (the clamp at both ends)
    image_boxes = torch.tensor([[2, 2, 6, 6], [0, 0, 64, 64], [10, 5, 40, 50], [30, 30, 33, 60.0]])
    rotated = torch.tensor([[0, 12.0, 14, 10, 6, 30], [1, 30, 8, 20, 12, -100]])  # (batch, cx, cy, w, h, degrees)
    return tuple(t.to(device) for t in (x, rois, image, boxes, box_index, p2, p3, image_boxes, rotated))


@pytest.fixture(scope="module", params=[d for d in cases.DEVICES if d in DEPLOYED])
def package(request, tmp_path_factory):
    device = request.param
    model = Heads(DEPLOYED[device])
    args = _inputs(device)
    program = torch.export.export(model, args)
    path = torch._inductor.aoti_compile_and_package(
        program, package_path=str(tmp_path_factory.mktemp("aoti") / f"heads-{device}.pt2"))
    return model, args, torch._inductor.aoti_load_package(path)


def test_loaded_package_gives_eager_values(package):
    # The package calls the same kernels on the same inputs: equal bit for bit, no tolerance.
    model, args, loaded = package
    for name, got, want in zip(("roi_align", "crop_and_resize", "MultiScaleRoIAlign", "roi_align_rotated"),
                                loaded(*args), model(*args)):
        assert torch.equal(got, want), f"{name}: the AOTInductor package differs from eager"


def test_loaded_package_raises_on_a_box_of_no_image(package):
    _, args, loaded = package
    rois = args[1].clone()
    rois[0, 0] = 5  # the batch has 2 images
    with pytest.raises(Exception, match=r"batch index\) must be in \[0, 2\)") as raised:
        loaded(args[0], rois, *args[2:])
    assert "5" in str(raised.value), raised.value
