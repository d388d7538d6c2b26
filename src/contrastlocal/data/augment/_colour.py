"""Colour jitter of RGB images and the Cityscapes recipe built on it.

:func:`color_jitter` (brightness, contrast, saturation, hue); :func:`cityscapes_finetune_augment`
(random crop, then colour jitter) and :func:`colour_views` (pre-training views with colour
jitter), the paper's Cityscapes augmentation.
"""

from __future__ import annotations

import math

import torch

from ._common import (
    _CPU_CHUNK_BYTES,
    _check_clip,
    _check_generator,
    _check_images,
    _check_nonneg,
    _check_range,
    _chunks,
    _empty_batch,
    _uniform,
)
from ._crop import crop_resize, random_crop
from ._intensity import _scale_shift_clip

__all__ = [
    "CITYSCAPES_FINETUNE_JITTER",
    "CITYSCAPES_VIEW_JITTER",
    "cityscapes_finetune_augment",
    "color_jitter",
    "colour_views",
]


def color_jitter(
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.2,
    clip: tuple[float, float] | None = (0.0, 1.0),
    hue: float = 0.0,
) -> torch.Tensor:
    r"""Per-image brightness, contrast, saturation and hue jitter of RGB images, in that order.

    Parameters
    ----------
    images : torch.Tensor of shape (N, 3, H, W)
        RGB images in [0, 1] (any C is accepted when `saturation` is 0).
    generator : torch.Generator
        Source of randomness.
    brightness : float, default 0.2
        Multiplicative factor U(1 - b, 1 + b).
    contrast : float, default 0.2
        Blend with the image's mean grey level, factor U(1 - c, 1 + c).
    saturation : float, default 0.2
        Blend with the per-pixel grey level, factor U(1 - s, 1 + s).
    clip : pair of float or None, default (0.0, 1.0)
        Output range (applied once, after the last step); None for none.
    hue : float, default 0.0
        Hue rotation by :math:`2\pi h` radians, :math:`h \sim U(-\text{hue}, \text{hue})`, at
        most 0.5: the chroma plane (I, Q) of the YIQ colour space is rotated by that angle while
        the luma Y is kept (a linear map per image). 0 draws nothing (the output of the first
        three steps is unchanged).

    Returns
    -------
    torch.Tensor of shape (N, 3, H, W)
        The jittered images; zero strengths with ``clip=None`` give exactly the input.

    Raises
    ------
    ValueError
        If a strength is negative or > 1 (`hue` > 0.5), or `saturation` or `hue` > 0 with
        C != 3.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.rand(2, 3, 8, 8, generator=g)
    >>> tuple(color_jitter(x, g).shape)
    (2, 3, 8, 8)
    """
    _check_images(images)
    _check_generator(generator)
    b = _check_nonneg(brightness, "brightness", 1.0)
    c = _check_nonneg(contrast, "contrast", 1.0)
    s = _check_nonneg(saturation, "saturation", 1.0)
    hu = _check_nonneg(hue, "hue", 0.5)
    _check_clip(clip)
    n, ch = images.shape[:2]
    if (s > 0 or hu > 0) and ch != 3:
        msg = f"`images` must have 3 channels (RGB) for saturation or hue jitter; got {ch}."
        raise ValueError(msg)
    fb = _uniform(n, 1 - b, 1 + b, generator, images).reshape(n, 1, 1, 1)
    fc = _uniform(n, 1 - c, 1 + c, generator, images).reshape(n, 1, 1, 1)
    fs = _uniform(n, 1 - s, 1 + s, generator, images).reshape(n, 1, 1, 1)
    weights = _GREY_WEIGHTS if ch == 3 else None
    out = _empty_batch(images)
    if hu > 0:
        angle = _uniform(n, -hu, hu, generator, images) * (2 * math.pi)
        rotation = _hue_matrices(angle)
        for sl in _chunks(images, chunk_bytes=4 * _CPU_CHUNK_BYTES):
            _jitter_into(out[sl], images[sl], fb[sl], fc[sl], fs[sl], weights, None)
            rotated = torch.einsum("nij,njhw->nihw", rotation[sl], out[sl])
            out[sl] = rotated if clip is None else rotated.clamp_(clip[0], clip[1])
        return out
    for sl in _chunks(images, chunk_bytes=4 * _CPU_CHUNK_BYTES):  # fewer, larger: measured
        _jitter_into(out[sl], images[sl], fb[sl], fc[sl], fs[sl], weights, clip)
    return out


#: RGB -> YIQ (FCC NTSC); its first row is the BT.601 luma of :data:`_GREY_WEIGHTS`.
_RGB_TO_YIQ = (
    (0.299, 0.587, 0.114),
    (0.595716, -0.274453, -0.321263),
    (0.211456, -0.522591, 0.311135),
)


def _hue_matrices(angle: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) RGB maps ``T^-1 R(angle) T``: rotate the YIQ chroma plane, keep the luma."""
    dtype = torch.float64
    t = torch.tensor(_RGB_TO_YIQ, dtype=dtype, device=angle.device)
    a = angle.to(dtype)
    r = torch.zeros(a.shape[0], 3, 3, dtype=dtype, device=angle.device)
    r[:, 0, 0] = 1.0
    r[:, 1, 1] = torch.cos(a)
    r[:, 1, 2] = -torch.sin(a)
    r[:, 2, 1] = torch.sin(a)
    r[:, 2, 2] = torch.cos(a)
    out: torch.Tensor = (torch.linalg.inv(t) @ r @ t).to(angle.dtype)
    return out


#: ITU-R BT.601 luma weights of R, G, B (the grey level of the contrast and saturation steps).
_GREY_WEIGHTS = (0.299, 0.587, 0.114)


def _jitter_into(
    out: torch.Tensor,
    x: torch.Tensor,
    fb: torch.Tensor,
    fc: torch.Tensor,
    fs: torch.Tensor,
    weights: tuple[float, float, float] | None,
    clip: tuple[float, float] | None,
) -> torch.Tensor:
    """:func:`color_jitter` of one chunk into `out`, the three steps folded into one affine map.

    With G the grey level of `x` (weights `weights`) and m its image mean, brightness gives
    ``fb x`` (grey ``fb G``); contrast ``a x + b`` with ``a = fc fb``, ``b = (1 - fc) fb m``;
    saturation ``fs (a x + b) + (1 - fs) (a G + b sum(weights))``. So the output is
    ``alpha x + (beta G + gamma)`` per image: the grey plane is built from three scaled channel
    passes and turned in place into ``beta G + gamma``; one ``addcmul`` writes the output (each
    op has at most one operand broadcast along W, so each hits the vectorised CPU kernel).
    """
    a = fc * fb
    if weights is None:  # no saturation step; contrast around the mean over all channels
        bias = (1 - fc) * fb * x.mean(dim=(1, 2, 3), keepdim=True)
        return _scale_shift_clip(torch.mul(x, a, out=out), None, bias, clip)
    grey = torch.mul(x[:, 0:1], weights[0])
    grey.add_(x[:, 1:2], alpha=weights[1]).add_(x[:, 2:3], alpha=weights[2])
    bias = (1 - fc) * fb * grey.mean(dim=(2, 3), keepdim=True)
    gamma = fs * bias + (1 - fs) * bias * sum(weights)
    grey.mul_((1 - fs) * a).add_(gamma)
    # grey broadcasts over channels but is contiguous along W, so only fs * a is a broadcast
    # operand in the inner loop: one vectorised pass
    out = torch.addcmul(grey, fs * a, x, out=out)
    return out if clip is None else out.clamp_(clip[0], clip[1])


#: Strengths of the Cityscapes colour jitter, (brightness, contrast, saturation, hue). The paper
#: names the four jitters but not their strengths (nor does the authors' released code, which
#: has no Cityscapes recipe): fine-tuning uses mild ones, the pre-training views SimCLR's colour
#: distortion at strength s = 0.5 (0.8 s for the first three, 0.2 s for hue).
CITYSCAPES_FINETUNE_JITTER: tuple[float, float, float, float] = (0.2, 0.2, 0.2, 0.05)
CITYSCAPES_VIEW_JITTER: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)


def cityscapes_finetune_augment(
    images: torch.Tensor,
    labels: torch.Tensor | None,
    generator: torch.Generator,
    *,
    size: tuple[int, int] = (192, 384),
    brightness: float = CITYSCAPES_FINETUNE_JITTER[0],
    contrast: float = CITYSCAPES_FINETUNE_JITTER[1],
    saturation: float = CITYSCAPES_FINETUNE_JITTER[2],
    hue: float = CITYSCAPES_FINETUNE_JITTER[3],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Augment Cityscapes for fine-tuning as the paper did: a random crop, then colour jitter.

    Parameters
    ----------
    images : torch.Tensor of shape (N, 3, H, W)
        RGB images in [0, 1].
    labels : torch.Tensor of shape (N, H, W), or None
        Label maps, cropped with the same windows (not jittered).
    generator : torch.Generator
        Source of randomness: the crop offsets (:func:`random_crop`), then the jitter
        (:func:`color_jitter`).
    size : pair of int, default (192, 384)
        Crop size (h, w). The paper does not state it; the default is 3/4 of each side of the
        4x-downscaled 256 x 512 images, a multiple of 32 as the 5-pooling UNet needs.
    brightness, contrast, saturation, hue : float
        Jitter strengths (:func:`color_jitter`); defaults :data:`CITYSCAPES_FINETUNE_JITTER`
        (the paper does not state them).

    Returns
    -------
    images : torch.Tensor of shape (N, 3, h, w)
        Cropped, jittered images, clipped to [0, 1].
    labels : torch.Tensor of shape (N, h, w) or None
        The cropped labels.

    Raises
    ------
    ValueError
        As :func:`random_crop` and :func:`color_jitter`.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.rand(2, 3, 64, 128, generator=g), torch.zeros(2, 64, 128, dtype=torch.long)
    >>> xa, ya = cityscapes_finetune_augment(x, y, g, size=(32, 64))
    >>> tuple(xa.shape), tuple(ya.shape)
    ((2, 3, 32, 64), (2, 32, 64))
    """
    crops, crop_labels = random_crop(images, labels, generator, size=size)
    jittered = color_jitter(
        crops, generator, brightness=brightness, contrast=contrast, saturation=saturation,
        hue=hue, clip=(0.0, 1.0),
    )
    return jittered, crop_labels


def colour_views(
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    kind: str = "global",
    crop_fraction: float = 100 / 192,
    corner_range: tuple[float, float] = (10 / 192, 69 / 192),
    brightness: float = CITYSCAPES_VIEW_JITTER[0],
    contrast: float = CITYSCAPES_VIEW_JITTER[1],
    saturation: float = CITYSCAPES_VIEW_JITTER[2],
    hue: float = CITYSCAPES_VIEW_JITTER[3],
) -> torch.Tensor:
    """One pre-training view of each RGB image with colour jitter (Cityscapes, as the paper).

    Parameters
    ----------
    images : torch.Tensor of shape (N, 3, H, W)
        RGB images in [0, 1].
    generator : torch.Generator
        Source of randomness: the crop corners (``"global"``), then the jitter.
    kind : {"global", "local"}, default "global"
        ``"global"`` (stage 1): crop-and-resize as :func:`~contrastlocal.data.augment.global_views`
        then colour jitter; ``"local"`` (stage 2): colour jitter only (views stay pixel-aligned).
    crop_fraction, corner_range : see :func:`~contrastlocal.data.augment.global_views`
        The crop of ``"global"`` views (:func:`crop_resize`; defaults as the medical views).
    brightness, contrast, saturation, hue : float
        Jitter strengths (:func:`color_jitter`); defaults :data:`CITYSCAPES_VIEW_JITTER` (the
        paper does not state them).

    Returns
    -------
    torch.Tensor of shape (N, 3, H, W)
        The view, clipped to [0, 1].

    Raises
    ------
    ValueError
        If `kind` is unknown, the crop leaves the image, or a strength is out of range.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.rand(2, 3, 32, 64, generator=g)
    >>> tuple(colour_views(x, g).shape), tuple(colour_views(x, g, kind="local").shape)
    ((2, 3, 32, 64), (2, 3, 32, 64))
    """
    _check_images(images)
    _check_generator(generator)
    if kind not in ("global", "local"):
        msg = f"`kind` must be 'global' or 'local'; got {kind!r}."
        raise ValueError(msg)
    if kind == "global":
        f = _check_nonneg(crop_fraction, "crop_fraction", 1.0)
        _check_range(corner_range, "corner_range", 0.0, 1.0)
        if f == 0.0 or corner_range[1] + f > 1.0 + 1e-12:
            msg = (f"`crop_fraction` must be in (0, 1] with `corner_range` upper bound + "
                   f"`crop_fraction` <= 1; got {crop_fraction!r} and {corner_range!r}.")
            raise ValueError(msg)
        corners = _uniform(
            (images.shape[0], 2), corner_range[0], corner_range[1], generator, images
        )
        images = crop_resize(images, corners, f)
    return color_jitter(
        images, generator, brightness=brightness, contrast=contrast, saturation=saturation,
        hue=hue, clip=(0.0, 1.0),
    )
