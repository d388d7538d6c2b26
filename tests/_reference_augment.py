"""Per-image NumPy/SciPy oracles of the augmentation kernels (from DATA.md §4, REFERENCE §4).

Coordinates: pixel (x, y) = (column, row) indices; the image centre is ((W-1)/2, (H-1)/2); a
normalised affine ``theta`` (``affine_grid``, align_corners=False) is the pixel-space map
``in = c + D (A D^-1 (p - c) + t)`` with ``D = diag(W/2, H/2)``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def warp_reference(
    image: np.ndarray,
    theta: np.ndarray,
    displacement: np.ndarray | None = None,
    order: int = 1,
    mode: str = "grid-constant",
) -> np.ndarray:
    """image (C, H, W), theta (2, 3), displacement (2, H, W) in pixels -> (C, H, W)."""
    c_, h, w = image.shape
    out = np.zeros_like(image, dtype=np.float64)
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    scale = np.array([w / 2, h / 2])
    a = theta[:, :2]
    t = theta[:, 2]
    coords = np.zeros((2, h, w))
    for y in range(h):
        for x in range(w):
            p = np.array([x, y], dtype=np.float64)
            if displacement is not None:
                p = p + displacement[:, y, x]
            q = (p - centre) / scale
            src = centre + scale * (a @ q + t)
            coords[0, y, x] = src[1]  # row
            coords[1, y, x] = src[0]  # column
    for ch in range(c_):
        out[ch] = ndimage.map_coordinates(
            image[ch].astype(np.float64), coords, order=order, mode=mode, cval=0.0
        )
    return out


def crop_resize_reference(image: np.ndarray, corner: tuple[float, float], fraction: float):
    """Crop box [x0, x0 + f W] x [y0, y0 + f H] (pixel edges) resized to H x W, edge-clamped."""
    c_, h, w = image.shape
    x0, y0 = corner[0] * w, corner[1] * h
    cols = x0 + (np.arange(w) + 0.5) * fraction - 0.5
    rows = y0 + (np.arange(h) + 0.5) * fraction - 0.5
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    return np.stack(
        [
            ndimage.map_coordinates(image[ch].astype(np.float64), [rr, cc], order=1, mode="nearest")
            for ch in range(c_)
        ]
    )


def intensity_reference(image: np.ndarray, shift: float, factor: float, clip=(0.0, 1.5)):
    """x' = clip((x + d - mean(x + d)) * c + mean(x + d))."""
    shifted = image.astype(np.float64) + shift
    mu = shifted.mean()
    out = (shifted - mu) * factor + mu
    return out if clip is None else np.clip(out, *clip)
