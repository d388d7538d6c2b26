"""Writers of tiny dataset folders in the exact on-disk layouts of the real datasets.

The readers of :mod:`contrastlocal.data.readers` parse ACDC, the Medical Segmentation Decathlon
prostate task, MM-WHS MR and Cityscapes as their users download them. No test may need the real
data, so these writers produce a few small files (phantom volumes of 32x32x6 by default) laid out
to the letter, with the quirks the readers must handle:

- ACDC: frame files named from ``Info.cfg`` with ED != 1 in one patient, a ``_4d`` cine file, a
  testing patient without ``_gt`` files, ``MANDATORY_CITATION.md``, an oblique affine whose
  diagonal is not the voxel spacing.
- MSD Task05_Prostate: ``dataset.json`` with the official field names (including the misspelt
  ``relase``), 4D images whose last axis is (T2, ADC), ``._prostate_00.nii.gz`` resource-fork
  decoys.
- MM-WHS MR: raw label codes 205...850, one stray 421 voxel, a non-RAS (permuted and flipped)
  affine, float-typed label file, ``mr_test`` images.
- Cityscapes: ``leftImg8bit``/``gtFine`` with mode "L" ``labelIds`` PNGs that contain every id
  0-33, plus ``color``/``instanceIds``/``polygons`` decoys.

nibabel (NIfTI) and Pillow (PNG) are needed: install the ``medical`` extra.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .synthetic import make_cardiac_phantom

__all__ = [
    "ACDC_FIXTURE_FRAMES",
    "MMWHS_FIXTURE_ORIENTATIONS",
    "PROSTATE_TEST_IDS",
    "PROSTATE_TRAINING_IDS",
    "write_acdc_fixture",
    "write_cityscapes_fixture",
    "write_mmwhs_fixture",
    "write_prostate_fixture",
]

PathLike = str | os.PathLike[str]

#: (ED, ES, NbFrame) of the fixture patients, cycled; ED != 1 from the second patient on.
ACDC_FIXTURE_FRAMES: tuple[tuple[int, int, int], ...] = ((1, 4, 5), (3, 6, 7), (2, 5, 6))
_ACDC_GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")

#: Case numbers of the official Task05_Prostate training and test sets.
PROSTATE_TRAINING_IDS: tuple[str, ...] = (
    "00", "01", "02", "04", "06", "07", "10", "13", "14", "16", "17", "18", "20", "21", "24", "25",
    "28", "29", "31", "32", "34", "35", "37", "38", "39", "40", "41", "42", "43", "44", "46", "47",
)  # fmt: skip
PROSTATE_TEST_IDS: tuple[str, ...] = (
    "03", "05", "08", "09", "11", "12", "15", "19", "22", "23", "26", "27", "30", "33", "36", "45",
)  # fmt: skip

#: Stored orientation (axis codes) of the MM-WHS fixture cases, cycled; the first is RAS.
MMWHS_FIXTURE_ORIENTATIONS: tuple[tuple[str, str, str], ...] = (
    ("R", "A", "S"),
    ("P", "L", "I"),
    ("L", "P", "S"),
)

_CITATION = (
    "# Mandatory citation\n\n"
    "Synthetic test fixture written by contrastlocal in the layout of the ACDC release.\n"
    "Users of the real data must cite: O. Bernard et al., IEEE TMI 37(11), 2018.\n"
)
# a macOS AppleDouble header: what the "._*" resource-fork files of the tarball start with
_APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64)


def _nib() -> Any:
    try:
        import nibabel
    except ImportError as err:  # pragma: no cover - depends on the environment
        msg = "Writing NIfTI fixtures needs nibabel: install contrastlocal[medical]."
        raise ImportError(msg) from err
    return nibabel


def _save_nifti(
    path: Path,
    data: npt.NDArray[Any],
    affine: npt.NDArray[np.float64],
    zooms: Sequence[float] | None = None,
) -> None:
    nib = _nib()
    img = nib.Nifti1Image(data, affine)
    if zooms is not None:
        img.header.set_zooms(tuple(zooms))
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))


def _check_count(value: Any, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        msg = f"`{name}` must be an int; got {value!r}."
        raise TypeError(msg)
    if value < low:
        msg = f"`{name}` must be at least {low}; got {value}."
        raise ValueError(msg)
    return int(value)


def _check_size(value: Any, name: str, low: int = 16) -> tuple[int, int]:
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        msg = f"`{name}` must be a pair of ints (H, W); got {value!r}."
        raise TypeError(msg)
    if min(value) < low:
        msg = f"`{name}` must be at least ({low}, {low}); got {tuple(value)}."
        raise ValueError(msg)
    return int(value[0]), int(value[1])


def _to_int16(image: npt.NDArray[Any]) -> npt.NDArray[np.int16]:
    scaled = image / max(float(np.percentile(image, 99.5)), 1e-6) * 800.0
    return np.clip(np.rint(scaled), 0, 32767).astype(np.int16)


def _oblique_affine(spacing: Sequence[float], angle: float) -> npt.NDArray[np.float64]:
    """Affine with an in-plane rotation: its diagonal is not the voxel spacing."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing)
    affine[:3, 3] = [-20.0, 15.0, -30.0]
    return affine


# --------------------------------------------------------------------------------------- ACDC
def write_acdc_fixture(
    root: PathLike,
    *,
    num_patients: int = 3,
    num_testing: int = 1,
    shape: tuple[int, int] = (32, 32),
    num_slices: int = 6,
    seed: int = 0,
) -> Path:
    r"""Write a tiny ACDC release (``database/``) under `root`.

    Parameters
    ----------
    root : str or os.PathLike
        Parent folder (created if missing); the dataset goes to ``root / "database"``.
    num_patients : int, optional
        Training patients ``patient001``... (at least 1).
    num_testing : int, optional
        Testing patients ``patient101``..., written without ``_gt`` files (0 for none).
    shape : tuple of 2 ints, optional
        In-plane size of patient 1; every second patient is 4 columns narrower.
    num_slices : int, optional
        Short-axis slices per frame.
    seed : int, optional
        Seed of the phantom volumes.

    Returns
    -------
    pathlib.Path
        ``root / "database"``, the folder holding ``training/``, ``testing/`` and
        ``MANDATORY_CITATION.md``.

    Raises
    ------
    TypeError
        If a count or `shape` has the wrong type.
    ValueError
        If a count is out of range or `shape` is below 16x16.

    Notes
    -----
    Each patient folder holds ``Info.cfg`` (``ED``, ``ES``, ``Group``, ``Height``, ``NbFrame``,
    ``Weight``), ``MANDATORY_CITATION.md``, ``patientNNN_4d.nii.gz`` of shape (H, W, Z, NbFrame)
    and, for the ED and ES frames (1-based numbers from :data:`ACDC_FIXTURE_FRAMES`), the 3D
    frame ``patientNNN_frameXX.nii.gz`` (= the 4D volume at index ``XX - 1``) and its label map
    ``patientNNN_frameXX_gt.nii.gz`` (ACDC convention 1 RV, 2 Myo, 3 LV; the ES map has a
    thicker myocardium). Images are int16, labels uint8, spacing 1.5625 x 1.5625 x 10 mm; patient
    2 has an affine rotated in-plane by 30 degrees.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     root = write_acdc_fixture(tmp, num_patients=2)
    ...     print(*sorted(p.name for p in (root / "training" / "patient002").iterdir()), sep="\n")
    Info.cfg
    MANDATORY_CITATION.md
    patient002_4d.nii.gz
    patient002_frame03.nii.gz
    patient002_frame03_gt.nii.gz
    patient002_frame06.nii.gz
    patient002_frame06_gt.nii.gz
    """
    from scipy import ndimage

    num_patients = _check_count(num_patients, "num_patients")
    num_testing = _check_count(num_testing, "num_testing", 0)
    num_slices = _check_count(num_slices, "num_slices", 3)
    h, w = _check_size(shape, "shape")
    base = Path(root) / "database"
    base.mkdir(parents=True, exist_ok=True)
    (base / "MANDATORY_CITATION.md").write_text(_CITATION)
    spacing = (1.5625, 1.5625, 10.0)
    seeds = np.random.SeedSequence(seed).spawn(num_patients + num_testing)
    patients = [("training", i + 1) for i in range(num_patients)]
    patients += [("testing", 101 + i) for i in range(num_testing)]
    for k, ((split, number), child) in enumerate(zip(patients, seeds, strict=True)):
        rng = np.random.default_rng(child)
        ed, es, nb_frames = ACDC_FIXTURE_FRAMES[k % len(ACDC_FIXTURE_FRAMES)]
        width = w - 4 * (k % 2)
        phantom = make_cardiac_phantom(
            rng, shape=(h, width), num_slices=num_slices, spacing=spacing
        )
        assert phantom.label is not None
        ed_label = phantom.label
        # end-systole: the LV cavity shrinks, the myocardium thickens
        lv_es = ndimage.binary_erosion(ed_label == 3)
        es_label = np.where((ed_label == 3) & ~lv_es, np.uint8(2), ed_label).astype(np.uint8)
        ed_image = _to_int16(phantom.image)
        es_image = np.where((ed_label == 3) & ~lv_es, ed_image // 3, ed_image).astype(np.int16)
        frames = np.empty((h, width, num_slices, nb_frames), dtype=np.int16)
        for f in range(nb_frames):
            # interpolate between ED and ES over the cycle, plus a little frame noise
            phase = 0.5 - 0.5 * np.cos(2 * np.pi * (f - (ed - 1)) / nb_frames)
            frame = (1 - phase) * ed_image + phase * es_image
            frame = frame + rng.normal(0.0, 3.0, frame.shape)
            frames[..., f] = np.clip(np.rint(frame), 0, 32767).astype(np.int16)
        frames[..., ed - 1] = ed_image
        frames[..., es - 1] = es_image
        name = f"patient{number:03d}"
        folder = base / split / name
        folder.mkdir(parents=True, exist_ok=True)
        affine = _oblique_affine(spacing, np.pi / 6) if k == 1 else np.diag([*spacing, 1.0])
        group = _ACDC_GROUPS[k % len(_ACDC_GROUPS)]
        info = (
            f"ED: {ed}\nES: {es}\nGroup: {group}\nHeight: {160.0 + 5 * k:.1f}\n"
            f"NbFrame: {nb_frames}\nWeight: {70.0 + 3 * k:.1f}\n"
        )
        (folder / "Info.cfg").write_text(info)
        (folder / "MANDATORY_CITATION.md").write_text(_CITATION)
        _save_nifti(folder / f"{name}_4d.nii.gz", frames, affine, (*spacing, 1.0))
        for frame_number, label in ((ed, ed_label), (es, es_label)):
            stem = f"{name}_frame{frame_number:02d}"
            _save_nifti(folder / f"{stem}.nii.gz", frames[..., frame_number - 1], affine)
            if split == "training":
                _save_nifti(folder / f"{stem}_gt.nii.gz", label, affine)
    return base


# ------------------------------------------------------------------------------------ prostate
def write_prostate_fixture(
    root: PathLike,
    *,
    num_cases: int = 3,
    num_test: int = 1,
    shape: tuple[int, int] = (32, 32),
    num_slices: int = 6,
    seed: int = 0,
) -> Path:
    """Write a tiny Medical Segmentation Decathlon ``Task05_Prostate`` folder under `root`.

    Parameters
    ----------
    root : str or os.PathLike
        Parent folder (created if missing).
    num_cases : int, optional
        Labelled training cases, numbered as the first entries of
        :data:`PROSTATE_TRAINING_IDS` (``prostate_00``, ``_01``, ``_02``, ``_04``, ...).
    num_test : int, optional
        Unlabelled test cases in ``imagesTs`` (:data:`PROSTATE_TEST_IDS`; 0 for none).
    shape : tuple of 2 ints, optional
        In-plane size.
    num_slices : int, optional
        Slices per volume.
    seed : int, optional
        Seed of the phantom volumes.

    Returns
    -------
    pathlib.Path
        ``root / "Task05_Prostate"``.

    Raises
    ------
    TypeError
        If a count or `shape` has the wrong type.
    ValueError
        If a count is out of range or `shape` is below 16x16.

    Notes
    -----
    ``dataset.json`` carries the official fields (``name``, ``description``, ``reference``,
    ``licence``, ``relase`` (sic), ``tensorImageSize`` "4D", ``modality`` {"0": "T2",
    "1": "ADC"}, ``labels`` {"0": "background", "1": "PZ", "2": "TZ"}, ``numTraining``,
    ``numTest``, ``training`` [{"image": "./imagesTr/prostate_XX.nii.gz", "label":
    "./labelsTr/prostate_XX.nii.gz"}], ``test`` ["./imagesTs/prostate_XX.nii.gz"]). Images are
    float32 of shape (H, W, Z, 2) with the last axis (T2, ADC); labels uint8 (H, W, Z) with 1 PZ,
    2 TZ; spacing 0.625 x 0.625 x 3.6 mm. ``imagesTr/`` and ``labelsTr/`` also hold a
    ``._prostate_00.nii.gz`` AppleDouble decoy that is not a NIfTI file.

    Examples
    --------
    >>> import json, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     task = write_prostate_fixture(tmp, num_cases=2)
    ...     meta = json.loads((task / "dataset.json").read_text())
    ...     meta["relase"], meta["modality"], meta["training"][1]["image"]
    ('1.0 04/05/2018', {'0': 'T2', '1': 'ADC'}, './imagesTr/prostate_01.nii.gz')
    """
    num_cases = _check_count(num_cases, "num_cases")
    if num_cases > len(PROSTATE_TRAINING_IDS):
        msg = f"`num_cases` must be at most {len(PROSTATE_TRAINING_IDS)}; got {num_cases}."
        raise ValueError(msg)
    num_test = _check_count(num_test, "num_test", 0)
    if num_test > len(PROSTATE_TEST_IDS):
        msg = f"`num_test` must be at most {len(PROSTATE_TEST_IDS)}; got {num_test}."
        raise ValueError(msg)
    num_slices = _check_count(num_slices, "num_slices", 3)
    h, w = _check_size(shape, "shape")
    task = Path(root) / "Task05_Prostate"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (task / sub).mkdir(parents=True, exist_ok=True)
    spacing = (0.625, 0.625, 3.6)
    affine = np.diag([*spacing, 1.0])
    train_ids = PROSTATE_TRAINING_IDS[:num_cases]
    test_ids = PROSTATE_TEST_IDS[:num_test]
    seeds = np.random.SeedSequence(seed).spawn(num_cases + num_test)
    for k, (case, child) in enumerate(zip([*train_ids, *test_ids], seeds, strict=True)):
        phantom = make_cardiac_phantom(
            child, shape=(h, w), num_slices=num_slices, spacing=spacing, distractors=False
        )
        assert phantom.label is not None
        t2 = phantom.image / max(float(np.percentile(phantom.image, 99.5)), 1e-6) * 600.0
        # ADC: a different contrast of the same anatomy
        adc = np.where(phantom.label == 3, 0.6, 1.4) * np.median(t2) + 0.2 * t2[::-1]
        image = np.stack([t2, adc], axis=-1).astype(np.float32)
        name = f"prostate_{case}.nii.gz"
        folder = "imagesTr" if k < num_cases else "imagesTs"
        _save_nifti(task / folder / name, image, affine, (*spacing, 1.0))
        if k < num_cases:
            # central gland (TZ, 2) where the phantom has its cavity, peripheral zone (PZ, 1) rim
            label = np.select([phantom.label == 3, phantom.label == 2], [2, 1], 0)
            _save_nifti(task / "labelsTr" / name, label.astype(np.uint8), affine)
    for sub in ("imagesTr", "labelsTr"):
        (task / sub / "._prostate_00.nii.gz").write_bytes(_APPLEDOUBLE)
    dataset = {
        "name": "PROSTATE",
        "description": "Prostate transitional zone and peripheral zone segmentation",
        "reference": "Radboud University, Nijmegen Medical Centre",
        "licence": "CC-BY-SA 4.0",
        "relase": "1.0 04/05/2018",
        "tensorImageSize": "4D",
        "modality": {"0": "T2", "1": "ADC"},
        "labels": {"0": "background", "1": "PZ", "2": "TZ"},
        "numTraining": num_cases,
        "numTest": num_test,
        "training": [
            {"image": f"./imagesTr/prostate_{c}.nii.gz", "label": f"./labelsTr/prostate_{c}.nii.gz"}
            for c in train_ids
        ],
        "test": [f"./imagesTs/prostate_{c}.nii.gz" for c in test_ids],
    }
    (task / "dataset.json").write_text(json.dumps(dataset, indent=4))
    return task


# --------------------------------------------------------------------------------------- MM-WHS
def _mmwhs_canonical_volume(
    seed: np.random.SeedSequence,
    shape: tuple[int, int],
    num_slices: int,
    with_421: bool,
) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.int16]]:
    """Canonical (RAS) image and raw-code label of one MM-WHS fixture case."""
    phantom = make_cardiac_phantom(seed, shape=shape, num_slices=num_slices)
    assert phantom.label is not None
    codes = np.array([0, 600, 205, 500], dtype=np.int16)  # phantom RV, Myo, LV -> MM-WHS codes
    label = codes[phantom.label]
    h, w = shape
    # the other four structures as small blocks in background corners of chosen slices
    blocks = {420: (0, 0), 550: (0, w - 4), 820: (h - 4, 0), 850: (h - 4, w - 4)}
    for k, (code, (r, c)) in enumerate(blocks.items()):
        z = k % num_slices
        label[r + 1 : r + 4, c : c + 3, z] = code
    if with_421:
        label[0, 1, 0] = 421  # the stray left-atrium value, next to the 420 block
    return _to_int16(phantom.image), label


def write_mmwhs_fixture(
    root: PathLike,
    *,
    num_cases: int = 3,
    num_test: int = 1,
    shape: tuple[int, int] = (32, 32),
    num_slices: int = 6,
    seed: int = 0,
) -> Path:
    r"""Write a tiny MM-WHS 2017 MR folder (``mr_train/``, ``mr_test/``) under `root`.

    Parameters
    ----------
    root : str or os.PathLike
        Folder (created if missing) that receives ``mr_train`` and ``mr_test``.
    num_cases : int, optional
        Labelled cases ``mr_train_1001``... (at most 20).
    num_test : int, optional
        Unlabelled cases ``mr_test_2001``... (0 for none, at most 40).
    shape : tuple of 2 ints, optional
        In-plane size of the canonical (RAS) volume.
    num_slices : int, optional
        Slices of the canonical volume along the S axis.
    seed : int, optional
        Seed of the phantom volumes.

    Returns
    -------
    pathlib.Path
        `root` as a :class:`pathlib.Path`.

    Raises
    ------
    TypeError
        If a count or `shape` has the wrong type.
    ValueError
        If a count is out of range or `shape` is below 16x16.

    Notes
    -----
    Labels carry the raw codes 205 (myocardium), 420 (LA), 500 (LV), 550 (RA), 600 (RV),
    820 (ascending aorta), 850 (pulmonary artery); case 1001 also has one voxel of the stray
    value 421. Cases are stored in the orientations of :data:`MMWHS_FIXTURE_ORIENTATIONS`
    (1002 as ``("P", "L", "I")``: axes permuted and flipped), so that a canonical (RAS)
    reorientation gives back the generated volume of spacing 1.1 x 1.3 x 1.6 mm. Images are
    int16; labels int16 except case 1003, stored as float32 as some releases do.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     root = write_mmwhs_fixture(tmp, num_cases=1, num_test=1)
    ...     print(*sorted(p.relative_to(root).as_posix() for p in root.rglob("*.gz")), sep="\n")
    mr_test/mr_test_2001_image.nii.gz
    mr_train/mr_train_1001_image.nii.gz
    mr_train/mr_train_1001_label.nii.gz
    """
    orientations: Any = importlib.import_module("nibabel.orientations")

    num_cases = _check_count(num_cases, "num_cases")
    num_test = _check_count(num_test, "num_test", 0)
    if num_cases > 20 or num_test > 40:
        msg = f"`num_cases` <= 20 and `num_test` <= 40 expected; got {num_cases}, {num_test}."
        raise ValueError(msg)
    num_slices = _check_count(num_slices, "num_slices", 3)
    h, w = _check_size(shape, "shape")
    base = Path(root)
    (base / "mr_train").mkdir(parents=True, exist_ok=True)
    (base / "mr_test").mkdir(parents=True, exist_ok=True)
    spacing = (1.1, 1.3, 1.6)
    canonical_affine = np.diag([*spacing, 1.0])
    canonical_affine[:3, 3] = [-10.0, -12.0, 5.0]
    ras = orientations.axcodes2ornt(("R", "A", "S"))
    seeds = np.random.SeedSequence(seed).spawn(num_cases + num_test)
    for k, child in enumerate(seeds):
        image, label = _mmwhs_canonical_volume(child, (h, w), num_slices, with_421=k == 0)
        codes = MMWHS_FIXTURE_ORIENTATIONS[k % len(MMWHS_FIXTURE_ORIENTATIONS)]
        transform = orientations.ornt_transform(ras, orientations.axcodes2ornt(codes))
        stored_affine = canonical_affine @ orientations.inv_ornt_aff(transform, image.shape)
        stored_image = orientations.apply_orientation(image, transform)
        if k < num_cases:
            stem = base / "mr_train" / f"mr_train_{1001 + k}"
            _save_nifti(Path(f"{stem}_image.nii.gz"), stored_image, stored_affine)
            stored_label = orientations.apply_orientation(label, transform)
            if k == 2:
                stored_label = stored_label.astype(np.float32)
            _save_nifti(Path(f"{stem}_label.nii.gz"), stored_label, stored_affine)
        else:
            stem = base / "mr_test" / f"mr_test_{2001 + k - num_cases}"
            _save_nifti(Path(f"{stem}_image.nii.gz"), stored_image, stored_affine)
    return base


# ----------------------------------------------------------------------------------- Cityscapes
_CITYSCAPES_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("aachen", "bochum"),
    "val": ("frankfurt",),
    "test": ("berlin",),
}


def _cityscapes_label(rng: np.random.Generator, h: int, w: int) -> npt.NDArray[np.uint8]:
    """Draw a street-like labelIds map (sky, building, road, sidewalk...) with every id 0-33."""
    rows = np.arange(h)[:, None]
    horizon = int(h * rng.uniform(0.35, 0.5))
    label = np.full((h, w), 11, dtype=np.uint8)  # building
    label = np.where(rows < horizon // 2, np.uint8(23), label)  # sky
    label = np.where(rows >= horizon + (h - horizon) // 3, np.uint8(7), label)  # road
    cols = np.arange(w)[None, :]
    sidewalk = (rows >= horizon) & (rows < horizon + (h - horizon) // 3) & (cols < w // 4)
    label = np.where(sidewalk, np.uint8(8), label).astype(np.uint8)
    # every id 0..33 as a small block on a grid of cells
    bh, bw = max(2, h // 16), max(2, w // 24)
    cells = [(r, c) for r in range(0, h - bh + 1, bh) for c in range(0, w - bw + 1, bw)]
    chosen = rng.choice(len(cells), size=34, replace=False)
    for label_id, cell in enumerate(chosen):
        r, c = cells[int(cell)]
        label[r : r + bh, c : c + bw] = label_id
    return label


def write_cityscapes_fixture(
    root: PathLike,
    *,
    cities: Mapping[str, Sequence[str]] | None = None,
    images_per_city: int = 2,
    size: tuple[int, int] = (64, 128),
    seed: int = 0,
) -> Path:
    """Write a tiny Cityscapes ``leftImg8bit``/``gtFine`` tree under `root`.

    Parameters
    ----------
    root : str or os.PathLike
        Folder (created if missing) that receives ``leftImg8bit`` and ``gtFine``.
    cities : mapping of str to sequence of str, optional
        Split name -> city names. Default: train (aachen, bochum), val (frankfurt),
        test (berlin).
    images_per_city : int, optional
        Images per city, named ``{city}_000000_{19 + 10 * i:06d}``.
    size : tuple of 2 ints, optional
        Image size ``(H, W)`` (the real data are 1024 x 2048), at least 16 x 48.
    seed : int, optional
        Seed of the label maps and images.

    Returns
    -------
    pathlib.Path
        `root` as a :class:`pathlib.Path`.

    Raises
    ------
    TypeError
        If an argument has the wrong type.
    ValueError
        If `images_per_city` < 1 or `size` is too small.

    Notes
    -----
    For each image: ``leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png`` (RGB) and, in
    ``gtFine/{split}/{city}/``, ``{stem}_gtFine_labelIds.png`` (mode "L"; every id 0-33 occurs in
    every train/val map; test maps hold only ids 0-3, as the public test labels do) plus the
    decoys ``{stem}_gtFine_color.png`` (RGBA), ``{stem}_gtFine_instanceIds.png`` (16-bit) and
    ``{stem}_gtFine_polygons.json``.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     root = write_cityscapes_fixture(tmp, cities={"val": ["lindau"]}, images_per_city=1)
    ...     gt = root / "gtFine/val/lindau/lindau_000000_000019_gtFine_labelIds.png"
    ...     with Image.open(gt) as im:
    ...         im.mode, im.size, len(np.unique(np.asarray(im)))
    ('L', (128, 64), 34)
    """
    from PIL import Image

    images_per_city = _check_count(images_per_city, "images_per_city")
    h, w = _check_size(size, "size")
    if w < 48:
        msg = f"`size` must be at least (16, 48) to hold every label id; got {(h, w)}."
        raise ValueError(msg)
    splits = (
        dict(_CITYSCAPES_SPLITS) if cities is None else {k: tuple(v) for k, v in cities.items()}
    )
    base = Path(root)
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, size=(256, 3))
    for split, names in sorted(splits.items()):
        for city in names:
            img_dir = base / "leftImg8bit" / split / city
            gt_dir = base / "gtFine" / split / city
            img_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            for i in range(images_per_city):
                stem = f"{city}_000000_{19 + 10 * i:06d}"
                label = _cityscapes_label(rng, h, w)
                if split == "test":
                    label = np.where(label > 3, np.uint8(0), label).astype(np.uint8)
                rgb = palette[label] + rng.integers(-12, 13, size=(h, w, 3))
                rgb = np.clip(rgb, 0, 255).astype(np.uint8)
                Image.fromarray(rgb).save(img_dir / f"{stem}_leftImg8bit.png")
                Image.fromarray(label).save(gt_dir / f"{stem}_gtFine_labelIds.png")
                color = np.concatenate(
                    [palette[label].astype(np.uint8), np.full((h, w, 1), 255, np.uint8)], axis=-1
                )
                Image.fromarray(color).save(gt_dir / f"{stem}_gtFine_color.png")
                instances = label.astype(np.uint16) * np.uint16(1000)
                Image.fromarray(instances).save(gt_dir / f"{stem}_gtFine_instanceIds.png")
                polygons = {
                    "imgHeight": h,
                    "imgWidth": w,
                    "objects": [
                        {"label": "road", "polygon": [[0, h - 1], [w - 1, h - 1], [w - 1, h // 2]]}
                    ],
                }
                (gt_dir / f"{stem}_gtFine_polygons.json").write_text(json.dumps(polygons))
    return base
