"""Segmentation metrics on label volumes: per-class 3D Dice and HD95 in mm (NumPy + SciPy).

Empty-mask policy of the per-volume functions (stated once, used everywhere):

* both the prediction and the reference lack class c → Dice 1 and HD95 0 (perfect agreement);
  ``dice_per_class(..., absent=nan)`` leaves such a class unscored instead;
* exactly one of them lacks class c → Dice 0 and HD95 = the diagonal of the volume's physical
  extent, ``sqrt(sum((shape_i * spacing_i)**2))`` mm (a finite worst case, never a silent 0).

Over a test set of many images (Cityscapes), :func:`dice_over_images` never counts a class
absent from both the prediction and the truth of an image as a perfect 1; its two definitions
are named in :data:`DICE_DEFINITIONS` so that results can record which one produced them.

HD95 is the maximum of the two directed 95th percentiles (linear interpolation) of the distances
from the surface voxels of one mask to the nearest surface voxel of the other, computed with
:func:`scipy.ndimage.distance_transform_edt` and ``sampling=spacing``. Surface voxels are the
mask's voxels with at least one face-neighbour outside the mask (the array border counts as
outside). This is the MONAI / surface-distance definition up to their surfel weighting; HD95
values are only comparable within one implementation.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "DICE_DEFINITIONS",
    "ImageSetDice",
    "dice_counts",
    "dice_over_images",
    "dice_per_class",
    "hd95_per_class",
    "surface_distances",
]

#: The test-set Dice definitions of :func:`dice_over_images`, by name (record it with results).
DICE_DEFINITIONS: dict[str, str] = {
    "per_image": (
        "per-image Dice of every foreground class present in the prediction or the truth of the "
        "image (a class absent from both is skipped, not scored 1), averaged over those classes, "
        "then the mean over the images that have at least one such class"
    ),
    "pooled": (
        "per-class Dice pooled over the test set, 2 * sum of intersections / (sum of predicted "
        "sizes + sum of true sizes), then the mean over the foreground classes present anywhere "
        "in the test set (prediction or truth)"
    ),
}
DiceDefinition = Literal["per_image", "pooled"]


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


def dice_counts(
    pred: Any, target: Any, num_classes: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Count the overlap and the sizes of every class of a label map.

    Parameters
    ----------
    pred, target : integer array of shape (...)
        Predicted and reference label maps of the same shape (any number of dimensions).
    num_classes : int
        C; classes are ``0 … C-1`` (labels outside are ignored).

    Returns
    -------
    intersection : int64 ndarray of shape (C,)
        ``|P_c ∩ T_c|`` of every class c (Dice = ``2 I / (|P| + |T|)``).
    pred_size : int64 ndarray of shape (C,)
        ``|P_c|``, the predicted size of every class.
    target_size : int64 ndarray of shape (C,)
        ``|T_c|``, the true size of every class.

    Raises
    ------
    ValueError
        If the shapes differ or `num_classes` < 1.
    TypeError
        If a label map is not of an integer (or bool) dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from contrastlocal.training import dice_counts
    >>> [c.tolist() for c in dice_counts(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)]
    [[1, 1, 1], [1, 2, 1], [1, 1, 2]]
    """
    p, t = _check_labels(pred, target)
    if num_classes < 1:
        msg = f"`num_classes` must be >= 1; got {num_classes}."
        raise ValueError(msg)
    pf = p.reshape(-1)
    tf = t.reshape(-1)
    p_count = np.bincount(pf[(pf >= 0) & (pf < num_classes)], minlength=num_classes)
    t_count = np.bincount(tf[(tf >= 0) & (tf < num_classes)], minlength=num_classes)
    both = pf[(pf == tf) & (pf >= 0) & (pf < num_classes)]
    inter = np.bincount(both, minlength=num_classes)
    return (inter[:num_classes].astype(np.int64), p_count[:num_classes].astype(np.int64),
            t_count[:num_classes].astype(np.int64))


def _dice_from_counts(
    inter: npt.NDArray[Any], p_count: npt.NDArray[Any], t_count: npt.NDArray[Any], absent: float
) -> npt.NDArray[np.float64]:
    denom = (p_count + t_count).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(denom > 0, 2.0 * inter / np.where(denom > 0, denom, 1.0), absent)
    return np.asarray(dice, dtype=np.float64)


def dice_per_class(
    pred: Any, target: Any, num_classes: int, *, absent: float = 1.0
) -> npt.NDArray[np.float64]:
    """Dice coefficient of every class over all voxels of a label volume.

    Parameters
    ----------
    pred, target : integer array of shape (...)
        Predicted and reference label maps of the same shape (any number of dimensions).
    num_classes : int
        C; classes are ``0 … C-1`` (0 = background).
    absent : float, default 1.0
        The value of a class absent from both maps: 1 (perfect agreement, the medical tables'
        per-volume policy) or ``nan`` (not scored; average with :func:`numpy.nanmean`).

    Returns
    -------
    ndarray of shape (C,)
        Dice of class c at index c (background included; report means over ``[1:]``).
        Both masks empty → `absent`, exactly one empty → 0.

    Raises
    ------
    ValueError
        If the shapes differ or `num_classes` < 1.

    See Also
    --------
    dice_over_images : The Dice over a test set of many images (Cityscapes).

    Examples
    --------
    >>> import numpy as np
    >>> from contrastlocal.training import dice_per_class
    >>> dice_per_class(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 4).round(3)
    array([1.   , 0.667, 0.667, 1.   ])
    >>> dice_per_class(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 4, absent=np.nan).tolist()
    [1.0, 0.666..., 0.666..., nan]
    """
    return _dice_from_counts(*dice_counts(pred, target, num_classes), absent=float(absent))


@dataclass(frozen=True)
class ImageSetDice:
    """The Dice over a test set, with the name of its definition.

    Attributes
    ----------
    definition : str
        ``"per_image"`` or ``"pooled"``, a key of :data:`DICE_DEFINITIONS`.
    description : str
        The definition in words (:data:`DICE_DEFINITIONS` ``[definition]``).
    mean : float
        The test-set score (foreground classes; NaN if no foreground class occurs at all).
    per_class : ndarray of shape (C,)
        The score of every class (index 0 = background, reported for completeness): for
        ``"per_image"`` the mean over the images where the class is present in the prediction
        or the truth, for ``"pooled"`` the pooled Dice; NaN for a class never present.
    per_image : ndarray of shape (N,) or None
        ``"per_image"``: each image's mean over its present foreground classes (NaN for an
        image without any); None for ``"pooled"``.

    Examples
    --------
    >>> import numpy as np
    >>> from contrastlocal.training import dice_over_images
    >>> r = dice_over_images([np.array([1, 1, 0])], [np.array([1, 0, 0])], 3)
    >>> r.definition, round(r.mean, 3), r.per_class.round(3).tolist()
    ('per_image', 0.667, [0.667, 0.667, nan])
    """

    definition: str
    description: str
    mean: float
    per_class: npt.NDArray[np.float64]
    per_image: npt.NDArray[np.float64] | None

    def metadata(self) -> dict[str, Any]:
        """Return the summary to store with results: definition, description and scores.

        Returns
        -------
        dict
            ``dice_definition``, ``dice_definition_description``, ``dice_mean`` and
            ``dice_per_class`` (a list, NaN as None), JSON-serialisable.
        """
        return {
            "dice_definition": self.definition,
            "dice_definition_description": self.description,
            "dice_mean": None if np.isnan(self.mean) else float(self.mean),
            "dice_per_class": [None if np.isnan(v) else float(v) for v in self.per_class],
        }


def dice_over_images(
    preds: Iterable[Any],
    targets: Iterable[Any],
    num_classes: int,
    *,
    definition: DiceDefinition = "per_image",
) -> ImageSetDice:
    """Dice over a test set of label maps, never scoring a class absent from both as 1.

    The default, ``"per_image"``, is the definition of the paper's setting: its medical tables
    average a per-volume score over the test volumes, and the authors' per-volume score
    (``f1_score(average=None)``) covers only the labels present in the prediction or the truth;
    Cityscapes images are scored the same way, one image at a time. ``"pooled"`` sums the
    intersections and sizes of every class over the whole test set first (a class then counts
    as much as its pixels, and an image where it is absent from both adds nothing).

    Parameters
    ----------
    preds, targets : iterables of integer arrays
        The predicted and true label maps of the test images, paired in order (shapes may
        differ between images, not within a pair); a stacked (N, H, W) array works too.
    num_classes : int
        C; classes are ``0 … C-1``, 0 = background (left out of the means).
    definition : {"per_image", "pooled"}, default "per_image"
        See :data:`DICE_DEFINITIONS`.

    Returns
    -------
    ImageSetDice
        The score, the per-class scores and (per image) each image's score, with the
        definition's name for the results' metadata.

    Raises
    ------
    ValueError
        If `definition` is unknown, the numbers of predictions and targets differ, the test set
        is empty, or a pair's shapes differ.

    See Also
    --------
    dice_per_class : The per-volume Dice of the medical tables.

    Examples
    --------
    Class 2 is absent from both maps of image 0: per image it is skipped there (a per-volume
    "both empty → 1" policy would have counted a perfect 1).

    >>> import numpy as np
    >>> from contrastlocal.training import dice_over_images
    >>> preds = [np.array([0, 1, 1, 1]), np.array([2, 2, 1, 0])]
    >>> targets = [np.array([0, 1, 1, 0]), np.array([2, 0, 1, 1])]
    >>> round(dice_over_images(preds, targets, 3).mean, 4)
    0.7333
    >>> round(dice_over_images(preds, targets, 3, definition="pooled").mean, 4)
    0.7083
    """
    if definition not in DICE_DEFINITIONS:
        msg = (f"`definition` must be one of {', '.join(map(repr, DICE_DEFINITIONS))}; got "
               f"{definition!r}.")
        raise ValueError(msg)
    pred_list, target_list = list(preds), list(targets)
    if len(pred_list) != len(target_list):
        msg = (f"`preds` and `targets` must hold one label map per test image each; got "
               f"{len(pred_list)} predictions and {len(target_list)} targets.")
        raise ValueError(msg)
    if not pred_list:
        msg = "`preds` and `targets` must hold at least one test image; got none."
        raise ValueError(msg)
    counts = np.stack([np.stack(dice_counts(p, t, num_classes))
                       for p, t in zip(pred_list, target_list, strict=True)])  # (N, 3, C)
    inter, p_size, t_size = counts[:, 0], counts[:, 1], counts[:, 2]
    per_image: npt.NDArray[np.float64] | None
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        # an all-NaN slice (a class or an image with nothing to score) is a valid NaN here
        warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
        if definition == "per_image":
            dice = _dice_from_counts(inter, p_size, t_size, absent=np.nan)  # (N, C)
            per_class = np.nanmean(dice, axis=0)
            per_image = (np.asarray(np.nanmean(dice[:, 1:], axis=1), dtype=np.float64)
                         if num_classes > 1 else np.full(len(dice), np.nan))
            mean = float(np.nanmean(per_image))
        else:
            per_class = _dice_from_counts(inter.sum(0), p_size.sum(0), t_size.sum(0),
                                          absent=np.nan)
            per_image = None
            mean = float(np.nanmean(per_class[1:])) if num_classes > 1 else float("nan")
    return ImageSetDice(definition, DICE_DEFINITIONS[definition], mean,
                       np.asarray(per_class, dtype=np.float64), per_image)


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
