"""Cropping: :func:`crop_resize` and :func:`random_crop`.

:func:`crop_resize` is the global views' crop-and-resize (separable linear taps);
:func:`random_crop` crops RGB images and their labels (Cityscapes).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ._common import (
    _check_generator,
    _check_images,
    _check_nonneg,
    _chunks,
    _coord_dtype,
    _empty_batch,
)

__all__ = ["crop_resize", "random_crop"]


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


def _linear_taps(
    corner: torch.Tensor, size: int, fraction: float | torch.Tensor
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
    corners: torch.Tensor,
    h: int,
    w: int,
    f: float,
    dtype: torch.dtype,
    f_xy: torch.Tensor | None = None,
) -> _CropTaps:
    """Taps of :func:`crop_resize` for the whole batch (computed once, sliced per chunk).

    The row taps of one image span ``(H - 1) f`` pixels plus the two-tap footprint, so they all
    lie in a window of ``L = min(H, floor((H - 1) f) + 3)`` source rows starting at
    ``min(y_lo[0], H - L)``: only those rows are resampled along x.
    """
    if f_xy is None:
        y_lo, y_hi, wy = _linear_taps(corners[:, 1], h, f)
        x_lo, x_hi, wx = _linear_taps(corners[:, 0], w, f)
    else:  # per-image box sizes (x, y) as fractions; f is their largest y fraction
        y_lo, y_hi, wy = _linear_taps(corners[:, 1], h, f_xy[:, 1:2])
        x_lo, x_hi, wx = _linear_taps(corners[:, 0], w, f_xy[:, 0:1])
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
    if generator.device.type != "cpu" and n > 0:  # reading the offsets would wait for the GPU
        return _gather_crops(images, labels, oy, ox, (h, w))
    offsets = list(zip(oy.tolist(), ox.tolist(), strict=True))
    if n == 0:
        return images[:, :, :h, :w].clone(), None if labels is None else labels[:, :h, :w].clone()
    out = torch.stack([images[i, :, y : y + h, x : x + w] for i, (y, x) in enumerate(offsets)])
    if labels is None:
        return out, None
    return out, torch.stack([labels[i, y : y + h, x : x + w] for i, (y, x) in enumerate(offsets)])


def _gather_crops(
    images: torch.Tensor, labels: torch.Tensor | None, oy: torch.Tensor, ox: torch.Tensor,
    size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Cut the crops of :func:`random_crop` at offsets held on the device, one gather each."""
    h, w = size
    dev = images.device
    rows = (oy.to(dev)[:, None] + torch.arange(h, device=dev))[:, :, None]  # (N, h, 1)
    cols = (ox.to(dev)[:, None] + torch.arange(w, device=dev))[:, None, :]  # (N, 1, w)
    n = torch.arange(images.shape[0], device=dev)[:, None, None]
    # advanced indices around a slice: the (N, h, w) index dimensions come first, channels last
    out = images[n, :, rows, cols].permute(0, 3, 1, 2).contiguous()
    return out, None if labels is None else labels[n, rows, cols]
