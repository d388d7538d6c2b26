"""Pre-processed volumes in memory: :class:`Volume`, :func:`load_volumes`, :func:`open_dataset`.

A :class:`Volume` is what the stages train on and what evaluation scores: processed slices and
labels, plus the geometry and native labels that map predictions back to the native grid
(also importable from :mod:`contrastlocal.training`, where it used to live).
:func:`open_dataset` prepares a dataset folder's cache and resolves its splits: the volumes the
recipe (:func:`contrastlocal.training.run_recipe`) takes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from ._records import Case

if TYPE_CHECKING:
    from .preprocess import N4Preset
    from .splits import DatasetSplits

__all__ = ["AUTO_NUM_LABELLED", "PreparedDataset", "Volume", "load_volumes", "open_dataset"]


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


#: |X_tr| values of automatic splits when none are asked for.
AUTO_NUM_LABELLED: tuple[int, ...] = (1, 2, 8)


@dataclass
class PreparedDataset:
    """A dataset folder as distributed, its prepared cache and its splits.

    Made by :func:`open_dataset`; it hands the recipe its volumes
    (:func:`~contrastlocal.training.run_recipe`): :meth:`pretrain_volumes`,
    :meth:`finetune_volumes` (loaded when a cell asks for them) and :meth:`test_volumes`.

    Attributes
    ----------
    dataset : str
        Registry name.
    root : Path
        The dataset folder.
    cache : Path
        The prepared cache.
    splits : DatasetSplits
        Pre-training, test and fine-tuning ids (all present in the cache).

    Examples
    --------
    >>> from contrastlocal.data import open_dataset
    >>> data = open_dataset("acdc", "ACDC/database", "cache")  # doctest: +SKIP
    >>> len(data.pretrain_volumes()), sorted(data.labelled())  # doctest: +SKIP
    (52, [1, 2, 8])
    """

    dataset: str
    root: Path
    cache: Path
    splits: DatasetSplits

    def volumes(self, ids: Sequence[str], *, native: bool) -> list[Volume]:
        """Load volumes from the cache.

        Parameters
        ----------
        ids : sequence of str
            Case ids, in order.
        native : bool
            Also read the native labels from the dataset folder (evaluation at native
            resolution).

        Returns
        -------
        list of Volume
            One per id.
        """
        from .registry import get_dataset

        labels = None
        if native and self.dataset != "cityscapes":
            reader = get_dataset(self.dataset).open_reader(self.root)
            labels = {}
            for cid in ids:
                case = reader.read(cid)
                if case.label is not None:
                    labels[cid] = case.label
        return load_volumes(self.cache, list(ids), native_labels=labels)

    def labelled(self) -> dict[int, list[int]]:
        """Return ``{|X_tr|: combinations}`` of the fine-tuning splits.

        Returns
        -------
        dict of int to list of int
            Sorted combinations per |X_tr|.
        """
        return {k: sorted(v) for k, v in self.splits.finetune.items()}

    def pretrain_volumes(self) -> list[Volume]:
        """Return the pre-training volumes (processed grid).

        Returns
        -------
        list of Volume
            The volumes of ``splits.pretrain``.
        """
        return self.volumes(self.splits.pretrain, native=False)

    def test_volumes(self) -> list[Volume]:
        """Return the test volumes, with native labels (evaluation at native resolution).

        Returns
        -------
        list of Volume
            The volumes of ``splits.test``.
        """
        return self.volumes(self.splits.test, native=True)

    def finetune_volumes(
        self,
    ) -> Mapping[int, Mapping[int, tuple[Sequence[Volume], Sequence[Volume]]]]:
        """Return ``[|X_tr|][combination] -> (train, val)``, each set loaded when accessed.

        Returns
        -------
        mapping
            The fine-tuning sets, as :func:`~contrastlocal.training.run_recipe` takes them.
        """
        return _LazySplits(self)


class _LazySplits(Mapping[int, Mapping[int, tuple[Sequence[Volume], Sequence[Volume]]]]):
    def __init__(self, data: PreparedDataset) -> None:
        self._data = data

    def __getitem__(self, n: int) -> Mapping[int, tuple[Sequence[Volume], Sequence[Volume]]]:
        return _LazyCombinations(self._data, n)

    def __iter__(self) -> Iterator[int]:
        return iter(self._data.splits.finetune)

    def __len__(self) -> int:
        return len(self._data.splits.finetune)


class _LazyCombinations(Mapping[int, tuple[Sequence[Volume], Sequence[Volume]]]):
    def __init__(self, data: PreparedDataset, n: int) -> None:
        self._data = data
        self._sets = data.splits.finetune[n]

    def __getitem__(self, c: int) -> tuple[Sequence[Volume], Sequence[Volume]]:
        train_ids, val_ids = self._sets[c]
        return (
            self._data.volumes(train_ids, native=False),
            self._data.volumes(val_ids, native=True),
        )

    def __iter__(self) -> Iterator[int]:
        return iter(self._sets)

    def __len__(self) -> int:
        return len(self._sets)


def open_dataset(
    dataset: str,
    root: str | os.PathLike[str],
    cache_root: str | os.PathLike[str],
    *,
    image_size: tuple[int, int] | None = None,
    n4: N4Preset | None = None,
    splits: Literal["paper", "auto"] = "paper",
    num_labelled: Sequence[int] | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> PreparedDataset:
    """Prepare (or reuse) the cache of a dataset folder and resolve its splits on what it holds.

    Parameters
    ----------
    dataset : str
        A registry name read from files (``acdc``, ``prostate``, ``mmwhs``, ``cityscapes``).
    root : path
        The dataset folder as distributed.
    cache_root : path
        Root of the caches (prepared on first use, reused after).
    image_size : (int, int), optional
        Processed slice size (default: the dataset's preset).
    n4 : {"none", "default", "legacy"}, optional
        N4 bias correction (default: the dataset's preset).
    splits : {"paper", "auto"}, default "paper"
        The paper's splits (the whole release is needed; Cityscapes: drawn from the images
        found), or :func:`~contrastlocal.data.splits.auto_splits` of the cases found.
    num_labelled : sequence of int, optional
        |X_tr| values of automatic splits (default: 1, 2, 8).
    workers : int, optional
        Processes preparing the cache (default: one per CPU; 0: none).
    progress : bool, default True
        Progress bar while preparing.

    Returns
    -------
    PreparedDataset
        The cache and the splits.

    Raises
    ------
    ValueError
        If `root` is not a folder, the paper's splits need cases it lacks, or automatic splits
        get fewer than 3 cases (and as :func:`~contrastlocal.data.prepare.prepare_dataset`).

    Examples
    --------
    >>> import tempfile
    >>> from contrastlocal.data.fixtures import write_acdc_fixture
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     root = write_acdc_fixture(f"{tmp}/raw", num_patients=5, num_testing=0)
    ...     data = open_dataset("acdc", root, f"{tmp}/cache", image_size=(32, 32), n4="none",
    ...                         splits="auto", num_labelled=[1], workers=0, progress=False)
    ...     sizes = [v.image.shape for v in data.test_volumes()]
    >>> data.splits.test, data.labelled(), sizes
    (('005',), {1: [1, 2, 3]}, [(6, 32, 32)])
    """
    from .cache import open_cache
    from .prepare import prepare_dataset
    from .registry import get_dataset
    from .splits import auto_splits

    info = get_dataset(dataset)
    path = Path(root)
    if not path.is_dir():
        msg = f"dataset folder {os.fspath(path)!r} does not exist or is not a folder."
        raise ValueError(msg)
    if splits not in ("paper", "auto"):
        msg = f"`splits` must be 'paper' or 'auto'; got {splits!r}."
        raise ValueError(msg)
    cache = prepare_dataset(
        dataset,
        path,
        cache_root,
        split="all",
        config=info.preprocess_config(image_size=image_size, n4=n4),
        workers=workers,
        progress=progress,
    )
    ids = [str(c) for c in open_cache(cache).case_ids]
    if splits == "auto":
        resolved = auto_splits(ids, num_labelled or AUTO_NUM_LABELLED)
    else:
        resolved = info.paper_splits(ids)
        missing = sorted(set(resolved.all_ids()) - set(ids))
        if dataset != "cityscapes" and missing:
            shown = ", ".join(missing[:6]) + (", ..." if len(missing) > 6 else "")
            msg = (
                f"dataset folder {os.fspath(path)!r} lacks {len(missing)} case(s) of the "
                f"paper's {dataset} splits ({shown}); use the complete release or automatic "
                "splits (`--splits auto`)."
            )
            raise ValueError(msg)
    return PreparedDataset(dataset, path, cache, resolved)
