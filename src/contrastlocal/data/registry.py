"""The dataset registry: one record per dataset, read by the command line, the presets and prepare.

Each :class:`DatasetInfo` names the dataset's reader (a public name of
:mod:`contrastlocal.data.readers`), its pre-processing preset and the ``n4`` override, its class
names, its splits (the paper's lists, or the Cityscapes draw) and the paper's |X_tr| sets.
Everything that needs "the list of datasets" reads :data:`DATASETS` here.

Examples
--------
>>> from contrastlocal.data.registry import get_dataset
>>> acdc = get_dataset("acdc")
>>> acdc.class_names, acdc.num_classes, acdc.paper_num_labelled
(('RV', 'Myo', 'LV'), 4, (1, 2, 8))
>>> acdc.preprocess_config(n4="none").n4
'none'
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .preprocess import PREPROCESS_PRESETS, N4Preset, PreprocessConfig

if TYPE_CHECKING:
    from .readers import DatasetReader
    from .splits import DatasetSplits

__all__ = ["DATASETS", "PREPARABLE", "DatasetInfo", "class_names", "get_dataset"]


@dataclass(frozen=True)
class DatasetInfo:
    """What the package knows about one dataset.

    Attributes
    ----------
    name : str
        Registry key (``"acdc"``, ...), the ``--dataset`` value.
    class_names : tuple of str
        Names of the foreground classes, label 1, 2, ...; empty when the classes are only
        numbered (Cityscapes).
    num_classes : int
        Classes including the background (the UNet's output channels).
    reader : str or None
        Public name of the reader class in :mod:`contrastlocal.data.readers`; None for a dataset
        generated in memory (``synthetic``).
    paper_num_labelled : tuple of int
        The paper's |X_tr| values (labelled training volumes, or images for Cityscapes).
    num_combinations : int
        Combinations (different draws of the labelled set) per |X_tr| in the paper.

    Examples
    --------
    >>> from contrastlocal.data.registry import DATASETS
    >>> info = DATASETS["prostate"]
    >>> info.reader, info.num_classes, info.preparable, DATASETS["synthetic"].preparable
    ('ProstateReader', 3, True, False)
    """

    name: str
    class_names: tuple[str, ...]
    num_classes: int
    reader: str | None
    paper_num_labelled: tuple[int, ...] = ()
    num_combinations: int = 5

    @property
    def preparable(self) -> bool:
        """Whether the dataset is read from files (``contrastlocal prepare`` applies)."""
        return self.reader is not None

    def preprocess_config(
        self, *, image_size: tuple[int, int] | None = None, n4: N4Preset | None = None
    ) -> PreprocessConfig:
        """Return the pre-processing preset, with the slice size and N4 setting overridden.

        Parameters
        ----------
        image_size : (int, int), optional
            Processed slice size (default: the preset's).
        n4 : {"none", "default", "legacy"}, optional
            N4 bias correction (default: the preset's: ACDC ``"default"``, others ``"none"``).

        Returns
        -------
        PreprocessConfig
            The settings ``prepare`` and ``run`` write the cache with.

        Raises
        ------
        ValueError
            If the dataset has no files to pre-process (``synthetic``).
        """
        if self.name not in PREPROCESS_PRESETS:
            msg = f"dataset {self.name!r} is generated in memory; it has no pre-processing preset."
            raise ValueError(msg)
        config = PREPROCESS_PRESETS[self.name]
        if image_size is not None:
            config = replace(config, image_size=(int(image_size[0]), int(image_size[1])))
        if n4 is not None:
            config = replace(config, n4=n4)
        return config

    def open_reader(self, root: str | os.PathLike[str], **options: Any) -> DatasetReader:
        """Return the reader of the dataset folder `root`.

        Parameters
        ----------
        root : path
            The dataset folder as distributed.
        **options : Any
            Reader options (see :func:`contrastlocal.data.readers.get_reader`).

        Returns
        -------
        DatasetReader
            The reader, with ``case_ids`` and ``read(case_id)``.

        Raises
        ------
        ValueError
            If the dataset is generated in memory (no reader).
        """
        from .readers import get_reader

        if self.reader is None:
            msg = f"dataset {self.name!r} is generated in memory; it has no reader."
            raise ValueError(msg)
        return get_reader(self.name, root, **options)

    def paper_splits(self, case_ids: Iterable[str] | None = None) -> DatasetSplits:
        """Return the paper's splits (Cityscapes: drawn from `case_ids`, the images found).

        Parameters
        ----------
        case_ids : iterable of str, optional
            The ids found; needed for Cityscapes, unused otherwise.

        Returns
        -------
        DatasetSplits
            Pre-training, test and fine-tuning sets.

        Raises
        ------
        ValueError
            If the dataset has no paper splits, or Cityscapes is asked without `case_ids`.
        """
        from .splits import SPLITS, make_cityscapes_split

        if self.name == "cityscapes":
            if case_ids is None:
                msg = "the Cityscapes split is drawn from the images found: pass `case_ids`."
                raise ValueError(msg)
            return make_cityscapes_split(case_ids)
        if self.name not in SPLITS:
            msg = f"dataset {self.name!r} has no paper splits; accepted: {sorted(SPLITS)}."
            raise ValueError(msg)
        return SPLITS[self.name]

    def paper_labelled(self) -> dict[int, tuple[int, ...]]:
        """Return ``{|X_tr|: combinations}`` of the paper's fine-tuning sets.

        Returns
        -------
        dict of int to tuple of int
            E.g. ACDC ``{1: (1, 2, 3, 4, 5), 2: (...), 8: (...)}``.
        """
        from .splits import SPLITS

        if self.name in SPLITS:
            return {k: tuple(sorted(v)) for k, v in SPLITS[self.name].finetune.items()}
        combos = tuple(range(1, self.num_combinations + 1))
        return dict.fromkeys(self.paper_num_labelled, combos)


def _cityscapes_sizes() -> tuple[int, ...]:
    from .splits import CITYSCAPES_FINETUNE_SIZES

    return tuple(CITYSCAPES_FINETUNE_SIZES)


_CARDIAC = ("RV", "Myo", "LV")

#: Every dataset the package knows, by name.
DATASETS: Mapping[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo("acdc", _CARDIAC, 4, "ACDCReader", (1, 2, 8)),
        DatasetInfo("prostate", ("PZ", "TZ"), 3, "ProstateReader", (1, 2, 8)),
        DatasetInfo(
            "mmwhs", ("Myo", "LA", "LV", "RA", "RV", "AA", "PA"), 8, "MMWHSReader", (1, 2, 8)
        ),
        DatasetInfo("cityscapes", (), 13, "CityscapesReader", _cityscapes_sizes()),
        DatasetInfo("synthetic", _CARDIAC, 4, None),
    )
}

#: Datasets read from files as distributed (``contrastlocal prepare`` / ``run``).
PREPARABLE: tuple[str, ...] = tuple(k for k, d in DATASETS.items() if d.preparable)


def get_dataset(name: str) -> DatasetInfo:
    """Return the registry record of dataset `name`.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS`.

    Returns
    -------
    DatasetInfo
        Its record.

    Raises
    ------
    ValueError
        If `name` is not a registered dataset.

    Examples
    --------
    >>> get_dataset("mmwhs").num_classes
    8
    """
    if name not in DATASETS:
        msg = f"`dataset` must be one of {', '.join(map(repr, DATASETS))}; got {name!r}."
        raise ValueError(msg)
    return DATASETS[name]


def class_names(dataset: str, num_classes: int) -> list[str]:
    """Return names of the foreground classes 1 .. `num_classes` - 1 for tables and plots.

    The registry's names when they match `num_classes`, else ``"class k"``.

    Parameters
    ----------
    dataset : str
        Dataset name (unknown names get numbered classes).
    num_classes : int
        Classes including the background.

    Returns
    -------
    list of str
        One name per foreground class.

    Examples
    --------
    >>> class_names("prostate", 3), class_names("cityscapes", 3)
    (['PZ', 'TZ'], ['class 1', 'class 2'])
    """
    info = DATASETS.get(dataset)
    names = None if info is None else info.class_names
    if not names or len(names) != num_classes - 1:
        return [f"class {k}" for k in range(1, num_classes)]
    return list(names)
