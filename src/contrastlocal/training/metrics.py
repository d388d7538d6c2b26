"""Segmentation metrics on label volumes: per-class 3D Dice and HD95 in mm (NumPy + SciPy).

Empty-mask policy (stated once, used everywhere):

* both the prediction and the reference lack class c → Dice 1 and HD95 0 (perfect agreement);
* exactly one of them lacks class c → Dice 0 and HD95 = the diagonal of the volume's physical
  extent, ``sqrt(sum((shape_i * spacing_i)**2))`` mm (a finite worst case, never a silent 0).

HD95 is the maximum of the two directed 95th percentiles (linear interpolation) of the distances
from the surface voxels of one mask to the nearest surface voxel of the other, computed with
:func:`scipy.ndimage.distance_transform_edt` and ``sampling=spacing``. Surface voxels are the
mask's voxels with at least one face-neighbour outside the mask (the array border counts as
outside). This is the MONAI / surface-distance definition up to their surfel weighting; HD95
values are only comparable within one implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["dice_per_class", "hd95_per_class", "surface_distances"]


def _check_labels(pred: Any, target: Any) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    p = np.asarray(pred)
    t = np.asarray(target)
    if p.shape != t.shape:
        msg = f"`pred` and `target` must have the same shape; got {p.shape} and {t.shape}."
        raise ValueError(msg)
    for name, a in (("pred", p), ("target", t)):
        if a.dtype.kind not in "iub":
            msg = f"`{name}` must be an integer label map; got dtype {a.dtype}."
            raise TypeError(msg)
    return p, t


def dice_per_class(pred: Any, target: Any, num_classes: int) -> npt.NDArray[np.float64]:
    """Dice coefficient of every class over all voxels of a label volume.

    Parameters
    ----------
    pred, target : integer array of shape (...)
        Predicted and reference label maps of the same shape (any number of dimensions).
    num_classes : int
        C; classes are ``0 … C-1`` (0 = background).

    Returns
    -------
    ndarray of shape (C,)
        Dice of class c at index c (background included; report means over ``[1:]``).
        Both masks empty → 1, exactly one empty → 0.

    Raises
    ------
    ValueError
        If the shapes differ or `num_classes` < 1.

    Examples
    --------
    >>> import numpy as np
    >>> from contrastlocal.training import dice_per_class
    >>> dice_per_class(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 4).round(3)
    array([1.   , 0.667, 0.667, 1.   ])
    """
    p, t = _check_labels(pred, target)
    if num_classes < 1:
        msg = f"`num_classes` must be >= 1; got {num_classes}."
        raise ValueError(msg)
    classes = np.arange(num_classes)
    pf = p.reshape(-1)
    tf = t.reshape(-1)
    p_count = np.bincount(pf[(pf >= 0) & (pf < num_classes)], minlength=num_classes)
    t_count = np.bincount(tf[(tf >= 0) & (tf < num_classes)], minlength=num_classes)
    both = pf[(pf == tf) & (pf >= 0) & (pf < num_classes)]
    inter = np.bincount(both, minlength=num_classes)
    denom = (p_count + t_count).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(denom > 0, 2.0 * inter / np.where(denom > 0, denom, 1.0), 1.0)
    return dice[classes].astype(np.float64)


def _surface(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    eroded = ndimage.binary_erosion(mask, structure=structure, border_value=0)
    out: npt.NDArray[np.bool_] = mask & ~eroded
    return out


def surface_distances(
    a: Any, b: Any, spacing: Sequence[float]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return the distances (mm) from each surface voxel of `a` to the surface of `b`, and back.

    Parameters
    ----------
    a, b : bool array of shape (...)
        Two non-empty binary masks of the same shape.
    spacing : sequence of float
        Voxel size along each axis of the masks, in mm.

    Returns
    -------
    tuple of two 1-D ndarrays
        Directed distances a → b (one per surface voxel of `a`) and b → a.

    Raises
    ------
    ValueError
        If a mask is empty, the shapes differ or `spacing` has the wrong length.

    Examples
    --------
    >>> import numpy as np
    >>> from contrastlocal.training import surface_distances
    >>> a = np.zeros((1, 5), bool); a[0, 0] = True
    >>> b = np.zeros((1, 5), bool); b[0, 3] = True
    >>> surface_distances(a, b, (1.0, 2.0))[0]
    array([6.])
    """
    from scipy import ndimage

    ma = np.asarray(a, dtype=bool)
    mb = np.asarray(b, dtype=bool)
    if ma.shape != mb.shape:
        msg = f"`a` and `b` must have the same shape; got {ma.shape} and {mb.shape}."
        raise ValueError(msg)
    if len(spacing) != ma.ndim:
        msg = f"`spacing` must have one entry per axis ({ma.ndim}); got {tuple(spacing)}."
        raise ValueError(msg)
    if not ma.any() or not mb.any():
        msg = "`a` and `b` must both be non-empty masks (see the empty-mask policy)."
        raise ValueError(msg)
    sa = _surface(ma)
    sb = _surface(mb)
    sampling = [float(s) for s in spacing]
    dist_to_b = ndimage.distance_transform_edt(~sb, sampling=sampling)
    dist_to_a = ndimage.distance_transform_edt(~sa, sampling=sampling)
    return (
        np.asarray(dist_to_b[sa], dtype=np.float64),
        np.asarray(dist_to_a[sb], dtype=np.float64),
    )


def hd95_per_class(
    pred: Any,
    target: Any,
    num_classes: int,
    spacing: Sequence[float],
    *,
    include_background: bool = False,
) -> npt.NDArray[np.float64]:
    """95th-percentile Hausdorff distance (mm) of every class of a label volume.

    Parameters
    ----------
    pred, target : integer array of shape (...)
        Predicted and reference label maps of the same shape.
    num_classes : int
        C; classes are ``0 … C-1``.
    spacing : sequence of float
        Voxel size along each axis, in mm (the native header spacing).
    include_background : bool, default False
        Also compute class 0 (otherwise its entry is NaN).

    Returns
    -------
    ndarray of shape (C,)
        ``max(P95(d(pred → target)), P95(d(target → pred)))`` for class c at index c.
        Both masks empty → 0; exactly one empty → the volume diagonal in mm.

    Raises
    ------
    ValueError
        If the shapes differ or `spacing` has the wrong length.

    Examples
    --------
    >>> import numpy as np
    >>> from contrastlocal.training import hd95_per_class
    >>> t = np.zeros((1, 6, 6), np.uint8); t[0, 1:3, 1:3] = 1
    >>> p = np.zeros((1, 6, 6), np.uint8); p[0, 1:3, 2:4] = 1
    >>> hd95_per_class(p, t, 2, (5.0, 1.0, 1.0))
    array([nan,  1.])
    """
    p, t = _check_labels(pred, target)
    if len(spacing) != p.ndim:
        msg = f"`spacing` must have one entry per axis ({p.ndim}); got {tuple(spacing)}."
        raise ValueError(msg)
    diagonal = float(
        np.sqrt(sum((n * float(s)) ** 2 for n, s in zip(p.shape, spacing, strict=True)))
    )
    out = np.full(num_classes, np.nan, dtype=np.float64)
    for c in range(0 if include_background else 1, num_classes):
        mp = p == c
        mt = t == c
        has_p, has_t = bool(mp.any()), bool(mt.any())
        if not has_p and not has_t:
            out[c] = 0.0
        elif has_p != has_t:
            out[c] = diagonal
        else:
            d_pt, d_tp = surface_distances(mp, mt, spacing)
            out[c] = max(float(np.percentile(d_pt, 95)), float(np.percentile(d_tp, 95)))
    return out
