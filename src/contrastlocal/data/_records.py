"""The record every dataset reader returns and every pre-processing step consumes (private)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Case"]


@dataclass
class Case:
    """One 3D volume (or one 2D image for Cityscapes) as read from disk, before pre-processing.

    Attributes
    ----------
    case_id : str
        Dataset-specific identifier, e.g. ``"001"`` (ACDC patient001), ``"00"`` (prostate_00),
        ``"1001"`` (MM-WHS), ``"aachen_000000_000019"`` (Cityscapes).
    image : ndarray of shape (H, W, Z) or (H, W, 3) for RGB
        Image in the canonical orientation chosen by the reader, slices along the last axis
        (for Cityscapes: an RGB image, ``Z`` = 3 colour channels, see `is_rgb`).
    label : ndarray of shape (H, W, Z) or (H, W), dtype uint8, or None
        Label map in the dataset's class convention (already remapped, e.g. MM-WHS codes to 0-7).
    spacing : tuple of 3 floats
        Voxel spacing in mm along the image axes (``(1, 1, 1)`` for Cityscapes).
    affine : ndarray of shape (4, 4)
        Voxel-to-world affine of `image` as stored after reorientation.
    meta : dict
        Anything else worth keeping (source paths, frame number, original orientation, ...).
    is_rgb : bool
        True for 2D RGB images (Cityscapes).

    Examples
    --------
    >>> import numpy as np
    >>> from contrastlocal.data import Case
    >>> case = Case("001", np.zeros((4, 4, 2), np.float32), None, (1.5, 1.5, 8.0))
    >>> case.image.shape, case.label is None, case.affine.shape
    ((4, 4, 2), True, (4, 4))
    """

    case_id: str
    image: npt.NDArray[Any]
    label: npt.NDArray[np.uint8] | None
    spacing: tuple[float, float, float]
    affine: npt.NDArray[np.float64] = field(default_factory=lambda: np.eye(4))
    meta: dict[str, Any] = field(default_factory=dict)
    is_rgb: bool = False
