"""Batched, device-agnostic torch augmentation for the three stages (explicit `torch.Generator`).

Every random function takes a ``torch.Generator`` and never touches the global RNG. The random
parameters (a few numbers per image, and the coarse elastic grid) are drawn on the generator's
device and then moved to the images' device, so a CPU generator gives the same augmentation of
the same batch on any device. Images are channel-first float tensors (N, C, H, W); shapes, dtype
and device are preserved. Every geometric transform is one ``grid_sample`` per tensor.

On the CPU every transform walks the batch in chunks of about 1 MiB of pixels: the temporaries
then stay in cache and the allocator recycles them, where batch-sized temporaries would be
freshly mapped (page-faulted) memory on every call -- the dominant cost of these bandwidth-bound
kernels. On other devices the whole batch is one chunk. Results do not depend on the chunking.

Stage 1 (global loss): :func:`global_views` (crop-and-resize + brightness/contrast).
Stage 2 (local loss): :func:`intensity_views` (intensity only; the views stay pixel-aligned).
Stage 3 and the baseline: :func:`geometric_augment` (affine choice + coarse elastic field, images
and labels with one shared sampling grid), :func:`authors_geometric_augment` (the authors' two
steps with soft one-hot labels) and :func:`mixup`. RGB (Cityscapes): :func:`color_jitter`,
:func:`random_crop`, and the paper's recipe :func:`cityscapes_finetune_augment` and
:func:`colour_views`. :func:`two_views` builds the (2N)-row batch and metadata the losses take.

The functions live in one private module per transform family (``_intensity``, ``_geometric``,
``_crop``, ``_mixup``, ``_colour``, ``_views``; shared checks and chunking in ``_common``) and
are imported from here: ``contrastlocal.data.augment`` is their one public path.

References
----------
Chaitanya et al., "Contrastive learning of global and local features for medical image
segmentation with limited annotations", NeurIPS 2020, arXiv:2006.10511.
"""

from __future__ import annotations

from ._colour import (
    CITYSCAPES_FINETUNE_JITTER,
    CITYSCAPES_VIEW_JITTER,
    cityscapes_finetune_augment,
    color_jitter,
    colour_views,
)
from ._crop import crop_resize, random_crop
from ._geometric import (
    authors_geometric_augment,
    authors_warp,
    geometric_augment,
    geometric_params,
    warp,
)
from ._intensity import adjust_intensity
from ._mixup import MIXUP_ALPHA, mixup
from ._views import global_views, intensity_views, two_views

__all__ = [
    "CITYSCAPES_FINETUNE_JITTER",
    "CITYSCAPES_VIEW_JITTER",
    "MIXUP_ALPHA",
    "adjust_intensity",
    "authors_geometric_augment",
    "authors_warp",
    "cityscapes_finetune_augment",
    "color_jitter",
    "colour_views",
    "crop_resize",
    "geometric_augment",
    "geometric_params",
    "global_views",
    "intensity_views",
    "mixup",
    "random_crop",
    "two_views",
    "warp",
]
