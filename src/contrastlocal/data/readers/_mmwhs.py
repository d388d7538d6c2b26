"""MM-WHS MR: ``mr_train/mr_train_10NN_{image,label}.nii.gz``, reoriented to RAS+."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from .._records import Case
from ._base import DatasetReader
from ._common import PathLike, _check_split, _require_dir, _UInt8Array
from ._nifti import _axcodes, _load_nifti, _nifti_case, _read_label_map, _squeeze_to_3d

__all__ = ["MMWHS_LABEL_CODES", "MMWHSReader"]


# documented where it is exported: contrastlocal.data.readers.MMWHS_LABEL_CODES
MMWHS_LABEL_CODES: tuple[int, ...] = (0, 205, 420, 500, 550, 600, 820, 850)


#: The stray MM-WHS code mapped to the left atrium (class 2).
_MMWHS_STRAY = {421: 2}


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
