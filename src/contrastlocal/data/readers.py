"""Readers of the real datasets in the layouts their users download.

Each reader takes the dataset folder as distributed, lists its cases in
``case_ids`` (sorted) and returns one :class:`~contrastlocal.data._records.Case` per
``read(case_id)``: the image, the label map already in the class convention of the paper, the
voxel spacing from the header zooms (never the affine diagonal), the affine and provenance in
``meta``. Bad input fails with an error that names the file or folder and what was expected.

- :class:`ACDCReader`: ``training/patientNNN/`` with ``Info.cfg`` and the ED (optionally ES)
  frame and its ``_gt``; classes background, RV, Myo, LV.
- :class:`ProstateReader`: MSD ``Task05_Prostate`` resolved through ``dataset.json``; the T2
  channel (last axis of the 4D images); classes background, PZ, TZ.
- :class:`MMWHSReader`: ``mr_train/mr_train_10NN_{image,label}.nii.gz``, reoriented to RAS+;
  raw codes 205...850 mapped to 1-7 (and the stray 421 to the left atrium).
- :class:`CityscapesReader`: ``leftImg8bit/`` + ``gtFine/`` labelIds mapped to background + 12
  classes, downscaled x4.

nibabel (NIfTI) and Pillow (PNG) are imported on first use: install the ``medical`` extra.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from ._records import Case

__all__ = [
    "CITYSCAPES_LABEL_LUT",
    "MMWHS_LABEL_CODES",
    "READERS",
    "ACDCReader",
    "CityscapesReader",
    "DatasetReader",
    "MMWHSReader",
    "ProstateReader",
    "get_reader",
]

PathLike = str | os.PathLike[str]
_UInt8Array = npt.NDArray[np.uint8]

#: Raw MM-WHS label codes in class order: index ``k`` of the tuple is class ``k`` (0 = background).
MMWHS_LABEL_CODES: tuple[int, ...] = (0, 205, 420, 500, 550, 600, 820, 850)
#: The stray MM-WHS code mapped to the left atrium (class 2).
_MMWHS_STRAY = {421: 2}


def _cityscapes_lut() -> _UInt8Array:
    lut = np.zeros(256, dtype=np.uint8)
    groups = {7: 1, 8: 2, 11: 3, 12: 4, 21: 5, 22: 6, 23: 7, 24: 8, 25: 8, 26: 9, 32: 10, 33: 10}
    groups |= {27: 11, 28: 12}
    for label_id, cls in groups.items():
        lut[label_id] = cls
    return lut


#: Cityscapes ``labelIds`` value -> class of the paper (0 background, 1 road ... 12 bus).
CITYSCAPES_LABEL_LUT: _UInt8Array = _cityscapes_lut()
_CITYSCAPES_MAX_ID = 33  # gtFine labelIds PNGs hold ids 0-33


# ------------------------------------------------------------------------------------ helpers
def _nibabel() -> Any:
    try:
        return importlib.import_module("nibabel")
    except ImportError as err:  # pragma: no cover - depends on the environment
        msg = "Reading NIfTI files needs nibabel: install contrastlocal[medical]."
        raise ImportError(msg) from err


def _pil_image() -> Any:
    try:
        return importlib.import_module("PIL.Image")
    except ImportError as err:  # pragma: no cover - depends on the environment
        msg = "Reading Cityscapes PNG files needs Pillow: install contrastlocal[medical]."
        raise ImportError(msg) from err


def _is_hidden(name: str) -> bool:
    """Skip macOS resource forks (``._*``) and other hidden or private files."""
    return name.startswith((".", "_"))


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        msg = f"{what}: expected a folder at {path}, but it does not exist."
        raise FileNotFoundError(msg)
    return path


def _load_nifti(path: Path, *, canonical: bool = False) -> tuple[Any, npt.NDArray[Any]]:
    """Load a NIfTI image and its data; any read failure becomes a ValueError naming `path`."""
    nib = _nibabel()
    if not path.is_file():
        msg = f"Expected the NIfTI file {path}, but it does not exist."
        raise FileNotFoundError(msg)
    try:
        img = nib.load(str(path))
        if canonical:
            img = nib.as_closest_canonical(img)
        data = np.asarray(img.dataobj)
    except Exception as err:  # nibabel raises many types for truncated or foreign files
        msg = (
            f"Cannot read {path}: expected a complete NIfTI-1/2 file (.nii or .nii.gz); "
            f"{type(err).__name__}: {err}"
        )
        raise ValueError(msg) from err
    return img, data


def _zooms(img: Any) -> tuple[float, float, float]:
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    zooms += [1.0] * (3 - len(zooms))
    return zooms[0], zooms[1], zooms[2]


def _axcodes(affine: npt.NDArray[Any]) -> str:
    codes = _nibabel().aff2axcodes(affine)
    return "".join(c if c is not None else "?" for c in codes)


def _squeeze_to_3d(data: npt.NDArray[Any], path: Path, what: str) -> npt.NDArray[Any]:
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        msg = f"{path}: expected a 3D {what} (x, y, z); got shape {data.shape}."
        raise ValueError(msg)
    return data


def _integer_labels(data: npt.NDArray[Any], path: Path) -> npt.NDArray[np.int64]:
    if data.dtype.kind in "fc":
        rounded = np.rint(data.real)
        if not np.array_equal(rounded, data):
            msg = f"{path}: expected an integer label map; found non-integer values."
            raise ValueError(msg)
        return np.asarray(rounded, dtype=np.int64)
    if data.dtype.kind not in "iub":
        msg = f"{path}: expected an integer label map; got dtype {data.dtype}."
        raise ValueError(msg)
    return data.astype(np.int64)


def _check_label_values(label: npt.NDArray[Any], allowed: Sequence[int], path: Path) -> None:
    values = np.unique(label)
    bad = sorted(set(values.tolist()) - set(allowed))
    if bad:
        msg = (
            f"{path}: label values {bad} are outside the dataset's set {sorted(allowed)}; "
            "is this the right dataset or file?"
        )
        raise ValueError(msg)


def _check_same_shape(
    image: npt.NDArray[Any], label: npt.NDArray[Any], image_path: Path, label_path: Path
) -> None:
    if image.shape[:3] != label.shape[:3]:
        msg = (
            f"Image/label shape mismatch: {image_path} has shape {image.shape[:3]} but "
            f"{label_path} has shape {label.shape[:3]}; expected the same voxel grid."
        )
        raise ValueError(msg)


def _read_label_map(
    label_path: Path, image: npt.NDArray[Any], image_path: Path, *, canonical: bool = False
) -> npt.NDArray[np.int64]:
    """Load the label map of `image` (checked to share its voxel grid) as integers, unmapped."""
    _, raw = _load_nifti(label_path, canonical=canonical)
    raw = _squeeze_to_3d(raw, label_path, "label map")
    _check_same_shape(image, raw, image_path, label_path)
    return _integer_labels(raw, label_path)


def _nifti_case(
    case_id: str,
    img: Any,
    image: npt.NDArray[np.float32],
    label: _UInt8Array | None,
    meta: dict[str, Any],
) -> Case:
    """Make the case of a NIfTI image: spacing from the header zooms, the affine as float64."""
    return Case(
        case_id=case_id,
        image=image,
        label=label,
        spacing=_zooms(img),
        affine=np.asarray(img.affine, dtype=np.float64),
        meta=meta,
    )


def _check_split(split: Any, choices: Sequence[str]) -> str:
    if split not in choices:
        msg = f"`split` must be one of {list(choices)}; got {split!r}."
        raise ValueError(msg)
    return str(split)


class DatasetReader:
    """Base class of the readers: ``case_ids``, ``read(case_id)``, ``len`` and iteration.

    Attributes
    ----------
    root : pathlib.Path
        The dataset folder actually read.
    split : str
        The split read.
    case_ids : list of str
        Sorted case ids of the split.
    name : str
        Dataset name (key of :data:`READERS`).
    num_classes : int
        Number of label classes, background included.
    class_names : tuple of str
        Name of each label value.

    Examples
    --------
    Every reader is a sequence-like collection of cases (here the ACDC reader on a tiny copy of
    the ACDC layout):

    >>> import tempfile
    >>> from contrastlocal.data.fixtures import write_acdc_fixture
    >>> from contrastlocal.data.readers import ACDCReader, DatasetReader
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     reader = ACDCReader(write_acdc_fixture(tmp, num_patients=2))
    ...     cases = [case.case_id for case in reader]
    >>> isinstance(reader, DatasetReader), len(reader), cases, reader.num_classes
    (True, 2, ['001', '002'], 4)
    """

    name: ClassVar[str]
    num_classes: ClassVar[int]
    class_names: ClassVar[tuple[str, ...]]

    root: Path
    split: str
    case_ids: list[str]

    def read(self, case_id: str) -> Case:  # pragma: no cover - overridden
        """Read the case `case_id` (one of `case_ids`); implemented by each reader.

        Parameters
        ----------
        case_id : str
            One of `case_ids`.

        Returns
        -------
        Case
            The image, label map, spacing, affine and provenance of the case.
        """
        raise NotImplementedError

    def _check_id(self, case_id: str) -> None:
        if case_id not in self._id_set:
            shown = ", ".join(self.case_ids[:5]) + (", ..." if len(self.case_ids) > 5 else "")
            msg = (
                f"`case_id` {case_id!r} is not a case of the {self.name} {self.split!r} split "
                f"under {self.root}; known ids: {shown or 'none'}."
            )
            raise ValueError(msg)

    @property
    def _id_set(self) -> set[str]:
        return set(self.case_ids)

    def __len__(self) -> int:
        return len(self.case_ids)

    def __iter__(self) -> Iterator[Case]:
        for case_id in self.case_ids:
            yield self.read(case_id)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"num_cases={len(self)})"
        )


# --------------------------------------------------------------------------------------- ACDC
_ACDC_PATIENT = re.compile(r"^patient(\d{3})$")
_ACDC_FRAME = re.compile(r"^patient(\d{3})_frame(\d{2})(_gt)?\.nii(\.gz)?$")


def _parse_info_cfg(path: Path) -> dict[str, str]:
    if not path.is_file():
        msg = f"Expected the ACDC patient description {path}, but it does not exist."
        raise FileNotFoundError(msg)
    info: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            info[key.strip()] = value.strip()
    return info


class ACDCReader(DatasetReader):
    """Reader of the ACDC challenge release (``training/``, ``testing/`` patient folders).

    Parameters
    ----------
    root : str or os.PathLike
        The ACDC folder holding ``training/`` and ``testing/`` (or its parent, holding
        ``database/`` as the zip unpacks).
    split : {"training", "testing"}, optional
        Which patient folders to read.
    frames : sequence of {"ED", "ES"}, optional
        Cardiac phases to read; the frame numbers come from each patient's ``Info.cfg``
        (1-based, file ``patientNNN_frameXX.nii.gz`` with ``XX`` zero-padded). With one phase a
        case id is the patient number (``"001"``); with several it is ``"001_ED"``, ``"001_ES"``.
    require_labels : bool, optional
        Whether a missing ``_gt`` label file is an error. Default: True for ``"training"``,
        False for ``"testing"`` (where ``label`` is None when the file is absent).

    Attributes
    ----------
    case_ids : list of str
        Sorted case ids.
    name : str
        ``"acdc"``.
    num_classes : int
        4.
    class_names : tuple of str
        ``("background", "RV", "Myo", "LV")``: ACDC label values 0-3, used as stored.

    Raises
    ------
    FileNotFoundError
        If `root`, the split folder, an ``Info.cfg``, a frame file or (when required) its
        ``_gt`` file is missing; the message names the path.
    ValueError
        If `split` or `frames` is invalid or an ``Info.cfg`` lacks a requested phase.

    See Also
    --------
    contrastlocal.data.fixtures.write_acdc_fixture : A tiny folder in this layout.

    Notes
    -----
    The original method (Chaitanya et al., NeurIPS 2020, arXiv:2006.10511) used the ED frame of
    the 100 training patients. The ``_4d`` cine file is ignored. The image keeps its stored
    orientation (slices along the last array axis); ``meta`` holds the paths, patient id, phase,
    frame number, the whole ``Info.cfg`` and the axis codes.

    Examples
    --------
    >>> import tempfile
    >>> from contrastlocal.data.fixtures import write_acdc_fixture
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     reader = ACDCReader(write_acdc_fixture(tmp, num_patients=2))
    ...     case = reader.read("002")
    >>> reader.case_ids, case.meta["frame_number"], case.image.shape, case.spacing
    (['001', '002'], 3, (32, 28, 6), (1.5625, 1.5625, 10.0))
    """

    name: ClassVar[str] = "acdc"
    num_classes: ClassVar[int] = 4
    class_names: ClassVar[tuple[str, ...]] = ("background", "RV", "Myo", "LV")

    def __init__(
        self,
        root: PathLike,
        *,
        split: Literal["training", "testing"] = "training",
        frames: Sequence[Literal["ED", "ES"]] = ("ED",),
        require_labels: bool | None = None,
    ) -> None:
        self.split = _check_split(split, ("training", "testing"))
        if isinstance(frames, str):
            frames = (frames,)  # type: ignore[assignment]
        frames = tuple(frames)
        if (
            not frames
            or any(f not in ("ED", "ES") for f in frames)
            or len(set(frames)) != len(frames)
        ):
            msg = f"`frames` must be a non-empty subset of ('ED', 'ES'); got {frames!r}."
            raise ValueError(msg)
        self.frames: tuple[str, ...] = frames
        self.require_labels = self.split == "training" if require_labels is None else require_labels
        root_path = Path(root)
        _require_dir(root_path, "ACDC `root`")
        if not (root_path / self.split).is_dir() and (root_path / "database").is_dir():
            root_path = root_path / "database"
        self.root = root_path
        split_dir = root_path / self.split
        if not split_dir.is_dir():
            msg = (
                f"ACDC `root`: expected a folder {split_dir} with patientNNN folders "
                f"(the release holds training/ and testing/), but it does not exist."
            )
            raise FileNotFoundError(msg)
        self._entries: dict[str, tuple[Path, str, int, dict[str, str]]] = {}
        for folder in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            match = _ACDC_PATIENT.match(folder.name)
            if match is None:
                continue
            patient = match.group(1)
            info = _parse_info_cfg(folder / "Info.cfg")
            for phase in frames:
                number = self._frame_number(info, phase, folder / "Info.cfg")
                case_id = patient if len(frames) == 1 else f"{patient}_{phase}"
                self._entries[case_id] = (folder, phase, number, info)
        self.case_ids = sorted(self._entries)
        for case_id in self.case_ids:
            self._frame_files(case_id)  # fail early on missing frame/_gt files

    @staticmethod
    def _frame_number(info: Mapping[str, str], phase: str, path: Path) -> int:
        if phase not in info:
            msg = (
                f"{path}: expected a '{phase}: <frame number>' line (1-based); "
                f"found keys {sorted(info)}."
            )
            raise ValueError(msg)
        try:
            value = float(info[phase])
        except ValueError:
            value = float("nan")
        if not value.is_integer() or value < 1:
            msg = f"{path}: expected '{phase}' to be a positive integer; got {info[phase]!r}."
            raise ValueError(msg)
        return int(value)

    def _frame_files(self, case_id: str) -> tuple[Path, Path | None]:
        folder, _, number, _ = self._entries[case_id]
        image: Path | None = None
        label: Path | None = None
        for path in folder.iterdir():
            match = _ACDC_FRAME.match(path.name)
            if match is None or int(match.group(2)) != number:
                continue
            if match.group(3):
                label = path
            else:
                image = path
        stem = f"{folder.name}_frame{number:02d}"
        if image is None:
            msg = f"{folder}: expected the frame file {stem}.nii.gz (from Info.cfg); not found."
            raise FileNotFoundError(msg)
        if label is None and self.require_labels:
            msg = f"{folder}: expected the label file {stem}_gt.nii.gz; not found."
            raise FileNotFoundError(msg)
        return image, label

    def read(self, case_id: str) -> Case:
        """Read one case.

        Parameters
        ----------
        case_id : str
            One of `case_ids`.

        Returns
        -------
        Case
            ``image`` float32 (H, W, Z), ``label`` uint8 (H, W, Z) with 0-3 or None,
            ``spacing`` from the header zooms.

        Raises
        ------
        ValueError
            If `case_id` is unknown, a file cannot be read as NIfTI, the image and label shapes
            differ, or the label holds values other than 0-3.
        """
        self._check_id(case_id)
        folder, phase, number, info = self._entries[case_id]
        image_path, label_path = self._frame_files(case_id)
        img, data = _load_nifti(image_path)
        image = _squeeze_to_3d(data, image_path, "image").astype(np.float32)
        label: _UInt8Array | None = None
        if label_path is not None:
            values = _read_label_map(label_path, image, image_path)
            _check_label_values(values, range(self.num_classes), label_path)
            label = values.astype(np.uint8)
        meta: dict[str, Any] = {
            "dataset": self.name,
            "patient_id": folder.name[len("patient") :],
            "frame": phase,
            "frame_number": number,
            "info": dict(info),
            "image_path": str(image_path),
            "label_path": None if label_path is None else str(label_path),
            "orientation": _axcodes(img.affine),
        }
        return _nifti_case(case_id, img, image, label, meta)


# ----------------------------------------------------------------------------------- prostate
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


# ------------------------------------------------------------------------------------- MM-WHS
_MMWHS_FILE = re.compile(r"^mr_(train|test)_(\d+)_(image|label)\.nii(\.gz)?$")


def _mmwhs_lut_map(values: npt.NDArray[np.int64], path: Path) -> _UInt8Array:
    codes = dict(zip(MMWHS_LABEL_CODES, range(len(MMWHS_LABEL_CODES)), strict=True))
    codes |= _MMWHS_STRAY
    unique = np.unique(values)
    unknown = sorted(set(unique.tolist()) - set(codes))
    if unknown:
        msg = (
            f"{path}: label values {unknown} are not MM-WHS codes; expected "
            f"{sorted(codes)} (0 background, 205 ... 850, and the stray 421 = left atrium)."
        )
        raise ValueError(msg)
    index = np.searchsorted(unique, values)
    mapped = np.asarray([codes[int(v)] for v in unique.tolist()], dtype=np.uint8)
    return mapped[index]


class MMWHSReader(DatasetReader):
    """Reader of the MM-WHS 2017 MR data (``mr_train/``, ``mr_test/``).

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding ``mr_train/`` (and ``mr_test/``).
    split : {"train", "test"}, optional
        ``mr_train`` (20 labelled volumes) or ``mr_test`` (unlabelled).

    Attributes
    ----------
    case_ids : list of str
        Sorted case numbers, e.g. ``["1001", "1002"]``.
    name : str
        ``"mmwhs"``.
    num_classes : int
        8.
    class_names : tuple of str
        ``("background", "Myo", "LA", "LV", "RA", "RV", "AA", "PA")``: the raw codes
        205, 420, 500, 550, 600, 820, 850 in ascending order (:data:`MMWHS_LABEL_CODES`).

    Raises
    ------
    FileNotFoundError
        If `root`, the split folder or (for ``train``) a label file is missing.
    ValueError
        If `split` is invalid or the split folder holds no ``mr_*_image.nii.gz`` file.

    See Also
    --------
    contrastlocal.data.fixtures.write_mmwhs_fixture : A tiny folder in this layout.

    Notes
    -----
    Images and labels are reoriented to the closest canonical (RAS+) orientation
    (``nibabel.as_closest_canonical``), so slices along the last axis are axial; ``meta`` keeps
    the stored axis codes (``"original_orientation"``), affine and shape. The stray code 421 of
    one MR label file becomes the left atrium; any other unknown code raises.

    Examples
    --------
    >>> import tempfile
    >>> from contrastlocal.data.fixtures import write_mmwhs_fixture
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     reader = MMWHSReader(write_mmwhs_fixture(tmp, num_cases=2))
    ...     case = reader.read("1002")
    >>> case.meta["original_orientation"], case.meta["orientation"], case.spacing
    ('PLI', 'RAS', (1.1, 1.3, 1.6))
    >>> sorted(int(v) for v in np.unique(case.label))
    [0, 1, 2, 3, 4, 5, 6, 7]
    """

    name: ClassVar[str] = "mmwhs"
    num_classes: ClassVar[int] = 8
    class_names: ClassVar[tuple[str, ...]] = (
        "background", "Myo", "LA", "LV", "RA", "RV", "AA", "PA",
    )  # fmt: skip

    def __init__(self, root: PathLike, *, split: Literal["train", "test"] = "train") -> None:
        self.split = _check_split(split, ("train", "test"))
        self.root = _require_dir(Path(root), "MM-WHS `root`")
        folder = self.root / f"mr_{self.split}"
        if not folder.is_dir():
            msg = (
                f"MM-WHS `root`: expected a folder {folder} with mr_{self.split}_NNNN_image.nii.gz "
                "files, but it does not exist."
            )
            raise FileNotFoundError(msg)
        images: dict[str, Path] = {}
        labels: dict[str, Path] = {}
        for path in folder.iterdir():
            match = _MMWHS_FILE.match(path.name)
            if match is None or match.group(1) != self.split:
                continue
            (images if match.group(3) == "image" else labels)[match.group(2)] = path
        if not images:
            msg = f"{folder}: expected mr_{self.split}_NNNN_image.nii.gz files; found none."
            raise ValueError(msg)
        if self.split == "train":
            for case_id, image in sorted(images.items()):
                if case_id not in labels:
                    expected = image.name.replace("_image", "_label")
                    msg = f"{folder}: expected the label file {expected} for {image.name}."
                    raise FileNotFoundError(msg)
        self._entries = {cid: (p, labels.get(cid)) for cid, p in images.items()}
        self.case_ids = sorted(self._entries)

    def read(self, case_id: str) -> Case:
        """Read one case in canonical orientation with labels mapped to 0-7.

        Parameters
        ----------
        case_id : str
            One of `case_ids`.

        Returns
        -------
        Case
            ``image`` float32 (H, W, Z) in RAS+ orientation, ``label`` uint8 (H, W, Z) with 0-7
            or None, ``spacing`` from the header zooms of the reoriented image.

        Raises
        ------
        ValueError
            If `case_id` is unknown, a file cannot be read, the reoriented shapes differ, or
            the label holds a value that is not an MM-WHS code.
        """
        self._check_id(case_id)
        image_path, label_path = self._entries[case_id]
        original, _ = _load_nifti(image_path)
        img, data = _load_nifti(image_path, canonical=True)
        image = _squeeze_to_3d(data, image_path, "image").astype(np.float32)
        label: _UInt8Array | None = None
        if label_path is not None:
            values = _read_label_map(label_path, image, image_path, canonical=True)
            label = _mmwhs_lut_map(values, label_path)
        meta: dict[str, Any] = {
            "dataset": self.name,
            "image_path": str(image_path),
            "label_path": None if label_path is None else str(label_path),
            "orientation": _axcodes(img.affine),
            "original_orientation": _axcodes(original.affine),
            "original_affine": np.asarray(original.affine, dtype=np.float64),
            "original_shape": tuple(int(s) for s in original.shape),
        }
        return _nifti_case(case_id, img, image, label, meta)


# --------------------------------------------------------------------------------- Cityscapes
def _find_top(root: Path, name: str) -> Path | None:
    """``root/name`` or, as some zips unpack, ``root/<one level>/name``."""
    if (root / name).is_dir():
        return root / name
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        if (child / name).is_dir():
            return child / name
    return None


class CityscapesReader(DatasetReader):
    """Reader of Cityscapes fine annotations (``leftImg8bit/``, ``gtFine/``).

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding ``leftImg8bit/`` and ``gtFine/`` (directly or one level down, as the
        download zips sometimes unpack).
    split : {"train", "val", "test"}, optional
        Split folder to read. Test labels are not public: ``label`` is None for ``"test"``.
    downscale : int, optional
        Integer downscaling factor (default 4: 1024 x 2048 -> 256 x 512, the paper's
        resolution); 1 keeps the native size. The output size is ``(H // f, W // f)``.

    Attributes
    ----------
    case_ids : list of str
        Sorted image stems, e.g. ``"aachen_000000_000019"``.
    name : str
        ``"cityscapes"``.
    num_classes : int
        13.
    class_names : tuple of str
        Background and the 12 classes of the paper (:data:`CITYSCAPES_LABEL_LUT`).

    Raises
    ------
    FileNotFoundError
        If `root`, ``leftImg8bit``/``gtFine`` or the split folder is missing, or a labelIds
        file of a train/val image is missing.
    ValueError
        If `split` or `downscale` is invalid or the split holds no ``*_leftImg8bit.png``.

    See Also
    --------
    contrastlocal.data.fixtures.write_cityscapes_fixture : A tiny folder in this layout.

    Notes
    -----
    Labels come from ``*_gtFine_labelIds.png`` (ids 0-33), mapped by a 256-entry lookup table
    to 0 background, 1 road (7), 2 sidewalk (8), 3 building (11), 4 wall (12), 5 vegetation
    (21), 6 terrain (22), 7 sky (23), 8 person + rider (24, 25), 9 car (26), 10 motorcycle +
    bicycle (32, 33), 11 truck (27), 12 bus (28). The RGB image is downscaled with Pillow's
    antialiased bilinear filter, the label map with nearest neighbour (after the lookup).
    ``image`` is uint8 (H, W, 3), ``is_rgb`` is True, ``spacing`` is (1, 1, 1).

    Examples
    --------
    >>> import tempfile
    >>> from contrastlocal.data.fixtures import write_cityscapes_fixture
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     reader = CityscapesReader(write_cityscapes_fixture(tmp), split="val")
    ...     case = reader.read(reader.case_ids[0])
    >>> case.case_id, case.image.shape, case.label.shape, case.is_rgb
    ('frankfurt_000000_000019', (16, 32, 3), (16, 32), True)
    """

    name: ClassVar[str] = "cityscapes"
    num_classes: ClassVar[int] = 13
    class_names: ClassVar[tuple[str, ...]] = (
        "background", "road", "sidewalk", "building", "wall", "vegetation", "terrain", "sky",
        "person+rider", "car", "motorcycle+bicycle", "truck", "bus",
    )  # fmt: skip

    def __init__(
        self,
        root: PathLike,
        *,
        split: Literal["train", "val", "test"] = "train",
        downscale: int = 4,
    ) -> None:
        self.split = _check_split(split, ("train", "val", "test"))
        if isinstance(downscale, bool) or not isinstance(downscale, (int, np.integer)):
            msg = f"`downscale` must be a positive int; got {downscale!r}."
            raise TypeError(msg)
        if downscale < 1:
            msg = f"`downscale` must be a positive int; got {downscale}."
            raise ValueError(msg)
        self.downscale = int(downscale)
        self.root = _require_dir(Path(root), "Cityscapes `root`")
        images_top = _find_top(self.root, "leftImg8bit")
        labels_top = _find_top(self.root, "gtFine")
        for top, what in ((images_top, "leftImg8bit"), (labels_top, "gtFine")):
            if top is None:
                msg = (
                    f"Cityscapes `root`: expected a folder {self.root / what} (or one level "
                    "below), but it does not exist."
                )
                raise FileNotFoundError(msg)
        if images_top is None or labels_top is None:  # pragma: no cover - raised above
            raise FileNotFoundError(self.root)
        image_dir = images_top / self.split
        if not image_dir.is_dir():
            msg = f"Cityscapes split: expected a folder {image_dir}, but it does not exist."
            raise FileNotFoundError(msg)
        self._entries: dict[str, tuple[Path, Path | None]] = {}
        suffix = "_leftImg8bit.png"
        for path in sorted(image_dir.glob(f"*/*{suffix}")):
            if _is_hidden(path.name):
                continue
            stem = path.name[: -len(suffix)]
            label: Path | None = None
            if self.split != "test":
                label = labels_top / self.split / path.parent.name / f"{stem}_gtFine_labelIds.png"
                if not label.is_file():
                    msg = f"Expected the label file {label} for {path}; it does not exist."
                    raise FileNotFoundError(msg)
            self._entries[stem] = (path, label)
        if not self._entries:
            msg = (
                f"Cityscapes split {self.split!r} is empty: expected <city>/*{suffix} files "
                f"under {image_dir}."
            )
            raise ValueError(msg)
        self.case_ids = sorted(self._entries)

    def _open(self, path: Path) -> Any:
        image_mod = _pil_image()
        im = None
        try:
            im = image_mod.open(path)
            im.load()
        except Exception as err:  # Pillow raises OSError, SyntaxError, ... on bad files
            if im is not None:
                im.close()
            msg = f"Cannot read {path}: expected a complete PNG image; {type(err).__name__}: {err}"
            raise ValueError(msg) from err
        return im

    def read(self, case_id: str) -> Case:
        """Read one image and its mapped, downscaled label map.

        Parameters
        ----------
        case_id : str
            One of `case_ids`.

        Returns
        -------
        Case
            ``image`` uint8 (H, W, 3), ``label`` uint8 (H, W) with 0-12 (None for ``"test"``),
            ``(H, W) = (H0 // downscale, W0 // downscale)``.

        Raises
        ------
        ValueError
            If `case_id` is unknown, a PNG cannot be read, the label PNG is not single-channel
            8-bit, its size differs from the image's, or it holds ids above 33.
        """
        self._check_id(case_id)
        image_path, label_path = self._entries[case_id]
        image_mod = _pil_image()
        im = self._open(image_path)
        native = (im.height, im.width)
        size = (max(1, im.width // self.downscale), max(1, im.height // self.downscale))
        if im.mode != "RGB":
            im = im.convert("RGB")
        if self.downscale != 1:
            im = im.resize(size, image_mod.Resampling.BILINEAR)
        image = np.asarray(im, dtype=np.uint8)
        label: _UInt8Array | None = None
        if label_path is not None:
            lab = self._open(label_path)
            if lab.mode not in ("L", "P"):
                msg = (
                    f"{label_path}: expected a single-channel 8-bit labelIds PNG (mode 'L'); "
                    f"got mode {lab.mode!r}."
                )
                raise ValueError(msg)
            if (lab.height, lab.width) != native:
                msg = (
                    f"Image/label shape mismatch: {image_path} is {native} (H, W) but "
                    f"{label_path} is {(lab.height, lab.width)}."
                )
                raise ValueError(msg)
            ids = np.asarray(lab, dtype=np.uint8)
            _check_label_values(ids, range(_CITYSCAPES_MAX_ID + 1), label_path)
            mapped = CITYSCAPES_LABEL_LUT[ids]
            if self.downscale != 1:
                small = image_mod.fromarray(mapped).resize(size, image_mod.Resampling.NEAREST)
                mapped = np.asarray(small, dtype=np.uint8)
            label = mapped
        meta: dict[str, Any] = {
            "dataset": self.name,
            "city": image_path.parent.name,
            "split": self.split,
            "native_size": native,
            "downscale": self.downscale,
            "image_path": str(image_path),
            "label_path": None if label_path is None else str(label_path),
        }
        return Case(
            case_id=case_id,
            image=image,
            label=label,
            spacing=(1.0, 1.0, 1.0),
            affine=np.eye(4),
            meta=meta,
            is_rgb=True,
        )


# ---------------------------------------------------------------------------------- registry
READERS: dict[str, type[DatasetReader]] = {
    "acdc": ACDCReader,
    "prostate": ProstateReader,
    "mmwhs": MMWHSReader,
    "cityscapes": CityscapesReader,
}


def get_reader(name: str, root: PathLike, **kwargs: Any) -> DatasetReader:
    """Construct the reader of dataset `name` on folder `root`.

    Parameters
    ----------
    name : {"acdc", "prostate", "mmwhs", "cityscapes"}
        Dataset name (a key of :data:`READERS`).
    root : str or os.PathLike
        Dataset folder as distributed.
    **kwargs
        Reader options (``split``, ``frames``, ``modality``, ``downscale``, ...).

    Returns
    -------
    ACDCReader or ProstateReader or MMWHSReader or CityscapesReader
        The reader, with ``case_ids`` and ``read(case_id)``.

    Raises
    ------
    ValueError
        If `name` is unknown (and as the reader's constructor).

    Examples
    --------
    >>> import tempfile
    >>> from contrastlocal.data.fixtures import write_mmwhs_fixture
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     reader = get_reader("mmwhs", write_mmwhs_fixture(tmp), split="test")
    >>> type(reader).__name__, reader.case_ids, reader.num_classes
    ('MMWHSReader', ['2001'], 8)
    """
    if name not in READERS:
        msg = f"`name` must be one of {sorted(READERS)}; got {name!r}."
        raise ValueError(msg)
    return READERS[name](root, **kwargs)  # type: ignore[call-arg]
