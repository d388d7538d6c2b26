"""The contrastive views of stages 1 and 2, and the batch the losses take.

:func:`global_views` (stage 1), :func:`intensity_views` (stage 2) and :func:`two_views`, the
(2N)-row batch with its metadata.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch

from ._colour import colour_views
from ._common import (
    _check_clip,
    _check_generator,
    _check_images,
    _check_nonneg,
    _check_range,
    _chunks,
    _coord_dtype,
    _empty_batch,
    _uniform,
)
from ._crop import _crop_resize_into, _crop_resize_taps
from ._intensity import _adjust_intensity_inplace, _intensity_params, adjust_intensity

__all__ = ["global_views", "intensity_views", "two_views"]


_META_KEYS = ("image_ids", "volume_ids", "partition_ids", "slice_indices", "positions")


def intensity_views(
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    brightness: float = 0.3,
    contrast: float = 0.3,
    clip: tuple[float, float] | None = (0.0, 1.5),
    shared: bool = False,
) -> torch.Tensor:
    r"""One intensity-only view of each image: independent brightness and contrast per image.

    Parameters
    ----------
    images : torch.Tensor of shape (N, C, H, W)
        Floating-point images.
    generator : torch.Generator
        Source of randomness (CPU or the images' device).
    brightness : float, default 0.3
        :math:`\delta \sim U(-b, b)`.
    contrast : float, default 0.3
        :math:`c \sim U(1 - k, 1 + k)`, ``0 <= k < 1``.
    clip : pair of float or None, default (0.0, 1.5)
        Output range; None for none.
    shared : bool, default False
        The authors' draw (``fidelity.shared_intensity``): one :math:`u \sim U(0, 1)` for the
        whole call, :math:`\delta = -b + 2bu` and :math:`c = 1 - k + 2ku` for every image (with
        the default strengths :math:`c = 1 + \delta`). Default: independent draws per image.

    Returns
    -------
    torch.Tensor of shape (N, C, H, W)
        The view; pixel-aligned with `images` (what the local loss needs).

    Raises
    ------
    ValueError
        If a strength is negative or `contrast` >= 1.

    Notes
    -----
    See :func:`adjust_intensity`. Unlike the original code, :math:`\delta` and :math:`c` are
    drawn independently for every image (there they were shared by the whole call and
    perfectly correlated, :math:`c = 1 + \delta`).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.rand(4, 1, 8, 8, generator=g)
    >>> tuple(intensity_views(x, g).shape)
    (4, 1, 8, 8)
    >>> torch.equal(intensity_views(x, g, brightness=0.0, contrast=0.0, clip=None), x)
    True
    """
    _check_images(images)
    _check_generator(generator)
    shift, factor = _intensity_params(images, generator, brightness, contrast, shared)
    return adjust_intensity(images, shift, factor, clip=clip)


def global_views(
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    crop_fraction: float = 100 / 192,
    corner_range: tuple[float, float] = (10 / 192, 69 / 192),
    brightness: float = 0.3,
    contrast: float = 0.3,
    clip: tuple[float, float] | None = (0.0, 1.5),
    shared: bool = False,
    crop_pixels: int | None = None,
    corner_pixels: tuple[int, int] = (10, 69),
) -> torch.Tensor:
    """One stage-1 view of each image: random crop-and-resize, then brightness and contrast.

    Parameters
    ----------
    images : torch.Tensor of shape (N, C, H, W)
        Floating-point images.
    generator : torch.Generator
        Source of randomness (CPU or the images' device).
    crop_fraction : float, default 100/192
        Crop size relative to the image (the original crops 100 x 100 of 192 x 192).
    corner_range : pair of float, default (10/192, 69/192)
        The crop's top-left corner, x and y drawn independently and uniformly in this range of
        fractions of the image size (the original draws integers in [10, 69] at 192 x 192; here the
        draw is continuous, so the crop is resolution-independent).
    brightness : float, default 0.3
        Brightness shift range, see :func:`intensity_views`.
    contrast : float, default 0.3
        Contrast factor range, see :func:`intensity_views`.
    clip : pair of float or None, default (0.0, 1.5)
        Output range; None for none.
    shared : bool, default False
        One correlated brightness/contrast draw for the whole call, as the authors' code
        (``fidelity.shared_intensity``; see :func:`intensity_views`).
    crop_pixels : int, optional
        The authors' fixed crop (``fidelity.fixed_crop``): a ``crop_pixels`` x ``crop_pixels``
        box whose corner x and y are integers drawn uniformly in `corner_pixels` (inclusive),
        whatever the image size (the authors: 100 and [10, 69], also on 160 x 160 MM-WHS
        images, where a box past the border is cut there, ``min(100, 160 - corner)`` pixels,
        and the cut box is stretched to the full size). Replaces `crop_fraction` and
        `corner_range`.
    corner_pixels : pair of int, default (10, 69)
        Range of the integer corner with `crop_pixels`.

    Returns
    -------
    torch.Tensor of shape (N, C, H, W)
        The view; same dtype and device as `images`.

    Raises
    ------
    ValueError
        If the crop leaves the image (``corner_range[1] + crop_fraction > 1``, or a corner of
        `corner_pixels` outside the image), or a parameter is out of range.

    Notes
    -----
    The crop-and-resize is :func:`crop_resize` (separable bilinear, edge pixels repeated), fused
    with :func:`adjust_intensity` chunk by chunk. With ``crop_fraction=1`` and
    ``corner_range=(0, 0)`` no resampling happens, and with
    zero brightness and contrast and ``clip=None`` the view is exactly the input.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.rand(2, 1, 16, 16, generator=g)
    >>> v = global_views(x, g)
    >>> tuple(v.shape), v.dtype, float(v.min()) >= 0.0
    ((2, 1, 16, 16), torch.float32, True)
    """
    _check_images(images)
    _check_generator(generator)
    f = _check_nonneg(crop_fraction, "crop_fraction", 1.0)
    if f == 0.0:
        msg = f"`crop_fraction` must be in (0, 1]; got {crop_fraction!r}."
        raise ValueError(msg)
    _check_range(corner_range, "corner_range", 0.0, 1.0)
    if corner_range[1] + f > 1.0 + 1e-12:
        msg = (
            f"`corner_range` upper bound + `crop_fraction` must be <= 1 so the crop stays inside "
            f"the image; got {corner_range[1]} + {f}."
        )
        raise ValueError(msg)
    n = images.shape[0]
    f_xy = None
    if crop_pixels is not None:
        corners, f_xy = _pixel_corners(images, generator, crop_pixels, corner_pixels)
        # every box's y fraction is at most crop / H: a window that fixed needs no read of the
        # boxes (no wait for a GPU); the extra rows it gathers are not used by any tap
        f = min(1.0, crop_pixels / images.shape[2])
    elif f == 1.0 and corner_range == (0.0, 0.0):
        return intensity_views(
            images, generator, brightness=brightness, contrast=contrast, clip=clip,
            shared=shared,
        )
    else:
        corners = _uniform((n, 2), corner_range[0], corner_range[1], generator, images)
    shift, factor = _intensity_params(images, generator, brightness, contrast, shared)
    _check_clip(clip)
    c = corners.to(device=images.device, dtype=_coord_dtype(images))
    taps = _crop_resize_taps(c, images.shape[2], images.shape[3], f, images.dtype, f_xy)
    d = shift.reshape(n, 1, 1, 1)
    k = factor.reshape(n, 1, 1, 1)
    # crop_resize then adjust_intensity, fused chunk by chunk (same draws, same values)
    out = _empty_batch(images)
    for sl in _chunks(images):
        view = _crop_resize_into(out[sl], images[sl], taps, sl)
        _adjust_intensity_inplace(view, d[sl], k[sl], clip)
    return out


def _pixel_corners(
    images: torch.Tensor,
    generator: torch.Generator,
    crop_pixels: int,
    corner_pixels: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer crop corners and box sizes, (n, 2) each as (x, y) fractions of the image size.

    The box is cut where it passes the image border (``min(crop, size - corner)`` pixels), as
    the authors' slicing does on images smaller than corner + crop (MM-WHS).
    """
    n, _, h, w = images.shape
    ints = (crop_pixels, *corner_pixels) if len(corner_pixels) == 2 else ()
    if not ints or any(isinstance(v, bool) or not isinstance(v, int) for v in ints):
        msg = (f"`crop_pixels` must be an int and `corner_pixels` a pair of ints; got "
               f"{crop_pixels!r} and {corner_pixels!r}.")
        raise TypeError(msg)
    lo, hi = corner_pixels
    if not (crop_pixels >= 1 and 0 <= lo <= hi < min(h, w)):
        msg = (f"`crop_pixels` must be >= 1 and `corner_pixels` (lo, hi) must satisfy "
               f"0 <= lo <= hi < {min(h, w)} (inside the {h} x {w} image); got {crop_pixels} "
               f"and {corner_pixels!r}.")
        raise ValueError(msg)
    xy = torch.randint(lo, hi + 1, (n, 2), generator=generator, device=generator.device)
    dtype = _coord_dtype(images)
    size = torch.tensor([w, h], dtype=dtype).to(generator.device, non_blocking=True)
    box = torch.minimum(torch.full_like(size, float(crop_pixels)), size - xy.to(dtype))
    return (xy.to(dtype) / size).to(images.device), (box / size).to(images.device)


def two_views(
    batch: Mapping[str, torch.Tensor],
    generator: torch.Generator,
    *,
    kind: Literal["global", "local", "colour_global", "colour_local"] = "global",
    include_original: bool = False,
    **kwargs: float | tuple[float, float] | None,
) -> dict[str, torch.Tensor]:
    """Two views of every image in the row layout and with the metadata the losses take.

    Parameters
    ----------
    batch : mapping of str to torch.Tensor
        ``images`` (N, C, H, W) and ``image_ids`` (N,), plus any of ``volume_ids``,
        ``partition_ids``, ``slice_indices``, ``positions`` (N,), as produced by
        :func:`contrastlocal.data.slices.collate_slices` or ``SliceDataset.get_batch``.
    generator : torch.Generator
        Source of randomness.
    kind : {"global", "local", "colour_global", "colour_local"}, default "global"
        ``"global"``: :func:`global_views` (crop-and-resize + intensity) for stage 1;
        ``"local"``: :func:`intensity_views` (pixel-aligned) for stage 2; the ``colour_``
        kinds: :func:`colour_views` of that kind (RGB images, the paper's Cityscapes views).
    include_original : bool, default False
        If True the first view is the unaugmented image, as the original code's G^D batches;
        default: two independent augmented views.
    **kwargs
        Passed to the view function (e.g. ``brightness``, ``crop_fraction``).

    Returns
    -------
    dict of str to torch.Tensor
        ``images`` (2N, C, H, W): rows ``[view 1 of images 0..N-1, view 2 of images 0..N-1]``;
        ``view_ids`` int64 (2N,) (0 then 1); each metadata entry of `batch` repeated for both
        views, ``image_ids``, ``volume_ids``, ``partition_ids``, ``slice_indices`` as int64 and
        ``positions`` as float32, length 2N.

    Raises
    ------
    ValueError
        If `batch` lacks ``images`` or ``image_ids``, a metadata entry has the wrong length, or
        `kind` is unknown.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> batch = {"images": torch.rand(3, 1, 16, 16, generator=g),
    ...          "image_ids": torch.tensor([7, 8, 9]), "partition_ids": torch.tensor([0, 1, 2])}
    >>> out = two_views(batch, g, kind="local")
    >>> tuple(out["images"].shape), out["image_ids"].tolist(), out["partition_ids"].tolist()
    ((6, 1, 16, 16), [7, 8, 9, 7, 8, 9], [0, 1, 2, 0, 1, 2])
    """
    _check_generator(generator)
    for key in ("images", "image_ids"):
        if key not in batch:
            msg = f"`batch` must contain {key!r}; got keys {sorted(batch)}."
            raise ValueError(msg)
    images = batch["images"]
    _check_images(images, "batch['images']")
    n = images.shape[0]
    if kind == "global":
        view1 = images if include_original else global_views(images, generator, **kwargs)  # type: ignore[arg-type]
        view2 = global_views(images, generator, **kwargs)  # type: ignore[arg-type]
    elif kind == "local":
        view1 = images if include_original else intensity_views(images, generator, **kwargs)  # type: ignore[arg-type]
        view2 = intensity_views(images, generator, **kwargs)  # type: ignore[arg-type]
    elif kind in ("colour_global", "colour_local"):
        k = kind.removeprefix("colour_")
        view1 = (
            images if include_original else colour_views(images, generator, kind=k, **kwargs)  # type: ignore[arg-type]
        )
        view2 = colour_views(images, generator, kind=k, **kwargs)  # type: ignore[arg-type]
    else:
        msg = (f"`kind` must be 'global', 'local', 'colour_global' or 'colour_local'; got "
               f"{kind!r}.")
        raise ValueError(msg)
    out: dict[str, torch.Tensor] = {"images": torch.cat([view1, view2])}
    device = images.device
    out["view_ids"] = torch.repeat_interleave(torch.arange(2, dtype=torch.int64, device=device), n)
    for key in _META_KEYS:
        if key not in batch:
            continue
        value = torch.as_tensor(batch[key], device=device)
        if tuple(value.shape) != (n,):
            msg = f"`batch[{key!r}]` must have shape (N,) = ({n},); got {tuple(value.shape)}."
            raise ValueError(msg)
        dtype = torch.float32 if key == "positions" else torch.int64
        out[key] = torch.cat([value, value]).to(dtype)
    return out
