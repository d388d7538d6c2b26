"""ACDC: ``training/patientNNN/`` with ``Info.cfg`` and the ED (optionally ES) frames."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from .._records import Case
from ._base import DatasetReader
from ._common import PathLike, _check_label_values, _check_split, _require_dir, _UInt8Array
from ._nifti import _axcodes, _load_nifti, _nifti_case, _read_label_map, _squeeze_to_3d

__all__ = ["ACDCReader"]


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
