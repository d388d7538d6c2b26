"""NIfTI reading shared by the ACDC, prostate and MM-WHS readers (nibabel imported on use)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .._records import Case
from ._common import _UInt8Array


def _nibabel() -> Any:
    try:
        return importlib.import_module("nibabel")
    except ImportError as err:  # pragma: no cover - depends on the environment
        msg = "Reading NIfTI files needs nibabel: install contrastlocal[medical]."
        raise ImportError(msg) from err


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
