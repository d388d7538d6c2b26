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
and labels with one shared sampling grid) and :func:`mixup`. RGB (Cityscapes): :func:`color_jitter`,
:func:`random_crop`. :func:`two_views` builds the (2N)-row batch and metadata the losses take.

References
----------
Chaitanya et al., "Contrastive learning of global and local features for medical image
segmentation with limited annotations", NeurIPS 2020, arXiv:2006.10511.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

__all__ = [
    "adjust_intensity",
    "color_jitter",
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

_META_KEYS = ("image_ids", "volume_ids", "partition_ids", "slice_indices", "positions")

#: CPU work size: about this many bytes of pixels per chunk (see the module docstring).
_CPU_CHUNK_BYTES = 1 << 20


def _chunks(
    images: torch.Tensor, per_image_bytes: int | None = None, chunk_bytes: int = 0
) -> list[slice]:
    """Row ranges covering the batch: ~`chunk_bytes` each on the CPU, one elsewhere.

    `chunk_bytes` defaults to `_CPU_CHUNK_BYTES`; `per_image_bytes` to one image's size.
    """
    n = images.shape[0]
    if images.device.type != "cpu" or n == 0:
        return [slice(0, n)]
    item = per_image_bytes or images[0].numel() * images.element_size()
    k = max(1, (chunk_bytes or _CPU_CHUNK_BYTES) // max(1, item))
    return [slice(i, min(i + k, n)) for i in range(0, n, k)]


# --------------------------------------------------------------------------------------------
# validation and random draws
# --------------------------------------------------------------------------------------------
def _check_images(images: torch.Tensor, name: str = "images") -> None:
    if not isinstance(images, torch.Tensor):
        msg = f"`{name}` must be a torch.Tensor of shape (N, C, H, W); got {type(images).__name__}."
        raise TypeError(msg)
    if images.ndim != 4:
        msg = f"`{name}` must be 4-D with shape (N, C, H, W); got shape {tuple(images.shape)}."
        raise ValueError(msg)
    if not images.is_floating_point():
        msg = f"`{name}` must have a floating dtype; got dtype {images.dtype}."
        raise TypeError(msg)


def _check_generator(generator: torch.Generator) -> None:
    if not isinstance(generator, torch.Generator):
        msg = f"`generator` must be a torch.Generator; got {type(generator).__name__}."
        raise TypeError(msg)


def _check_nonneg(value: float, name: str, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"`{name}` must be a real number; got {value!r}."
        raise TypeError(msg)
    v = float(value)
    if not math.isfinite(v) or v < 0.0 or (high is not None and v > high):
        bound = "" if high is None else f" and <= {high}"
        msg = f"`{name}` must be >= 0{bound}; got {value!r}."
        raise ValueError(msg)
    return v


def _check_range(value: tuple[float, float], name: str, low: float, high: float) -> None:
    if len(value) != 2 or not low <= value[0] <= value[1] <= high:
        msg = f"`{name}` must be a pair (lo, hi) with {low} <= lo <= hi <= {high}; got {value!r}."
        raise ValueError(msg)


def _check_clip(clip: tuple[float, float] | None) -> None:
    if clip is not None and (len(clip) != 2 or not clip[0] <= clip[1]):
        msg = f"`clip` must be None or a pair (lo, hi) with lo <= hi; got {clip!r}."
        raise ValueError(msg)


def _uniform(
    n: int | tuple[int, ...],
    low: float,
    high: float,
    generator: torch.Generator,
    like: torch.Tensor,
) -> torch.Tensor:
    """U(low, high) draws on the generator's device, moved to `like`'s device and dtype."""
    shape = (n,) if isinstance(n, int) else n
    u = torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return (low + (high - low) * u).to(device=like.device, dtype=like.dtype)


# --------------------------------------------------------------------------------------------
# deterministic kernels
# --------------------------------------------------------------------------------------------
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


def _empty_batch(images: torch.Tensor) -> torch.Tensor:
    """Allocate a contiguous batch of `images`' shape, dtype and device (filled by the caller)."""
    return torch.empty(images.shape, dtype=images.dtype, device=images.device)


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


def _sampling_grid(
    theta: torch.Tensor,
    displacement: torch.Tensor | None,
    height: int,
    width: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """Grid (N, H, W, 2) for ``grid_sample(align_corners=False)``: ``A (p + d(p)) + t``.

    Written as two broadcast multiply-adds straight into the (N, H, W, 2) layout, rather than a
    batched matmul with a 2-wide inner dimension (``affine_grid``) or a ``stack`` of the x and y
    planes, both several times slower on the CPU.
    """
    xs = (2.0 * torch.arange(width, device=device, dtype=dtype) + 1.0) / width - 1.0
    ys = (2.0 * torch.arange(height, device=device, dtype=dtype) + 1.0) / height - 1.0
    px = xs.reshape(1, 1, width, 1)
    py = ys.reshape(1, height, 1, 1)
    if displacement is not None:
        d = displacement.to(device=device, dtype=dtype)
        px = (px[..., 0] + d[:, 0] * (2.0 / width))[..., None]
        py = (py[..., 0] + d[:, 1] * (2.0 / height))[..., None]
    th = theta.to(device=device, dtype=dtype)[:, None, None]  # (N, 1, 1, 2, 3)
    # grid[..., i] = t_i + A_i0 px + A_i1 py
    return torch.addcmul(torch.addcmul(th[..., 2], th[..., 0], px), th[..., 1], py)


def _cubic_upsampling_matrix(size_in: int, size_out: int, device: torch.device) -> torch.Tensor:
    """(size_out, size_in) matrix of 1-D bicubic upsampling as ``F.interpolate`` performs it."""
    eye = torch.eye(size_in, device=device, dtype=torch.float32).reshape(size_in, 1, size_in, 1)
    cols = F.interpolate(eye, size=(size_out, 1), mode="bicubic", align_corners=False)
    return cols[:, 0, :, 0].T


def warp(
    images: torch.Tensor,
    theta: torch.Tensor,
    displacement: torch.Tensor | None = None,
    *,
    mode: Literal["bilinear", "nearest", "bicubic"] = "bilinear",
    padding_mode: Literal["zeros", "border", "reflection"] = "zeros",
) -> torch.Tensor:
    r"""Resample images through an affine map composed with a displacement field (one grid_sample).

    Parameters
    ----------
    images : torch.Tensor of shape (N, C, H, W)
        Floating-point images (cast label maps to float and use ``mode="nearest"``).
    theta : torch.Tensor of shape (N, 2, 3)
        Affine maps in the normalised coordinates of ``torch.nn.functional.affine_grid``
        (``align_corners=False``), from output to input positions.
    displacement : torch.Tensor of shape (N, 2, H, W), optional
        Displacement in pixels (channel 0 along x / width, channel 1 along y / height), added to
        the output position before the affine map.
    mode : {"bilinear", "nearest", "bicubic"}, default "bilinear"
        Interpolation.
    padding_mode : {"zeros", "border", "reflection"}, default "zeros"
        Values outside the image (as ``torch.nn.functional.grid_sample``).

    Returns
    -------
    torch.Tensor of shape (N, C, H, W)
        ``out(p) = images(A (p + d(p)) + t)``; same dtype and device as `images`.

    Raises
    ------
    ValueError
        If `theta` or `displacement` has the wrong shape, or `mode` is unknown.

    Examples
    --------
    >>> import torch
    >>> x = torch.arange(4.0).reshape(1, 1, 1, 4)
    >>> flip = torch.tensor([[[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    >>> warp(x, flip, mode="nearest")
    tensor([[[[3., 2., 1., 0.]]]])
    """
    _check_images(images)
    n, _, h, w = images.shape
    if tuple(theta.shape) != (n, 2, 3):
        msg = f"`theta` must have shape (N, 2, 3) = ({n}, 2, 3); got {tuple(theta.shape)}."
        raise ValueError(msg)
    if displacement is not None and tuple(displacement.shape) != (n, 2, h, w):
        msg = (
            f"`displacement` must have shape (N, 2, H, W) = ({n}, 2, {h}, {w}); "
            f"got {tuple(displacement.shape)}."
        )
        raise ValueError(msg)
    if mode not in ("bilinear", "nearest", "bicubic"):
        msg = f"`mode` must be one of 'bilinear', 'nearest', 'bicubic'; got {mode!r}."
        raise ValueError(msg)
    if padding_mode not in ("zeros", "border", "reflection"):
        msg = (
            f"`padding_mode` must be one of 'zeros', 'border', 'reflection'; got {padding_mode!r}."
        )
        raise ValueError(msg)
    return torch.cat(
        [
            F.grid_sample(
                images[sl],
                _sampling_grid(
                    theta[sl],
                    None if displacement is None else displacement[sl],
                    h,
                    w,
                    images.dtype,
                    images.device,
                ),
                mode=mode,
                padding_mode=padding_mode,
                align_corners=False,
            )
            for sl in _chunks(images)
        ]
    )


def crop_resize(images: torch.Tensor, corners: torch.Tensor, crop_fraction: float) -> torch.Tensor:
    """Crop a square-fraction box at each corner and resize it back to full size (bilinear).

    Parameters
    ----------
    images : torch.Tensor of shape (N, C, H, W)
        Floating-point images.
    corners : torch.Tensor of shape (N, 2)
        Top-left corner of each crop as fractions ``(x / W, y / H)`` of the image size.
    crop_fraction : float
        Crop size as a fraction of the image size (the original's 100 px of 192 is 100/192).

    Returns
    -------
    torch.Tensor of shape (N, C, H, W)
        The box ``[x, x + f W] x [y, y + f H]`` (pixel edges) resampled to H x W with pixel-centre
        alignment (as an image ``resize`` does); edge pixels are repeated where a sample falls
        past the image border.

    Raises
    ------
    ValueError
        If `corners` has the wrong shape or `crop_fraction` is not in (0, 1].

    Examples
    --------
    >>> import torch
    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> crop_resize(x, torch.tensor([[0.5, 0.5]]), 0.5)[0, 0, 0]
    tensor([ 8.7500,  9.2500,  9.7500, 10.0000])
    """
    _check_images(images)
    n = images.shape[0]
    if tuple(corners.shape) != (n, 2):
        msg = f"`corners` must have shape (N, 2) = ({n}, 2); got {tuple(corners.shape)}."
        raise ValueError(msg)
    f = _check_nonneg(crop_fraction, "crop_fraction", 1.0)
    if f == 0.0:
        msg = f"`crop_fraction` must be in (0, 1]; got {crop_fraction!r}."
        raise ValueError(msg)
    c = corners.to(device=images.device, dtype=_coord_dtype(images))
    taps = _crop_resize_taps(c, images.shape[2], images.shape[3], f, images.dtype)
    out = _empty_batch(images)
    for sl in _chunks(images):
        _crop_resize_into(out[sl], images[sl], taps, sl)
    return out


def _coord_dtype(images: torch.Tensor) -> torch.dtype:
    return torch.float64 if images.dtype == torch.float64 else torch.float32


def _linear_taps(
    corner: torch.Tensor, size: int, fraction: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """1-D crop-and-resize along one axis: source taps (lo, hi) and the weight of hi, (n, size).

    Output pixel j samples ``u = corner * size + (j + 1/2) fraction - 1/2`` (pixel-centre
    alignment), clamped to [0, size - 1] (edge pixels repeated, as ``padding_mode="border"``).
    """
    j = torch.arange(size, dtype=corner.dtype, device=corner.device)
    u = (corner[:, None] * size + (j + 0.5) * fraction - 0.5).clamp(0.0, size - 1)
    lo_f = u.floor()
    lo = lo_f.to(torch.int64)
    return lo, (lo + 1).clamp(max=size - 1), u - lo_f


class _CropTaps(NamedTuple):
    """Per-image taps of a crop-and-resize (:func:`_crop_resize_taps`), all (n, ...) tensors."""

    window: int  # L source rows per image hold every row tap
    row_start: torch.Tensor  # (n,) first source row of each image's window
    y_lo: torch.Tensor  # (n, H) row taps, relative to the window
    y_hi: torch.Tensor
    wy: torch.Tensor  # (n, H) weight of y_hi, images' dtype
    x_lo: torch.Tensor  # (n, W) column taps
    x_hi: torch.Tensor
    wx: torch.Tensor  # (n, W) weight of x_hi, images' dtype


def _crop_resize_taps(
    corners: torch.Tensor, h: int, w: int, f: float, dtype: torch.dtype
) -> _CropTaps:
    """Taps of :func:`crop_resize` for the whole batch (computed once, sliced per chunk).

    The row taps of one image span ``(H - 1) f`` pixels plus the two-tap footprint, so they all
    lie in a window of ``L = min(H, floor((H - 1) f) + 3)`` source rows starting at
    ``min(y_lo[0], H - L)``: only those rows are resampled along x.
    """
    y_lo, y_hi, wy = _linear_taps(corners[:, 1], h, f)
    x_lo, x_hi, wx = _linear_taps(corners[:, 0], w, f)
    window = min(h, math.floor((h - 1) * f) + 3)
    start = y_lo[:, 0].clamp(max=h - window)
    return _CropTaps(
        window,
        start,
        y_lo - start[:, None],
        y_hi - start[:, None],
        wy.to(dtype),
        x_lo,
        x_hi,
        wx.to(dtype),
    )


def _crop_resize_into(
    out: torch.Tensor, images: torch.Tensor, taps: _CropTaps, sl: slice
) -> torch.Tensor:
    """Separable bilinear crop-and-resize of one chunk (rows `sl` of `taps`) into `out`.

    Gather the window of source rows (row copies), resample it along x (two element gathers and
    a blend on ``L`` rows instead of ``H``), then along y (two row gathers and a blend). Two taps
    per output pixel and axis: O(H W) work per image rather than the O(H W (H + W)) of
    interpolation matrices, and no (N, H, W, 2) sampling grid.
    """
    n, c, h, w = images.shape
    lw = taps.window
    dev = images.device
    rows = images.reshape(n * c * h, w)
    base = (torch.arange(n * c, device=dev) * h).reshape(n, c, 1)
    local = torch.arange(lw, device=dev)
    src = (base + (taps.row_start[sl, None, None] + local)).reshape(-1)
    win = rows.index_select(0, src).reshape(n, c, lw, w)
    shape = (n, c, lw, w)
    left = torch.gather(win, 3, taps.x_lo[sl].reshape(n, 1, 1, w).expand(shape))
    right = torch.gather(win, 3, taps.x_hi[sl].reshape(n, 1, 1, w).expand(shape))
    cols = torch.lerp(left, right, taps.wx[sl].reshape(n, 1, 1, w)).reshape(n * c * lw, w)
    base_w = (torch.arange(n * c, device=dev) * lw).reshape(n, c, 1)
    top = cols.index_select(0, (base_w + taps.y_lo[sl, None]).reshape(-1)).reshape(n, c, h, w)
    bottom = cols.index_select(0, (base_w + taps.y_hi[sl, None]).reshape(-1)).reshape(n, c, h, w)
    return torch.lerp(top, bottom, taps.wy[sl].reshape(n, 1, h, 1), out=out)


# --------------------------------------------------------------------------------------------
# stage 1 and 2 views
# --------------------------------------------------------------------------------------------
def intensity_views(
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    brightness: float = 0.3,
    contrast: float = 0.3,
    clip: tuple[float, float] | None = (0.0, 1.5),
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
    shift, factor = _intensity_params(images, generator, brightness, contrast)
    return adjust_intensity(images, shift, factor, clip=clip)


def _intensity_params(
    images: torch.Tensor, generator: torch.Generator, brightness: float, contrast: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the strengths and draw shift, then factor, each (N,) (:func:`intensity_views`)."""
    b = _check_nonneg(brightness, "brightness")
    k = _check_nonneg(contrast, "contrast")
    if k >= 1.0:
        msg = f"`contrast` must be in [0, 1) so the factor stays positive; got {contrast!r}."
        raise ValueError(msg)
    n = images.shape[0]
    shift = _uniform(n, -b, b, generator, images)
    factor = _uniform(n, 1.0 - k, 1.0 + k, generator, images)
    return shift, factor


def global_views(
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    crop_fraction: float = 100 / 192,
    corner_range: tuple[float, float] = (10 / 192, 69 / 192),
    brightness: float = 0.3,
    contrast: float = 0.3,
    clip: tuple[float, float] | None = (0.0, 1.5),
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

    Returns
    -------
    torch.Tensor of shape (N, C, H, W)
        The view; same dtype and device as `images`.

    Raises
    ------
    ValueError
        If the crop leaves the image (``corner_range[1] + crop_fraction > 1``) or a parameter is
        out of range.

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
    if f == 1.0 and corner_range == (0.0, 0.0):
        return intensity_views(
            images, generator, brightness=brightness, contrast=contrast, clip=clip
        )
    corners = _uniform((n, 2), corner_range[0], corner_range[1], generator, images)
    shift, factor = _intensity_params(images, generator, brightness, contrast)
    _check_clip(clip)
    c = corners.to(device=images.device, dtype=_coord_dtype(images))
    taps = _crop_resize_taps(c, images.shape[2], images.shape[3], f, images.dtype)
    d = shift.reshape(n, 1, 1, 1)
    k = factor.reshape(n, 1, 1, 1)
    # crop_resize then adjust_intensity, fused chunk by chunk (same draws, same values)
    out = _empty_batch(images)
    for sl in _chunks(images):
        view = _crop_resize_into(out[sl], images[sl], taps, sl)
        _adjust_intensity_inplace(view, d[sl], k[sl], clip)
    return out


# --------------------------------------------------------------------------------------------
# stage 3 / baseline geometric augmentation
# --------------------------------------------------------------------------------------------
def geometric_params(
    num_images: int,
    height: int,
    width: int,
    generator: torch.Generator,
    *,
    rotation_degrees: float = 15.0,
    scale_range: tuple[float, float] = (0.95, 1.05),
    flip: bool = True,
    rotation_step_degrees: float = 45.0,
    elastic_sigma: float = 5.0,
    elastic_grid: int = 3,
    elastic_tail: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Draw the fine-tuning transforms: one affine option per image, then a coarse elastic field.

    Parameters
    ----------
    num_images : int
        N.
    height, width : int
        Image size H, W.
    generator : torch.Generator
        Source of randomness.
    rotation_degrees : float, default 15.0
        Option 0: rotation by U(-r, r) degrees.
    scale_range : pair of float, default (0.95, 1.05)
        Option 1: isotropic zoom by U(lo, hi) about the centre (the original rounds it to 0.01).
    flip : bool, default True
        Option 2: left-right flip with probability 1/2.
    rotation_step_degrees : float, default 45.0
        Option 3: rotation by k x step, k uniform in {0, ..., round(360 / step) - 1}; 0 disables.
    elastic_sigma : float, default 5.0
        Standard deviation in pixels of the control-point displacements; 0 disables.
    elastic_grid : int, default 3
        Control grid size (3 x 3 as the original), bicubically upsampled to H x W.
    elastic_tail : bool, default False
        If True, only a random tail of the batch is deformed, as the original did: ``n0`` uniform
        in {1, ..., max(1, N - 2)} and rows ``n0 .. N-1`` get the field. Default: every row.
    device : torch.device or str, optional
        Device of the returned tensors (default: the generator's).
    dtype : torch.dtype, default torch.float32
        Dtype of the returned tensors.

    Returns
    -------
    theta : torch.Tensor of shape (N, 2, 3)
        Affine maps (output to input, normalised coordinates) for :func:`warp`.
    displacement : torch.Tensor of shape (N, 2, H, W) or None
        Elastic field in pixels (x, y), or None when `elastic_sigma` is 0.

    Raises
    ------
    ValueError
        If a parameter is out of range.

    Notes
    -----
    Each image takes option 0-4 (rotation, zoom, flip, k-step rotation, nothing) with
    probability 1/5, as the original. Rotations and zooms act in pixel space about the image
    centre (correct for non-square images). The original skipped the affine step on near-empty
    slices; a transform of an empty slice is empty, so that test is not needed here.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> theta, disp = geometric_params(3, 16, 16, g)
    >>> tuple(theta.shape), tuple(disp.shape)
    ((3, 2, 3), (3, 2, 16, 16))
    """
    _check_generator(generator)
    r = _check_nonneg(rotation_degrees, "rotation_degrees")
    _check_range(scale_range, "scale_range", 1e-6, math.inf)
    step = _check_nonneg(rotation_step_degrees, "rotation_step_degrees", 360.0)
    sigma = _check_nonneg(elastic_sigma, "elastic_sigma")
    if isinstance(elastic_grid, bool) or not isinstance(elastic_grid, int) or elastic_grid < 2:
        msg = f"`elastic_grid` must be an integer >= 2; got {elastic_grid!r}."
        raise ValueError(msg)
    for name, v in (("num_images", num_images), ("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            msg = f"`{name}` must be a positive integer; got {v!r}."
            raise ValueError(msg)
    n = num_images
    dev = torch.device(device) if device is not None else generator.device
    like = torch.empty(0, dtype=torch.float64, device=generator.device)
    option = torch.randint(0, 5, (n,), generator=generator, device=generator.device)
    angle_small = _uniform(n, -r, r, generator, like)
    zoom = _uniform(n, scale_range[0], scale_range[1], generator, like)
    flip_coin = torch.rand(n, generator=generator, device=generator.device) < 0.5
    num_steps = max(1, round(360.0 / step)) if step > 0 else 1
    k = torch.randint(0, num_steps, (n,), generator=generator, device=generator.device)
    zero = torch.zeros_like(angle_small)
    one = torch.ones_like(angle_small)
    angle = torch.where(option == 0, angle_small, zero)
    angle = torch.where(option == 3, k.to(like) * step, angle)
    inv_zoom = torch.where(option == 1, 1.0 / zoom, one)
    sign_x = torch.where((option == 2) & flip_coin & flip, -one, one)
    rad = torch.deg2rad(angle)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # pixel-space map output -> input about the centre: R(angle) . (1/zoom) . flip
    a00, a01 = cos * inv_zoom * sign_x, -sin * inv_zoom
    a10, a11 = sin * inv_zoom * sign_x, cos * inv_zoom
    # normalised: diag(2/W, 2/H) A diag(W/2, H/2)
    theta = torch.zeros(n, 2, 3, dtype=torch.float64, device=generator.device)
    theta[:, 0, 0] = a00
    theta[:, 0, 1] = a01 * (height / width)
    theta[:, 1, 0] = a10 * (width / height)
    theta[:, 1, 1] = a11
    displacement = None
    if sigma > 0:
        coarse = torch.randn(
            n, 2, elastic_grid, elastic_grid, generator=generator, device=generator.device
        )
        if elastic_tail:
            # a 1-element tensor, compared on the device: no host read (a sync on CUDA)
            n0 = torch.randint(1, max(2, n - 1), (1,), generator=generator, device=generator.device)
            keep = (torch.arange(n, device=generator.device) >= n0).to(coarse)
            coarse = coarse * keep.reshape(n, 1, 1, 1)
        coarse = (sigma * coarse).to(device=dev, dtype=torch.float32)
        # bicubic upsampling is separable: two small matrix products, same values as
        # F.interpolate(coarse, (H, W), mode="bicubic") at a fraction of its CPU cost
        m_h = _cubic_upsampling_matrix(elastic_grid, height, dev)
        m_w = _cubic_upsampling_matrix(elastic_grid, width, dev)
        displacement = (m_h @ coarse @ m_w.T).to(dtype)
    return theta.to(device=dev, dtype=dtype), displacement


def _is_identity_geometry(
    rotation_degrees: float,
    scale_range: tuple[float, float],
    flip: bool,
    rotation_step_degrees: float,
    elastic_sigma: float,
) -> bool:
    return (
        rotation_degrees == 0
        and tuple(scale_range) == (1.0, 1.0)
        and not flip
        and rotation_step_degrees in (0, 360)
        and elastic_sigma == 0
    )


def geometric_augment(
    images: torch.Tensor,
    labels: torch.Tensor | None,
    generator: torch.Generator,
    *,
    rotation_degrees: float = 15.0,
    scale_range: tuple[float, float] = (0.95, 1.05),
    flip: bool = True,
    rotation_step_degrees: float = 45.0,
    elastic_sigma: float = 5.0,
    elastic_grid: int = 3,
    elastic_tail: bool = False,
    label_mode: Literal["nearest", "onehot"] = "nearest",
    num_classes: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fine-tuning / baseline augmentation, applied consistently to images and label maps.

    Parameters
    ----------
    images : torch.Tensor of shape (N, C, H, W)
        Floating-point images.
    labels : torch.Tensor of shape (N, H, W), integer, or None
        Label maps, transformed with the same sampling grid as `images`.
    generator : torch.Generator
        Source of randomness.
    rotation_degrees, scale_range, flip, rotation_step_degrees : see :func:`geometric_params`
        The affine options.
    elastic_sigma, elastic_grid, elastic_tail : see :func:`geometric_params`
        The elastic field.
    label_mode : {"nearest", "onehot"}, default "nearest"
        ``"nearest"``: labels resampled by nearest neighbour, returned as (N, H, W) with the input
        dtype (the label set is preserved; 0 enters from outside the image). ``"onehot"``: labels
        one-hot encoded, resampled bilinearly and returned soft, float (N, K, H, W), as the
        original did (outside the image counts as background; 3-4x dearer).
    num_classes : int, optional
        K, required for ``label_mode="onehot"``.

    Returns
    -------
    images : torch.Tensor of shape (N, C, H, W)
        Transformed images (bilinear, zero outside).
    labels : torch.Tensor or None
        Transformed labels (see `label_mode`), or None.

    Raises
    ------
    ValueError
        For bad shapes or parameters, or ``label_mode="onehot"`` without `num_classes`.

    Notes
    -----
    One ``grid_sample`` per tensor: the affine option and the elastic field are composed into one
    sampling grid (:func:`geometric_params`, :func:`warp`). With every strength zero
    (``rotation_degrees=0, scale_range=(1, 1), flip=False, rotation_step_degrees=0,
    elastic_sigma=0``) the inputs are returned unchanged (copies). The fine-tuning intensity
    augmentation of the original code was never applied, so none is applied here.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.rand(2, 1, 16, 16, generator=g)
    >>> y = torch.randint(0, 4, (2, 16, 16), generator=g)
    >>> xa, ya = geometric_augment(x, y, g)
    >>> tuple(xa.shape), tuple(ya.shape), ya.dtype
    ((2, 1, 16, 16), (2, 16, 16), torch.int64)
    """
    _check_images(images)
    _check_generator(generator)
    n, _, h, w = images.shape
    if labels is not None:
        if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (n, h, w):
            got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels)
            msg = f"`labels` must be a tensor of shape (N, H, W) = ({n}, {h}, {w}); got {got}."
            raise ValueError(msg)
        if labels.is_floating_point() or labels.is_complex():
            msg = f"`labels` must have an integer dtype; got dtype {labels.dtype}."
            raise TypeError(msg)
    if label_mode not in ("nearest", "onehot"):
        msg = f"`label_mode` must be 'nearest' or 'onehot'; got {label_mode!r}."
        raise ValueError(msg)
    if label_mode == "onehot" and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        msg = (
            "`num_classes` must be a positive integer with label_mode='onehot'; "
            f"got {num_classes!r}."
        )
        raise ValueError(msg)

    classes = torch.arange(int(num_classes or 0), device=images.device).reshape(1, -1, 1, 1)

    def onehot(lab: torch.Tensor) -> torch.Tensor:
        # channel-first in one broadcast comparison (no (N, H, W, K) scatter + permute copy)
        return (lab[:, None] == classes).to(images.dtype)

    if _is_identity_geometry(
        rotation_degrees, scale_range, flip, rotation_step_degrees, elastic_sigma
    ):
        out_labels = None
        if labels is not None:
            out_labels = onehot(labels) if label_mode == "onehot" else labels.clone()
        return images.clone(), out_labels
    theta, displacement = geometric_params(
        n,
        h,
        w,
        generator,
        rotation_degrees=rotation_degrees,
        scale_range=scale_range,
        flip=flip,
        rotation_step_degrees=rotation_step_degrees,
        elastic_sigma=elastic_sigma,
        elastic_grid=elastic_grid,
        elastic_tail=elastic_tail,
        device=images.device,
        dtype=images.dtype,
    )
    parts = [
        _geometric_impl(
            images[sl],
            None if labels is None else labels[sl],
            _sampling_grid(
                theta[sl],
                None if displacement is None else displacement[sl],
                h,
                w,
                images.dtype,
                images.device,
            ),
            label_mode,
            onehot,
        )
        for sl in _chunks(images, images[0].numel() * images.element_size() * 4)
    ]
    out = torch.cat([p[0] for p in parts])
    if labels is None:
        return out, None
    return out, torch.cat([p[1] for p in parts if p[1] is not None])


def _geometric_impl(
    images: torch.Tensor,
    labels: torch.Tensor | None,
    grid: torch.Tensor,
    label_mode: str,
    onehot: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`geometric_augment` of one chunk through its sampling grid."""
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if labels is None:
        return out, None
    if label_mode == "nearest":
        lab_f = labels.to(torch.float32 if images.dtype != torch.float64 else torch.float64)
        warped = F.grid_sample(
            lab_f[:, None],
            grid.to(lab_f.dtype),
            mode="nearest",
            padding_mode="zeros",
            align_corners=False,
        )
        return out, warped[:, 0].round().to(labels.dtype)
    soft = onehot(labels)
    background = torch.zeros(1, soft.shape[1], 1, 1, dtype=soft.dtype, device=soft.device)
    background[:, 0] = 1.0
    # warp (onehot - e0) with zero padding, add e0 back: outside the image = background
    warped = F.grid_sample(
        soft - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return out, warped + background


def mixup(
    images: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator,
    *,
    alpha: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Mixup: blend each image and its soft label map with a random partner of the batch.

    Parameters
    ----------
    images : torch.Tensor of shape (N, C, H, W)
        Floating-point images.
    labels : torch.Tensor of shape (N, K, H, W)
        One-hot (or soft) label maps, floating point.
    generator : torch.Generator
        Source of randomness.
    alpha : float, default 0.2
        :math:`\lambda_i \sim \mathrm{Beta}(\alpha, \alpha)` per image; 0 gives the identity.

    Returns
    -------
    images : torch.Tensor of shape (N, C, H, W)
        :math:`\lambda_i x_i + (1 - \lambda_i) x_{\pi(i)}` with :math:`\pi` a random permutation.
    labels : torch.Tensor of shape (N, K, H, W)
        The same blend of the label maps.

    Raises
    ------
    ValueError
        If shapes disagree or `alpha` < 0.

    Notes
    -----
    The Beta draws use NumPy seeded from `generator` (torch has no generator-aware Beta
    sampler), so the result is still a function of the generator state.

    References
    ----------
    Zhang et al., "mixup: Beyond empirical risk minimization", ICLR 2018.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.rand(4, 1, 8, 8, generator=g)
    >>> y = torch.nn.functional.one_hot(torch.randint(0, 3, (4, 8, 8), generator=g), 3)
    >>> xm, ym = mixup(x, y.permute(0, 3, 1, 2).float(), g)
    >>> bool(torch.allclose(ym.sum(dim=1), torch.ones(4, 8, 8)))
    True
    """
    _check_images(images)
    _check_images(labels, "labels")
    _check_generator(generator)
    a = _check_nonneg(alpha, "alpha")
    n = images.shape[0]
    if labels.shape[0] != n or labels.shape[-2:] != images.shape[-2:]:
        msg = (
            f"`labels` must have shape (N, K, H, W) matching `images` {tuple(images.shape)}; "
            f"got {tuple(labels.shape)}."
        )
        raise ValueError(msg)
    if a == 0.0:
        return images.clone(), labels.clone()
    perm = torch.randperm(n, generator=generator, device=generator.device).to(images.device)
    seed = torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)
    lam_np = np.random.default_rng(int(seed)).beta(a, a, size=n)
    lam = torch.as_tensor(lam_np, device=images.device)
    return _mix(images, perm, lam), _mix(labels, perm, lam)


def _mix(x: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``lam_i x_i + (1 - lam_i) x_perm(i)``, as ``lerp(x_perm(i), x_i, lam_i)``.

    On the CPU one ``lerp`` per image straight into the output batch: each output byte is
    written once from its two sources (the memory-traffic floor), with no gathered copy of the
    partners and no concatenation. Elsewhere one gather and one ``lerp`` over the batch.
    """
    if x.device.type != "cpu":
        return torch.lerp(x.index_select(0, perm), x, lam.to(x.dtype).reshape(-1, 1, 1, 1))
    out = torch.empty_like(x)  # x's memory layout (e.g. channels-last one-hot labels)
    for i, (j, w) in enumerate(zip(perm.tolist(), lam.tolist(), strict=True)):
        torch.lerp(x[j], x[i], w, out=out[i])
    return out


# --------------------------------------------------------------------------------------------
# RGB (Cityscapes)
# --------------------------------------------------------------------------------------------
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


def random_crop(
    images: torch.Tensor,
    labels: torch.Tensor | None,
    generator: torch.Generator,
    *,
    size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Crop a random (h, w) window from each image (and the same window from its label map).

    Parameters
    ----------
    images : torch.Tensor of shape (N, C, H, W)
        Images.
    labels : torch.Tensor of shape (N, H, W), or None
        Label maps.
    generator : torch.Generator
        Source of randomness.
    size : pair of int
        Output size (h, w), ``h <= H``, ``w <= W``.

    Returns
    -------
    images : torch.Tensor of shape (N, C, h, w)
        Crops (no interpolation; offsets uniform integers).
    labels : torch.Tensor of shape (N, h, w) or None
        The same windows of the label maps.

    Raises
    ------
    ValueError
        If `size` does not fit in the images or `labels` has the wrong shape.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> crop, _ = random_crop(x, None, g, size=(2, 2))
    >>> tuple(crop.shape)
    (1, 1, 2, 2)
    """
    _check_images(images)
    _check_generator(generator)
    n, _, h_in, w_in = images.shape
    if len(size) != 2 or not (1 <= size[0] <= h_in and 1 <= size[1] <= w_in):
        msg = f"`size` must be (h, w) with 1 <= h <= {h_in} and 1 <= w <= {w_in}; got {size!r}."
        raise ValueError(msg)
    if labels is not None and tuple(labels.shape) != (n, h_in, w_in):
        msg = (
            f"`labels` must have shape (N, H, W) = ({n}, {h_in}, {w_in}); "
            f"got {tuple(labels.shape)}."
        )
        raise ValueError(msg)
    h, w = int(size[0]), int(size[1])
    # offsets as Python ints from the generator's device (no sync for a CPU generator); each
    # window is then a strided view and the crops one stacked copy (row memcpys, no gather)
    oy = torch.randint(0, h_in - h + 1, (n,), generator=generator, device=generator.device)
    ox = torch.randint(0, w_in - w + 1, (n,), generator=generator, device=generator.device)
    offsets = list(zip(oy.tolist(), ox.tolist(), strict=True))
    if n == 0:
        return images[:, :, :h, :w].clone(), None if labels is None else labels[:, :h, :w].clone()
    out = torch.stack([images[i, :, y : y + h, x : x + w] for i, (y, x) in enumerate(offsets)])
    if labels is None:
        return out, None
    return out, torch.stack([labels[i, y : y + h, x : x + w] for i, (y, x) in enumerate(offsets)])


# --------------------------------------------------------------------------------------------
# the batch the losses take
# --------------------------------------------------------------------------------------------
def two_views(
    batch: Mapping[str, torch.Tensor],
    generator: torch.Generator,
    *,
    kind: Literal["global", "local"] = "global",
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
    kind : {"global", "local"}, default "global"
        ``"global"``: :func:`global_views` (crop-and-resize + intensity) for stage 1;
        ``"local"``: :func:`intensity_views` (pixel-aligned) for stage 2.
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
    else:
        msg = f"`kind` must be 'global' or 'local'; got {kind!r}."
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
