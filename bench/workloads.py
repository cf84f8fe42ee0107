"""The inputs the benchmarks run on: Mask R-CNN R50-FPN feature maps and proposal boxes (CONVENTIONS.md §5).

One 800x1216 image gives four FPN maps with C=256: P2 200x304 (stride 4), P3 100x152, P4 50x76, P5 25x38.
torchvision's ``LevelMapper`` sends a box of side ``s = sqrt(w * h)`` image pixels to level
``floor(4 + log2(s / 224))``, so P2 pools boxes up to 112 px, P3 112-224 px, P4 224-448 px and P5 the rest.
Each workload draws its boxes from its own level's range, from a fixed seed: the same boxes on every run, for
every backend. ``tiny`` is a toy map small enough for the pure-Python ``reference`` backend. ``rgb`` is no FPN level:
a batch of RGB images (C = 3, the map is the image) from which data augmentation crops patches (``tiny_rgb``: its
toy version).

A workload is one RoIAlign call: K boxes of one level into a ``P x P`` head (7x7 box head, 14x14 mask head)
with ``sampling_ratio`` 2 (torchvision) or 0 (adaptive, detectron2), ``aligned=True``. ``crop_and_resize`` runs
on the same boxes through the original port's ``transform_fpcoor`` normalization, with a ``2P x 2P`` crop: the
same number of bilinear samples as ``sampling_ratio=2`` (tensorpack's Mask R-CNN crops 2x and average-pools).

A ``PyramidWorkload`` is one call of a multi-level pooler (torchvision's ``MultiScaleRoIAlign``): a batch of images,
the maps of a ``Pyramid`` (P2-P5 pooled, plus the ``pool`` map torchvision's FPN adds and its poolers skip), and
each image's proposals drawn from one range of sizes that spans every level, so that the level assignment sends
about half of them to P2 and the rest over P3-P5.

``dota_p2`` and ``dota_p3`` are the P2 and P3 levels (256x256 and 128x128, C = 256) of a DOTA-like 1024x1024 aerial
image split as oriented detectors train on it; the operator that runs on them draws its own boxes
(``bench/operators/<op>.py``).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from impls.ops.crop_and_resize.module import normalize_boxes

IMAGE_HEIGHT, IMAGE_WIDTH = 800, 1216
SEED = 0


@dataclasses.dataclass(frozen=True)
class Level:
    name: str
    stride: int
    channels: int
    box_sides: tuple[float, float]  # sqrt(w * h) of its boxes in image pixels, [low, high)
    image_size: tuple[int, int] = (IMAGE_HEIGHT, IMAGE_WIDTH)

    @property
    def spatial_scale(self) -> float:
        return 1.0 / self.stride

    @property
    def map_size(self) -> tuple[int, int]:
        # Rounded up like the FPN's stride-2 convolutions: 800x1216 / 32 -> 25x38.
        return tuple(math.ceil(side / self.stride) for side in self.image_size)


LEVELS = {
    level.name: level
    for level in (
        Level("tiny", stride=4, channels=4, box_sides=(8.0, 48.0), image_size=(64, 96)),  # map 16x24
        Level("p2", stride=4, channels=256, box_sides=(16.0, 112.0)),  # map 200x304, boxes 4-28 px on it
        Level("p3", stride=8, channels=256, box_sides=(112.0, 224.0)),  # map 100x152
        Level("p4", stride=16, channels=256, box_sides=(224.0, 448.0)),  # map 50x76
        Level("p5", stride=32, channels=256, box_sides=(448.0, 896.0)),  # map 25x38
        # Data augmentation patches on 512x512 RGB images: sides 32-256 px, from a sixteenth of the image's side (a
        # small object zoomed in) to half of it (a random-resized-crop's larger draws); crop_and_resize then scales
        # each to a fixed size, up or down.
        Level("rgb", stride=1, channels=3, box_sides=(32.0, 256.0), image_size=(512, 512)),
        Level("tiny_rgb", stride=1, channels=3, box_sides=(4.0, 16.0), image_size=(32, 32)),
        # A DOTA-like aerial image (rotated RoIAlign, module docstring): the P2 and P3 levels of a 1024x1024 split.
        Level("dota_p2", stride=4, channels=256, box_sides=(16.0, 112.0), image_size=(1024, 1024)),  # map 256x256
        Level("dota_p3", stride=8, channels=256, box_sides=(112.0, 224.0), image_size=(1024, 1024)),  # map 128x128
    )
}


@dataclasses.dataclass(frozen=True)
class Workload:
    """One RoIAlign call of a Mask R-CNN head, and the matching crop_and_resize call."""

    level: str
    boxes: int  # K
    output: int  # PH = PW: 7 for the box head, 14 for the mask head
    sampling_ratio: int  # 2 (torchvision) or 0 (adaptive)
    map_scale: int = 1  # the map's sides multiplied by this, boxes unchanged (feature-map sweep)
    # Images in the batch; box k is on image k % images. 1: a detector head, every box on one image. ``boxes``:
    # one box per image, what kornia's crop_and_resize takes (a batch of crops, as in data augmentation).
    images: int = 1

    @property
    def _suffix(self) -> str:
        scaled = f"_map{self.map_scale}x" if self.map_scale != 1 else ""
        return scaled + (f"_n{self.images}" if self.images != 1 else "")

    @property
    def id(self) -> str:
        """e.g. ``p2_k512_7x7_sr2``; ``_map2x`` when the map is scaled, ``_n32`` for a batch of 32 images."""
        return f"{self.level}_k{self.boxes}_{self.output}x{self.output}_sr{self.sampling_ratio}{self._suffix}"

    @property
    def crop_id(self) -> str:
        """The crop_and_resize case on the same boxes, e.g. ``p2_k512_14x14``."""
        return f"{self.level}_k{self.boxes}_{self.crop_size}x{self.crop_size}{self._suffix}"

    @property
    def crop_size(self) -> int:
        return 2 * self.output

    @property
    def level_spec(self) -> Level:
        return LEVELS[self.level]

    @property
    def map_shape(self) -> tuple[int, int, int, int]:
        """[N, C, H, W] of the feature map, N = ``images``."""
        height, width = self.level_spec.map_size
        return self.images, self.level_spec.channels, height * self.map_scale, width * self.map_scale

    @property
    def box_index(self) -> torch.Tensor:
        """Each box's image, int64 [K]: ``k % images``."""
        return torch.arange(self.boxes) % self.images


def image_boxes(level: Level, count: int, image_scale: int = 1, seed: int = SEED) -> torch.Tensor:
    """``count`` proposals of one FPN level, (x1, y1, x2, y2) image pixels, float64 [K, 4].

    Side ``sqrt(w * h)`` log-uniform over the level's range, aspect ratio ``h / w`` log-uniform in [1/2, 2]
    (the RPN's anchor ratios), centre uniform over the image, then clipped to the image as proposals are.
    ``image_scale`` enlarges the image but not the boxes (the feature-map sweep: same boxes, bigger map).
    """
    g = torch.Generator().manual_seed(seed)
    low, high = (math.log(side) for side in level.box_sides)
    side = torch.exp(low + (high - low) * torch.rand(count, generator=g, dtype=torch.float64))  # [K]
    ratio = torch.exp(math.log(2.0) * (2 * torch.rand(count, generator=g, dtype=torch.float64) - 1))  # [K]
    height, width = (s * image_scale for s in level.image_size)
    w, h = side / ratio.sqrt(), side * ratio.sqrt()  # [K] each
    cx = width * torch.rand(count, generator=g, dtype=torch.float64)  # [K]
    cy = height * torch.rand(count, generator=g, dtype=torch.float64)  # [K]
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)  # [K, 4]
    return torch.stack(
        [boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height),
         boxes[:, 2].clamp(0, width), boxes[:, 3].clamp(0, height)],
        dim=1,
    )


def feature_map(workload: Workload, seed: int = SEED) -> torch.Tensor:
    """Standard-normal float32 [N, C, H, W]: values do not change the work, only the map's size does."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(workload.map_shape, generator=g, dtype=torch.float32)


def rois_and_kwargs(workload: Workload, boxes: torch.Tensor, **flags) -> tuple[torch.Tensor, dict]:
    """``boxes`` [K, B] float64 in image pixels as ``rois`` [K, 1 + B] (each box's batch index first), and the keyword
    arguments of a RoIAlign call on ``workload`` (its head, level scale and sampling ratio, then ``flags``)."""
    rois = torch.cat([workload.box_index[:, None].to(torch.float64), boxes], dim=1)
    kwargs = dict(output_size=(workload.output, workload.output), spatial_scale=workload.level_spec.spatial_scale,
                  sampling_ratio=workload.sampling_ratio, **flags)
    return rois, kwargs


def roi_align_inputs(workload: Workload) -> tuple[torch.Tensor, dict]:
    """``rois`` [K, 5] float64 (batch index, image-pixel boxes) and the op's keyword arguments."""
    boxes = image_boxes(workload.level_spec, workload.boxes, workload.map_scale)  # [K, 4]
    return rois_and_kwargs(workload, boxes, aligned=True)


def crop_and_resize_inputs(workload: Workload) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Normalized ``(y1, x1, y2, x2)`` boxes [K, 4] float64 (fpcoor transform of the same proposals on the
    feature map), ``box_index`` [K] int64, and the op's keyword arguments."""
    _, _, height, width = workload.map_shape
    boxes = image_boxes(workload.level_spec, workload.boxes, workload.map_scale) * workload.level_spec.spatial_scale
    crop = workload.crop_size
    normalized = normalize_boxes(boxes, height, width, crop, crop, transform_fpcoor=True)  # [K, 4]
    return normalized, workload.box_index, dict(crop_size=(crop, crop))


# ------------------------------------------------------------------------ multi-level pooling (FPN pooler)


@dataclasses.dataclass(frozen=True)
class Pyramid:
    """The FPN maps a multi-level pooler reads, P2 to P5 (stride 4 to 32) of a batch of equal-size images, plus the
    ``pool`` map (P6, stride 64) that torchvision's FPN adds and its poolers leave out (``featmap_names``)."""

    name: str
    channels: int
    box_sides: tuple[float, float]  # sqrt(w * h) of the proposals in image pixels, [low, high), over every level
    canonical_scale: int  # a box this many pixels on a side goes to P4 (torchvision's LevelMapper)
    image_size: tuple[int, int] = (IMAGE_HEIGHT, IMAGE_WIDTH)
    strides: tuple[int, ...] = (4, 8, 16, 32)  # the pooled maps, finest first
    unpooled_stride: int = 64  # ``pool``: torchvision's LastLevelMaxPool on P5 (kernel 1, stride 2)

    @property
    def names(self) -> tuple[str, ...]:
        """The pooled maps' keys, as torchvision's FPN backbone names them (``featmap_names``)."""
        return tuple(str(i) for i in range(len(self.strides)))

    @property
    def level_names(self) -> tuple[str, ...]:
        """``p2``, ``p3``, ...: the pooled maps as the FPN paper names them (the check's error labels)."""
        return tuple(f"p{int(math.log2(stride))}" for stride in self.strides)

    def map_size(self, stride: int) -> tuple[int, int]:
        return tuple(math.ceil(side / stride) for side in self.image_size)

    @property
    def box_spec(self) -> Level:
        """The proposals' size range and image, as ``image_boxes`` reads them."""
        return Level(self.name, self.strides[0], self.channels, self.box_sides, self.image_size)


PYRAMIDS = {
    pyramid.name: pyramid
    for pyramid in (
        # Log-uniform sides 16-896 px: 48% of the boxes on P2 (< 112 px), 17% on each of P3, P4 and P5 before
        # clipping to the image (which moves some of P5's down).
        Pyramid("p2p5", channels=256, box_sides=(16.0, 896.0), canonical_scale=224),
        # The toy pyramid (maps 16x24 to 2x3, C=4): a canonical scale of 16 px spreads its 4-64 px boxes over the
        # four levels as 224 px does Mask R-CNN's.
        Pyramid("tiny", channels=4, box_sides=(4.0, 64.0), canonical_scale=16, image_size=(64, 96)),
    )
}


@dataclasses.dataclass(frozen=True)
class PyramidWorkload:
    """One call of an FPN detector's pooler: ``images`` images with ``boxes_per_image`` proposals each, every box
    pooled from the level its size picks into a ``P x P`` head with ``sampling_ratio`` and ``aligned=False``
    (torchvision's pooler's fixed setting)."""

    level: str  # the pyramid's name (``PYRAMIDS``); called ``level`` as in ``Workload``, for the results' rows
    images: int
    boxes_per_image: int
    output: int
    sampling_ratio: int
    map_scale: int = 1  # not swept: recorded as for the single-level workloads

    @property
    def id(self) -> str:
        """e.g. ``p2p5_2x1000_7x7_sr2``: pyramid, images x proposals per image, head, sampling ratio."""
        return (f"{self.level}_{self.images}x{self.boxes_per_image}_{self.output}x{self.output}"
                f"_sr{self.sampling_ratio}")

    @property
    def pyramid(self) -> Pyramid:
        return PYRAMIDS[self.level]

    @property
    def boxes(self) -> int:
        """K: every image's boxes."""
        return self.images * self.boxes_per_image

    @property
    def map_shape(self) -> tuple[int, int, int, int]:
        """[N, C, H, W] of the finest map (P2)."""
        return (self.images, self.pyramid.channels, *self.pyramid.map_size(self.pyramid.strides[0]))


def pyramid_maps(workload: PyramidWorkload, seed: int = SEED) -> dict[str, torch.Tensor]:
    """Standard-normal float32 maps [N, C, H_l, W_l] by name, finest first, ``pool`` last (torchvision's FPN order)."""
    g = torch.Generator().manual_seed(seed)
    pyramid = workload.pyramid
    strides = dict(zip(pyramid.names, pyramid.strides)) | {"pool": pyramid.unpooled_stride}
    return {
        name: torch.randn(workload.images, pyramid.channels, *pyramid.map_size(stride), generator=g)
        for name, stride in strides.items()
    }


def pyramid_boxes(workload: PyramidWorkload) -> list[torch.Tensor]:
    """Each image's proposals, (x1, y1, x2, y2) image pixels, float64 [boxes_per_image, 4], one seed per image."""
    return [image_boxes(workload.pyramid.box_spec, workload.boxes_per_image, seed=SEED + i)
            for i in range(workload.images)]
