"""MSD ``Task05_Prostate``, resolved through ``dataset.json``; the T2 channel."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from .._records import Case
from ._base import DatasetReader
from ._common import (
    PathLike,
    _check_label_values,
    _check_split,
    _is_hidden,
    _require_dir,
    _UInt8Array,
)
from ._nifti import _axcodes, _load_nifti, _nifti_case, _read_label_map

__all__ = ["ProstateReader"]


_NIFTI_SUFFIX = re.compile(r"\.nii(\.gz)?$")


_PROSTATE_CASE = re.compile(r"^prostate_(\d+)$")


def _nifti_stem(name: str) -> str:
    return _NIFTI_SUFFIX.sub("", Path(name).name)


class ProstateReader(DatasetReader):
    """Reader of the Medical Segmentation Decathlon ``Task05_Prostate`` folder.

    Parameters
    ----------
    root : str or os.PathLike
        The ``Task05_Prostate`` folder (holding ``dataset.json``) or its parent.
    split : {"training", "test"}, optional
        The labelled ``training`` list or the unlabelled ``test`` list of ``dataset.json``.
    modality : str, optional
        Channel to read, by its name in ``dataset.json["modality"]`` (``"T2"``, as the original
        method, or ``"ADC"``); channels lie along the last axis of the 4D images.

    Attributes
    ----------
    case_ids : list of str
        Sorted case numbers, e.g. ``["00", "01", "02", "04"]`` for ``prostate_00`` ...
    name : str
        ``"prostate"``.
    num_classes : int
        3.
    class_names : tuple of str
        ``("background", "PZ", "TZ")`` (peripheral and transition zone, as ``dataset.json``).

    Raises
    ------
    FileNotFoundError
        If `root`, ``dataset.json`` or a listed file is missing; the message names the path.
    ValueError
        If `split` or `modality` is invalid or ``dataset.json`` is malformed.

    See Also
    --------
    contrastlocal.data.fixtures.write_prostate_fixture : A tiny folder in this layout.

    Notes
    -----
    Entries of ``dataset.json`` are resolved by basename inside ``imagesTr``/``labelsTr``/
    ``imagesTs`` (copies differ in a ``./`` prefix and in ``.nii`` vs ``.nii.gz``); macOS
    ``._*`` resource forks and other hidden files are never read.

    Examples
    --------
    >>> import tempfile
    >>> from contrastlocal.data.fixtures import write_prostate_fixture
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     reader = ProstateReader(write_prostate_fixture(tmp, num_cases=3))
    ...     case = reader.read("02")
    >>> reader.case_ids, case.image.shape, case.meta["modality"]
    (['00', '01', '02'], (32, 32, 6), 'T2')
    """

    name: ClassVar[str] = "prostate"
    num_classes: ClassVar[int] = 3
    class_names: ClassVar[tuple[str, ...]] = ("background", "PZ", "TZ")

    def __init__(
        self,
        root: PathLike,
        *,
        split: Literal["training", "test"] = "training",
        modality: str = "T2",
    ) -> None:
        self.split = _check_split(split, ("training", "test"))
        root_path = Path(root)
        _require_dir(root_path, "Prostate `root`")
        if not (root_path / "dataset.json").is_file() and (root_path / "Task05_Prostate").is_dir():
            root_path = root_path / "Task05_Prostate"
        self.root = root_path
        json_path = root_path / "dataset.json"
        if not json_path.is_file():
            msg = (
                f"Prostate `root`: expected the MSD description {json_path} "
                "(Task05_Prostate/dataset.json), but it does not exist."
            )
            raise FileNotFoundError(msg)
        try:
            meta = json.loads(json_path.read_text())
        except json.JSONDecodeError as err:
            msg = f"{json_path}: expected valid JSON; {err}."
            raise ValueError(msg) from err
        modalities = {str(v): int(k) for k, v in dict(meta.get("modality", {})).items()}
        if modality not in modalities:
            msg = (
                f"`modality` must be one of {sorted(modalities)} (from {json_path}); "
                f"got {modality!r}."
            )
            raise ValueError(msg)
        self.modality = modality
        self.channel = modalities[modality]
        self._json = meta
        key = "training" if self.split == "training" else "test"
        if key not in meta or not isinstance(meta[key], list):
            msg = f"{json_path}: expected a '{key}' list of cases."
            raise ValueError(msg)
        image_dir = _require_dir(
            root_path / ("imagesTr" if self.split == "training" else "imagesTs"),
            "Prostate images",
        )
        label_dir = (
            _require_dir(root_path / "labelsTr", "Prostate labels") if key == "training" else None
        )
        self._entries: dict[str, tuple[Path, Path | None]] = {}
        for entry in meta[key]:
            if self.split == "training":
                if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                    msg = f"{json_path}: expected training entries {{'image': ..., 'label': ...}}."
                    raise ValueError(msg)
                image_name, label_name = str(entry["image"]), str(entry["label"])
            else:
                image_name, label_name = str(entry), ""
            stem = _nifti_stem(image_name)
            if _is_hidden(stem):
                continue
            match = _PROSTATE_CASE.match(stem)
            case_id = match.group(1) if match else stem
            image = self._resolve(image_dir, stem, json_path)
            label = None
            if label_dir is not None:
                label = self._resolve(label_dir, _nifti_stem(label_name), json_path)
            self._entries[case_id] = (image, label)
        self.case_ids = sorted(self._entries)

    @staticmethod
    def _resolve(folder: Path, stem: str, json_path: Path) -> Path:
        for suffix in (".nii.gz", ".nii"):
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
        msg = f"{json_path} lists {stem}, but {folder} has no {stem}.nii.gz or {stem}.nii."
        raise FileNotFoundError(msg)

    def read(self, case_id: str) -> Case:
        """Read one case (the chosen modality channel and, for training, the label map).

        Parameters
        ----------
        case_id : str
            One of `case_ids`.

        Returns
        -------
        Case
            ``image`` float32 (H, W, Z), ``label`` uint8 (H, W, Z) with 0-2 or None,
            ``spacing`` from the header zooms.

        Raises
        ------
        ValueError
            If `case_id` is unknown, a file cannot be read, the image is not 4D with the
            channel, the shapes differ, or the label holds values other than 0-2.
        """
        self._check_id(case_id)
        image_path, label_path = self._entries[case_id]
        img, data = _load_nifti(image_path)
        if data.ndim != 4 or data.shape[3] <= self.channel:
            msg = (
                f"{image_path}: expected a 4D image (x, y, z, modality) with channel "
                f"{self.channel} ({self.modality}); got shape {data.shape}."
            )
            raise ValueError(msg)
        image = np.asarray(data[..., self.channel], dtype=np.float32)
        label: _UInt8Array | None = None
        if label_path is not None:
            values = _read_label_map(label_path, image, image_path)
            allowed = sorted(int(k) for k in dict(self._json.get("labels", {"0": 0})))
            _check_label_values(values, allowed or range(self.num_classes), label_path)
            label = values.astype(np.uint8)
        meta: dict[str, Any] = {
            "dataset": self.name,
            "modality": self.modality,
            "channel": self.channel,
            "image_path": str(image_path),
            "label_path": None if label_path is None else str(label_path),
            "orientation": _axcodes(img.affine),
        }
        return _nifti_case(case_id, img, image, label, meta)
