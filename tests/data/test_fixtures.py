from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")
Image = pytest.importorskip("PIL.Image")

from contrastlocal.data.fixtures import (  # noqa: E402
    ACDC_FIXTURE_FRAMES,
    MMWHS_FIXTURE_ORIENTATIONS,
    PROSTATE_TEST_IDS,
    PROSTATE_TRAINING_IDS,
    write_acdc_fixture,
    write_cityscapes_fixture,
    write_mmwhs_fixture,
    write_prostate_fixture,
)


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


# ----------------------------------------------------------------------------------- ACDC
@pytest.fixture(scope="module")
def acdc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_acdc_fixture(tmp_path_factory.mktemp("acdc"), num_patients=3, num_testing=1)


def _info(folder: Path) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in (folder / "Info.cfg").read_text().splitlines())
    return {k.strip(): v.strip() for k, v in pairs}


def test_write_acdc_fixture_layout(acdc: Path) -> None:
    assert acdc.name == "database"
    expected = {"MANDATORY_CITATION.md"}
    for k, (split, number) in enumerate(
        [("training", 1), ("training", 2), ("training", 3), ("testing", 101)]
    ):
        ed, es, _ = ACDC_FIXTURE_FRAMES[k % len(ACDC_FIXTURE_FRAMES)]
        p = f"{split}/patient{number:03d}"
        expected |= {
            f"{p}/Info.cfg",
            f"{p}/MANDATORY_CITATION.md",
            f"{p}/patient{number:03d}_4d.nii.gz",
        }
        for f in (ed, es):
            expected.add(f"{p}/patient{number:03d}_frame{f:02d}.nii.gz")
            if split == "training":
                expected.add(f"{p}/patient{number:03d}_frame{f:02d}_gt.nii.gz")
    assert _tree(acdc) == expected


def test_write_acdc_fixture_info_and_frames(acdc: Path) -> None:
    eds = []
    for k, folder in enumerate(sorted((acdc / "training").iterdir())):
        info = _info(folder)
        assert set(info) == {"ED", "ES", "Group", "Height", "NbFrame", "Weight"}
        ed, es, nb = (int(info[key]) for key in ("ED", "ES", "NbFrame"))
        assert (ed, es, nb) == ACDC_FIXTURE_FRAMES[k]
        assert info["Group"] in {"NOR", "MINF", "DCM", "HCM", "RV"}
        eds.append(ed)
        name = folder.name
        cine = _load(folder / f"{name}_4d.nii.gz")
        assert cine.ndim == 4
        assert cine.shape[3] == nb
        for f in (ed, es):
            frame = _load(folder / f"{name}_frame{f:02d}.nii.gz")
            gt = _load(folder / f"{name}_frame{f:02d}_gt.nii.gz")
            np.testing.assert_array_equal(frame, cine[..., f - 1])  # 1-based frame numbers
            assert frame.shape == gt.shape == cine.shape[:3]
            assert gt.dtype == np.uint8
            assert set(np.unique(gt).tolist()) == {0, 1, 2, 3}
        ed_gt = _load(folder / f"{name}_frame{ed:02d}_gt.nii.gz")
        es_gt = _load(folder / f"{name}_frame{es:02d}_gt.nii.gz")
        assert (es_gt == 3).sum() < (ed_gt == 3).sum()  # systole: smaller LV cavity
        img = nib.load(str(folder / f"{name}_frame{ed:02d}.nii.gz"))
        np.testing.assert_allclose(img.header.get_zooms(), (1.5625, 1.5625, 10.0))
    assert any(e != 1 for e in eds)
    # patient002 has an oblique affine: its diagonal is not the spacing
    aff = nib.load(str(acdc / "training/patient002/patient002_frame03.nii.gz")).affine
    assert not np.allclose(np.diag(aff)[:3], (1.5625, 1.5625, 10.0))
    # shapes differ between patients (4 columns narrower every second patient)
    assert _load(acdc / "training/patient002/patient002_frame03.nii.gz").shape == (32, 28, 6)


def test_write_acdc_fixture_testing_has_no_gt(acdc: Path) -> None:
    files = _tree(acdc / "testing")
    assert files
    assert not any(f.endswith("_gt.nii.gz") for f in files)


# ------------------------------------------------------------------------------- prostate
@pytest.fixture(scope="module")
def prostate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_prostate_fixture(tmp_path_factory.mktemp("msd"), num_cases=4, num_test=2)


def test_write_prostate_fixture_layout(prostate: Path) -> None:
    assert prostate.name == "Task05_Prostate"
    tr = PROSTATE_TRAINING_IDS[:4]
    assert tr == ("00", "01", "02", "04")
    ts = PROSTATE_TEST_IDS[:2]
    expected = {"dataset.json", "imagesTr/._prostate_00.nii.gz", "labelsTr/._prostate_00.nii.gz"}
    expected |= {f"imagesTr/prostate_{c}.nii.gz" for c in tr}
    expected |= {f"labelsTr/prostate_{c}.nii.gz" for c in tr}
    expected |= {f"imagesTs/prostate_{c}.nii.gz" for c in ts}
    assert _tree(prostate) == expected


def test_write_prostate_fixture_dataset_json(prostate: Path) -> None:
    meta = json.loads((prostate / "dataset.json").read_text())
    assert set(meta) == {
        "name", "description", "reference", "licence", "relase", "tensorImageSize",
        "modality", "labels", "numTraining", "numTest", "training", "test",
    }  # fmt: skip
    assert meta["modality"] == {"0": "T2", "1": "ADC"}
    assert meta["labels"] == {"0": "background", "1": "PZ", "2": "TZ"}
    assert meta["tensorImageSize"] == "4D"
    assert meta["numTraining"] == len(meta["training"]) == 4
    assert meta["numTest"] == len(meta["test"]) == 2
    for entry in meta["training"]:
        assert (prostate / entry["image"]).is_file()
        assert (prostate / entry["label"]).is_file()
    for entry in meta["test"]:
        assert (prostate / entry).is_file()


def test_write_prostate_fixture_volumes(prostate: Path) -> None:
    img = nib.load(str(prostate / "imagesTr/prostate_00.nii.gz"))
    data = np.asarray(img.dataobj)
    assert data.ndim == 4
    assert data.shape[3] == 2  # last axis: T2, ADC
    assert not np.allclose(data[..., 0], data[..., 1])
    np.testing.assert_allclose(img.header.get_zooms()[:3], (0.625, 0.625, 3.6))
    label = _load(prostate / "labelsTr/prostate_00.nii.gz")
    assert label.shape == data.shape[:3]
    assert set(np.unique(label).tolist()) == {0, 1, 2}
    decoy = prostate / "imagesTr/._prostate_00.nii.gz"
    with pytest.raises(nib.filebasedimages.ImageFileError, match="gzip"):
        nib.load(str(decoy))


# --------------------------------------------------------------------------------- MM-WHS
@pytest.fixture(scope="module")
def mmwhs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mmwhs_fixture(tmp_path_factory.mktemp("mmwhs"), num_cases=3, num_test=2)


def test_write_mmwhs_fixture_layout(mmwhs: Path) -> None:
    expected = {f"mr_train/mr_train_{i}_{kind}.nii.gz" for i in (1001, 1002, 1003)
                for kind in ("image", "label")}  # fmt: skip
    expected |= {"mr_test/mr_test_2001_image.nii.gz", "mr_test/mr_test_2002_image.nii.gz"}
    assert _tree(mmwhs) == expected


def test_write_mmwhs_fixture_codes_and_orientation(mmwhs: Path) -> None:
    codes = {0, 205, 420, 500, 550, 600, 820, 850}
    seen_421 = False
    for k, i in enumerate((1001, 1002, 1003)):
        img = nib.load(str(mmwhs / f"mr_train/mr_train_{i}_image.nii.gz"))
        lab = nib.load(str(mmwhs / f"mr_train/mr_train_{i}_label.nii.gz"))
        values = set(np.unique(np.asarray(lab.dataobj)).astype(int).tolist())
        seen_421 |= 421 in values
        assert values - {421} == codes
        assert img.shape == lab.shape
        np.testing.assert_array_equal(img.affine, lab.affine)
        assert nib.aff2axcodes(img.affine) == MMWHS_FIXTURE_ORIENTATIONS[k]
        canonical = nib.as_closest_canonical(img)
        np.testing.assert_allclose(canonical.header.get_zooms(), (1.1, 1.3, 1.6), rtol=1e-6)
        assert canonical.shape == (32, 32, 6)
    assert seen_421
    assert MMWHS_FIXTURE_ORIENTATIONS[1] != ("R", "A", "S")
    # one label file is stored as floats
    lab3 = nib.load(str(mmwhs / "mr_train/mr_train_1003_label.nii.gz"))
    assert lab3.get_data_dtype().kind == "f"


# ----------------------------------------------------------------------------- Cityscapes
@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cityscapes_fixture(tmp_path_factory.mktemp("cs"), images_per_city=2)


def test_write_cityscapes_fixture_layout(cityscapes: Path) -> None:
    expected = set()
    for split, cities in {"train": ("aachen", "bochum"), "val": ("frankfurt",),
                          "test": ("berlin",)}.items():  # fmt: skip
        for city in cities:
            for frame in ("000019", "000029"):
                stem = f"{city}_000000_{frame}"
                expected.add(f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png")
                for suffix in ("labelIds.png", "color.png", "instanceIds.png", "polygons.json"):
                    expected.add(f"gtFine/{split}/{city}/{stem}_gtFine_{suffix}")
    assert _tree(cityscapes) == expected


def test_write_cityscapes_fixture_images(cityscapes: Path) -> None:
    for gt_path in sorted(cityscapes.glob("gtFine/*/*/*_gtFine_labelIds.png")):
        split = gt_path.parts[-3]
        with Image.open(gt_path) as gt:
            assert gt.mode == "L"
            assert gt.size == (128, 64)  # (W, H)
            ids = set(np.unique(np.asarray(gt)).tolist())
        assert ids == (set(range(34)) if split != "test" else ids & set(range(4)))
        image_path = Path(
            str(gt_path)
            .replace("gtFine", "leftImg8bit", 1)
            .replace("_gtFine_labelIds", "_leftImg8bit")
        )
        with Image.open(image_path) as im:
            assert im.mode == "RGB"
            assert im.size == (128, 64)
    with Image.open(next(cityscapes.glob("gtFine/train/*/*_gtFine_color.png"))) as color:
        assert color.mode == "RGBA"
    poly = json.loads(next(cityscapes.glob("gtFine/train/*/*_polygons.json")).read_text())
    assert {"imgHeight", "imgWidth", "objects"} <= set(poly)


def test_write_cityscapes_fixture_custom_cities(tmp_path: Path) -> None:
    root = write_cityscapes_fixture(
        tmp_path, cities={"val": ["munster"]}, images_per_city=1, size=(32, 64)
    )
    assert _tree(root / "leftImg8bit") == {"val/munster/munster_000000_000019_leftImg8bit.png"}


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("writer", "kwargs", "exc", "match"),
    [
        (write_acdc_fixture, {"num_patients": 0}, ValueError, "num_patients"),
        (write_acdc_fixture, {"shape": (8, 8)}, ValueError, "shape"),
        (write_prostate_fixture, {"num_cases": 40}, ValueError, "num_cases"),
        (write_prostate_fixture, {"num_test": -1}, ValueError, "num_test"),
        (write_mmwhs_fixture, {"num_cases": 1.5}, TypeError, "num_cases"),
        (write_cityscapes_fixture, {"size": (16, 32)}, ValueError, "size"),
        (write_cityscapes_fixture, {"images_per_city": 0}, ValueError, "images_per_city"),
    ],
)
def test_fixture_writers_bad_input(
    tmp_path: Path, writer: object, kwargs: dict, exc: type, match: str
) -> None:
    with pytest.raises(exc, match=match):
        writer(tmp_path, **kwargs)  # type: ignore[operator]
