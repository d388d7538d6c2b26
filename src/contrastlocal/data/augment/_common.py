"""Shared helpers of the augmentations: argument checks, random draws, CPU chunking.

On the CPU every transform walks the batch in chunks of about ``_CPU_CHUNK_BYTES`` of
pixels (see :mod:`contrastlocal.data.augment`); :func:`_chunks` gives the row ranges.
"""

from __future__ import annotations

import math

import torch

#: CPU work size: about this many bytes of pixels per chunk (see the package docstring).
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


def _empty_batch(images: torch.Tensor) -> torch.Tensor:
    """Allocate a contiguous batch of `images`' shape, dtype and device (filled by the caller)."""
    return torch.empty(images.shape, dtype=images.dtype, device=images.device)


def _coord_dtype(images: torch.Tensor) -> torch.dtype:
    return torch.float64 if images.dtype == torch.float64 else torch.float32
