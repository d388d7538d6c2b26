"""Colour jitter of RGB images (Cityscapes): :func:`color_jitter`."""

from __future__ import annotations

import torch

from ._common import (
    _CPU_CHUNK_BYTES,
    _check_clip,
    _check_generator,
    _check_images,
    _check_nonneg,
    _chunks,
    _empty_batch,
    _uniform,
)
from ._intensity import _scale_shift_clip

__all__ = ["color_jitter"]


def color_jitter(
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.2,
    clip: tuple[float, float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """Per-image brightness, contrast and saturation jitter of RGB images, in that order.

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
        Output range; None for none.

    Returns
    -------
    torch.Tensor of shape (N, 3, H, W)
        The jittered images; zero strengths with ``clip=None`` give exactly the input.

    Raises
    ------
    ValueError
        If a strength is negative or > 1, or `saturation` > 0 with C != 3.

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
    _check_clip(clip)
    n, ch = images.shape[:2]
    if s > 0 and ch != 3:
        msg = f"`images` must have 3 channels (RGB) for saturation jitter; got {ch}."
        raise ValueError(msg)
    fb = _uniform(n, 1 - b, 1 + b, generator, images).reshape(n, 1, 1, 1)
    fc = _uniform(n, 1 - c, 1 + c, generator, images).reshape(n, 1, 1, 1)
    fs = _uniform(n, 1 - s, 1 + s, generator, images).reshape(n, 1, 1, 1)
    weights = _GREY_WEIGHTS if ch == 3 else None
    out = _empty_batch(images)
    for sl in _chunks(images, chunk_bytes=4 * _CPU_CHUNK_BYTES):  # fewer, larger: measured
        _jitter_into(out[sl], images[sl], fb[sl], fc[sl], fs[sl], weights, clip)
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
