"""Pre-processed volumes in memory: :class:`Volume` and :func:`load_volumes` (from a cache).

A :class:`Volume` is what the stages train on and what evaluation scores: processed slices and
labels, plus the geometry and native labels that map predictions back to the native grid. They
are also importable from :mod:`contrastlocal.training`, where they used to live.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ._records import Case

__all__ = ["Volume", "load_volumes"]


@dataclass
class Volume:
    """One pre-processed volume with what training and evaluation need.

    Parameters
    ----------
    image : ndarray of shape (Z, H, W) or (Z, C, H, W), float32
        Processed slices.
    label : ndarray of shape (Z, H, W), integer, or None
        Processed label slices (training targets).
    case_id : str
        Identifier (e.g. ``"001"``).
    geometry : contrastlocal.data.preprocess.Geometry or None
        How to map predictions back to the native grid; None: evaluate on the processed grid.
    native_label : ndarray or None
        Reference labels on the native grid, in the layout of ``Case.label`` (``(H, W, Z)``);
        None: `label` is the reference (with ``geometry=None``).
    meta : dict
        Anything else worth keeping with the volume (e.g. its spacing, provenance).

    Examples
    --------
    >>> import numpy as np
    >>> from contrastlocal.data import Volume
    >>> v = Volume(np.zeros((3, 8, 8), np.float32), np.zeros((3, 8, 8), np.uint8))
    >>> v.num_slices, v.spacing
    (3, (1.0, 1.0, 1.0))
    """

    image: npt.NDArray[Any]
    label: npt.NDArray[Any] | None = None
    case_id: str = ""
    geometry: Any = None
    native_label: npt.NDArray[Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        img = np.asarray(self.image)
        if img.ndim not in (3, 4):
            msg = f"`image` must have shape (Z, H, W) or (Z, C, H, W); got shape {img.shape}."
            raise ValueError(msg)
        if self.label is not None:
            lab = np.asarray(self.label)
            if lab.shape != (img.shape[0], *img.shape[-2:]):
                msg = (
                    f"`label` must have shape (Z, H, W) = {(img.shape[0], *img.shape[-2:])}; "
                    f"got shape {lab.shape}."
                )
                raise ValueError(msg)

    @property
    def num_slices(self) -> int:
        """Number of processed slices Z."""
        return int(np.shape(self.image)[0])

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel spacing (mm) of the grid the metrics are computed on."""
        if self.geometry is None:
            return (1.0, 1.0, 1.0)
        sp = tuple(float(s) for s in self.geometry.native_spacing)
        return sp[:2] if self.geometry.is_rgb else sp

    @classmethod
    def from_case(cls, case: Case, preprocess: Any = None) -> Volume:
        """Pre-process a :class:`~contrastlocal.data._records.Case` and keep its native labels.

        Parameters
        ----------
        case : Case
            A reader's (or the synthetic generator's) record.
        preprocess : contrastlocal.data.preprocess.PreprocessConfig, optional
            Settings (default: ``PreprocessConfig()``).

        Returns
        -------
        Volume
            Processed image and labels, geometry and native labels.
        """
        from .preprocess import preprocess_case

        image, label, geometry = preprocess_case(case, preprocess)
        return cls(
            image=image,
            label=label,
            case_id=case.case_id,
            geometry=geometry,
            native_label=None if case.label is None else np.asarray(case.label),
        )


def load_volumes(
    cache: str | os.PathLike[str],
    case_ids: Sequence[str] | None = None,
    *,
    native_labels: Mapping[str, npt.NDArray[Any]] | None = None,
) -> list[Volume]:
    """Read volumes from a pre-processed cache (``contrastlocal.data.cache``) into memory.

    Parameters
    ----------
    cache : path
        The cache folder written by ``contrastlocal.data.prepare``.
    case_ids : sequence of str, optional
        Cases to read, in order (default: all).
    native_labels : mapping of str to ndarray, optional
        Reference label maps on the native grid per case id (as read from the raw dataset);
        volumes without one are evaluated on the processed grid.

    Returns
    -------
    list of Volume
        One record per case, with its geometry.

    Raises
    ------
    ValueError
        If the cache does not exist or is incomplete, or a case is not in it.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from contrastlocal.data import Case
    >>> from contrastlocal.data.cache import CacheWriter
    >>> from contrastlocal.data.preprocess import PreprocessConfig, preprocess_case
    >>> from contrastlocal.data import load_volumes
    >>> case = Case("a", np.ones((8, 8, 3)), np.zeros((8, 8, 3), np.uint8), (1.0, 1.0, 1.0))
    >>> cfg = PreprocessConfig(image_size=(8, 8))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     writer = CacheWriter(Path(tmp) / "c", ["a"], config=cfg)
    ...     _ = writer.write_case("a", *preprocess_case(case, cfg))
    ...     volumes = load_volumes(writer.finalize())
    >>> [(v.case_id, v.image.shape) for v in volumes]
    [('a', (3, 8, 8))]
    """
    from .cache import open_cache

    path = Path(cache)
    if not (path / "index.json").is_file():
        msg = (
            f"`cache` {os.fspath(path)!r} is missing or incomplete (no index.json); run "
            "`contrastlocal prepare` (contrastlocal.data.prepare.prepare_dataset) first."
        )
        raise ValueError(msg)
    data = open_cache(path, in_memory=True)
    ids = list(data.case_ids) if case_ids is None else [str(c) for c in case_ids]
    out = []
    for cid in ids:
        image, label, geometry = data.volume(cid)
        native = None if native_labels is None else native_labels.get(cid)
        out.append(
            Volume(
                image=np.asarray(image),
                label=None if label is None else np.asarray(label),
                case_id=cid,
                geometry=geometry if native is not None else None,
                native_label=native,
            )
        )
    return out
