"""Brightness and contrast: :func:`adjust_intensity` and its in-place chunk kernels."""

from __future__ import annotations

import torch

from ._common import _check_clip, _check_images, _check_nonneg, _uniform

__all__ = ["adjust_intensity"]


def adjust_intensity(
    images: torch.Tensor,
    shift: torch.Tensor,
    factor: torch.Tensor,
    *,
    clip: tuple[float, float] | None = (0.0, 1.5),
) -> torch.Tensor:
    r"""Brightness shift, then contrast scaling around the image mean, then clipping.

    Parameters
    ----------
    images : torch.Tensor of shape (N, C, H, W)
        Floating-point images.
    shift : torch.Tensor of shape (N,)
        Brightness shift :math:`\delta` of each image.
    factor : torch.Tensor of shape (N,)
        Contrast factor :math:`c` of each image.
    clip : pair of float or None, default (0.0, 1.5)
        Output range (the original's [0, 1.5]); None leaves values unclipped.

    Returns
    -------
    torch.Tensor of shape (N, C, H, W)
        Same dtype and device as `images`.

    Raises
    ------
    ValueError
        If the shapes disagree or `clip` is not an ordered pair.

    Notes
    -----
    :math:`x' = \mathrm{clip}((x + \delta - \mu_\delta)\,c + \mu_\delta)` with :math:`\mu_\delta`
    the mean of :math:`x + \delta` over the image (all channels and pixels), computed as
    :math:`c (x + \delta) + (1 - c) \mu_\delta` so that :math:`\delta = 0, c = 1` is exactly the
    identity.

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([[[[0.0, 1.0]]]])
    >>> adjust_intensity(x, torch.tensor([0.5]), torch.tensor([2.0]), clip=None)
    tensor([[[[0.0000, 2.0000]]]])
    """
    _check_images(images)
    _check_clip(clip)
    n = images.shape[0]
    if tuple(shift.shape) != (n,) or tuple(factor.shape) != (n,):
        msg = (
            f"`shift` and `factor` must have shape (N,) = ({n},); got {tuple(shift.shape)} and "
            f"{tuple(factor.shape)}."
        )
        raise ValueError(msg)
    d = shift.to(images).reshape(n, 1, 1, 1)
    c = factor.to(images).reshape(n, 1, 1, 1)
    # the mean of x + d is mean(x) + d: one reduction over the input, then the output written
    # once and updated in place (no batch-sized temporary, so no chunking)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return _scale_shift_clip(torch.mul(images, c), None, d + (1.0 - c) * mean, clip)


def _scale_shift_clip(
    out: torch.Tensor,
    scale: torch.Tensor | None,
    bias: torch.Tensor,
    clip: tuple[float, float] | None,
) -> torch.Tensor:
    """``out = clip(out * scale + bias)`` in place; `scale`, `bias` broadcast per image.

    Separate in-place passes (each with one broadcast operand) on a cache-resident chunk: a fused
    ``addcmul`` with two broadcast operands misses the vectorised CPU kernel and is ~4x slower.
    """
    if scale is not None:
        out.mul_(scale)
    out.add_(bias)
    if clip is not None:
        out.clamp_(clip[0], clip[1])
    return out


def _adjust_intensity_inplace(
    out: torch.Tensor,
    shift: torch.Tensor,
    factor: torch.Tensor,
    clip: tuple[float, float] | None,
) -> torch.Tensor:
    """:func:`adjust_intensity` of one chunk in place; `shift`, `factor` (n, 1, 1, 1).

    ``c (x + d) + (1 - c) mean(x + d) = c x + d + (1 - c) mean(x)``.
    """
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return _scale_shift_clip(out, factor, shift + (1.0 - factor) * mean, clip)


def _intensity_params(
    images: torch.Tensor,
    generator: torch.Generator,
    brightness: float,
    contrast: float,
    shared: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the strengths and draw shift, then factor, each (N,) (:func:`intensity_views`).

    ``shared=True``: the authors' draw, one ``u ~ U(0, 1)`` for the whole call giving
    ``shift = -b + 2 b u`` and ``factor = 1 - k + 2 k u`` for every image (so ``factor = 1 +
    shift`` when ``b = k``).
    """
    b = _check_nonneg(brightness, "brightness")
    k = _check_nonneg(contrast, "contrast")
    if k >= 1.0:
        msg = f"`contrast` must be in [0, 1) so the factor stays positive; got {contrast!r}."
        raise ValueError(msg)
    if not isinstance(shared, bool):
        msg = f"`shared` must be a bool; got {shared!r}."
        raise TypeError(msg)
    n = images.shape[0]
    if shared:
        u = _uniform(1, 0.0, 1.0, generator, images).expand(n)
        return -b + (2 * b) * u, (1.0 - k) + (2 * k) * u
    shift = _uniform(n, -b, b, generator, images)
    factor = _uniform(n, 1.0 - k, 1.0 + k, generator, images)
    return shift, factor
