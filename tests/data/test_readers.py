from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")
Image = pytest.importorskip("PIL.Image")

from contrastlocal.data.fixtures import (  # noqa: E402
    _mmwhs_canonical_volume,
    write_acdc_fixture,
    write_cityscapes_fixture,
    write_mmwhs_fixture,
    write_prostate_fixture,
)
from contrastlocal.data.readers import (  # noqa: E402
    READERS,
    ACDCReader,
    CityscapesReader,
    MMWHSReader,
    ProstateReader,
    get_reader,
)

# the 12-group mapping of DATA.md §1.4, written out independently of the reader's table
CITYSCAPES_GROUPS = {
    7: 1, 8: 2, 11: 3, 12: 4, 21: 5, 22: 6, 23: 7, 24: 8, 25: 8, 26: 9, 32: 10, 33: 10,
    27: 11, 28: 12,
}  # fmt: skip
MMWHS_CODES = {0: 0, 205: 1, 420: 2, 500: 3, 550: 4, 600: 5, 820: 6, 850: 7, 421: 2}


def _load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def _save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


@pytest.fixture(scope="module")
def acdc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_acdc_fixture(tmp_path_factory.mktemp("acdc"), num_patients=3, num_testing=1)


@pytest.fixture(scope="module")
def prostate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_prostate_fixture(tmp_path_factory.mktemp("msd"), num_cases=3, num_test=2)


@pytest.fixture(scope="module")
def mmwhs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mmwhs_fixture(tmp_path_factory.mktemp("mmwhs"), num_cases=3, num_test=1)


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cityscapes_fixture(tmp_path_factory.mktemp("cs"), images_per_city=2)


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------------- ACDC
def test_acdc_reader_finds_ed_frames(acdc: Path) -> None:
    reader = ACDCReader(acdc)
    assert reader.case_ids == ["001", "002", "003"]
    assert len(reader) == 3
    assert (reader.name, reader.num_classes) == ("acdc", 4)
    assert reader.class_names == ("background", "RV", "Myo", "LV")
    for case_id, ed in (("001", 1), ("002", 3), ("003", 2)):
        case = reader.read(case_id)
        folder = acdc / "training" / f"patient{case_id}"
        stem = f"patient{case_id}_frame{ed:02d}"
        assert case.meta["frame_number"] == ed
        assert case.meta["image_path"] == str(folder / f"{stem}.nii.gz")
        np.testing.assert_array_equal(case.image, _load(folder / f"{stem}.nii.gz"))
        np.testing.assert_array_equal(case.label, _load(folder / f"{stem}_gt.nii.gz"))
        # the ED frame is the 4D cine at index ED - 1
        np.testing.assert_array_equal(
            case.image, _load(folder / f"patient{case_id}_4d.nii.gz")[..., ed - 1]
        )
        assert case.image.dtype == np.float32
        assert case.label is not None
        assert case.label.dtype == np.uint8
        assert case.spacing == (1.5625, 1.5625, 10.0)
        assert case.meta["info"]["ED"] == str(ed)


def test_acdc_reader_spacing_from_header_not_affine(acdc: Path) -> None:
    case = ACDCReader(acdc).read("002")  # oblique affine
    assert not np.allclose(np.diag(case.affine)[:3], case.spacing)
    assert case.spacing == (1.5625, 1.5625, 10.0)
    assert case.image.shape == (32, 28, 6)


def test_acdc_reader_ed_and_es(acdc: Path) -> None:
    reader = ACDCReader(acdc, frames=("ED", "ES"))
    assert reader.case_ids == ["001_ED", "001_ES", "002_ED", "002_ES", "003_ED", "003_ES"]
    es = reader.read("002_ES")
    assert (es.meta["frame"], es.meta["frame_number"], es.meta["patient_id"]) == ("ES", 6, "002")
    ed = reader.read("002_ED")
    assert es.label is not None
    assert ed.label is not None
    assert (es.label == 3).sum() < (ed.label == 3).sum()
    assert ACDCReader(acdc, frames=("ES",)).read("001").meta["frame_number"] == 4


def test_acdc_reader_testing_without_gt(acdc: Path) -> None:
    reader = ACDCReader(acdc, split="testing")
    assert reader.case_ids == ["101"]
    case = reader.read("101")
    assert case.label is None
    assert case.image.shape == (32, 28, 6)
    with pytest.raises(FileNotFoundError, match="patient101_frame01_gt"):
        ACDCReader(acdc, split="testing", require_labels=True)


def test_acdc_reader_accepts_parent_of_database(acdc: Path) -> None:
    assert ACDCReader(acdc.parent).case_ids == ["001", "002", "003"]


def test_acdc_reader_iterates(acdc: Path) -> None:
    assert [c.case_id for c in ACDCReader(acdc)] == ["001", "002", "003"]
    assert "ACDCReader" in repr(ACDCReader(acdc))


def test_acdc_reader_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ACDCReader(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="training"):
        ACDCReader(tmp_path)


def test_acdc_reader_patient_without_gt(acdc: Path, tmp_path: Path) -> None:
    root = _copy(acdc, tmp_path)
    (root / "training/patient002/patient002_frame03_gt.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"patient002_frame03_gt.nii.gz"):
        ACDCReader(root)


def test_acdc_reader_info_without_ed(acdc: Path, tmp_path: Path) -> None:
    root = _copy(acdc, tmp_path)
    cfg = root / "training/patient003/Info.cfg"
    cfg.write_text("\n".join(x for x in cfg.read_text().splitlines() if not x.startswith("ED")))
    with pytest.raises(ValueError, match=r"patient003.*Info.cfg.*'ED"):
        ACDCReader(root)
    cfg.write_text("ED: first\nES: 5\n")
    with pytest.raises(ValueError, match="positive integer"):
        ACDCReader(root)
    cfg.unlink()
    with pytest.raises(FileNotFoundError, match=r"Info.cfg"):
        ACDCReader(root)


def test_acdc_reader_missing_frame_file(acdc: Path, tmp_path: Path) -> None:
    root = _copy(acdc, tmp_path)
    (root / "training/patient001/patient001_frame01.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"patient001_frame01.nii.gz"):
        ACDCReader(root)


def test_acdc_reader_truncated_nifti(acdc: Path, tmp_path: Path) -> None:
    root = _copy(acdc, tmp_path)
    _truncate(root / "training/patient001/patient001_frame01.nii.gz")
    reader = ACDCReader(root)
    with pytest.raises(ValueError, match=r"patient001_frame01.nii.gz.*NIfTI"):
        reader.read("001")
    reader.read("002")  # the others still read


def test_acdc_reader_shape_mismatch(acdc: Path, tmp_path: Path) -> None:
    root = _copy(acdc, tmp_path)
    _save(
        root / "training/patient001/patient001_frame01_gt.nii.gz", np.zeros((32, 30, 6), np.uint8)
    )
    with pytest.raises(ValueError, match=r"shape mismatch.*patient001_frame01.nii.gz"):
        ACDCReader(root).read("001")


def test_acdc_reader_label_values_outside_set(acdc: Path, tmp_path: Path) -> None:
    root = _copy(acdc, tmp_path)
    gt = root / "training/patient001/patient001_frame01_gt.nii.gz"
    data = _load(gt).copy()
    data[0, 0, 0] = 7
    _save(gt, data)
    with pytest.raises(ValueError, match=r"patient001_frame01_gt.nii.gz.*\[7\]"):
        ACDCReader(root).read("001")


def test_acdc_reader_bad_arguments(acdc: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        ACDCReader(acdc, split="train")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="frames"):
        ACDCReader(acdc, frames=("ED", "MID"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="frames"):
        ACDCReader(acdc, frames=())
    with pytest.raises(ValueError, match="case_id"):
        ACDCReader(acdc).read("004")


# --------------------------------------------------------------------------------- prostate
def test_prostate_reader_reads_t2_and_labels(prostate: Path) -> None:
    reader = ProstateReader(prostate)
    assert reader.case_ids == ["00", "01", "02"]  # the ._prostate_00 decoy is not a case
    assert reader.class_names == ("background", "PZ", "TZ")
    for case_id in reader.case_ids:
        case = reader.read(case_id)
        data = _load(prostate / f"imagesTr/prostate_{case_id}.nii.gz")
        np.testing.assert_array_equal(case.image, data[..., 0])
        np.testing.assert_array_equal(
            case.label, _load(prostate / f"labelsTr/prostate_{case_id}.nii.gz")
        )
        assert case.spacing == pytest.approx((0.625, 0.625, 3.6))
        assert case.image.shape == data.shape[:3]
    adc = ProstateReader(prostate, modality="ADC").read("01")
    np.testing.assert_array_equal(
        adc.image, _load(prostate / "imagesTr/prostate_01.nii.gz")[..., 1]
    )


def test_prostate_reader_test_split(prostate: Path) -> None:
    reader = ProstateReader(prostate, split="test")
    assert reader.case_ids == ["03", "05"]
    assert reader.read("05").label is None


def test_prostate_reader_resolves_by_basename(prostate: Path, tmp_path: Path) -> None:
    root = _copy(prostate, tmp_path)
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"][0] = {"image": "imagesTr/prostate_00.nii", "label": "prostate_00.nii"}
    (root / "dataset.json").write_text(json.dumps(meta))
    # and one file stored uncompressed
    src = root / "imagesTr/prostate_01.nii.gz"
    (root / "imagesTr/prostate_01.nii").write_bytes(gzip.decompress(src.read_bytes()))
    src.unlink()
    reader = ProstateReader(root.parent)  # the parent of Task05_Prostate works too
    assert reader.case_ids == ["00", "01", "02"]
    assert reader.read("01").meta["image_path"].endswith("prostate_01.nii")
    assert reader.read("00").image.shape == (32, 32, 6)


def test_prostate_reader_errors(prostate: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"dataset.json"):
        ProstateReader(tmp_path)
    with pytest.raises(ValueError, match="modality"):
        ProstateReader(prostate, modality="DWI")
    root = _copy(prostate, tmp_path)
    # a 3D image where a 4D one is expected
    _save(root / "imagesTr/prostate_02.nii.gz", np.zeros((32, 32, 6), np.float32))
    with pytest.raises(ValueError, match=r"prostate_02.nii.gz.*4D"):
        ProstateReader(root).read("02")
    label = _load(root / "labelsTr/prostate_01.nii.gz").copy()
    label[1, 1, 1] = 3
    _save(root / "labelsTr/prostate_01.nii.gz", label)
    with pytest.raises(ValueError, match=r"prostate_01.nii.gz.*\[3\]"):
        ProstateReader(root).read("01")
    (root / "labelsTr/prostate_00.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"labelsTr.*prostate_00"):
        ProstateReader(root)


# ----------------------------------------------------------------------------------- MM-WHS
def test_mmwhs_reader_maps_codes_and_reorients(mmwhs: Path) -> None:
    reader = MMWHSReader(mmwhs)
    assert reader.case_ids == ["1001", "1002", "1003"]
    assert reader.num_classes == 8
    seeds = np.random.SeedSequence(0).spawn(4)
    for k, case_id in enumerate(reader.case_ids):
        case = reader.read(case_id)
        image, raw = _mmwhs_canonical_volume(seeds[k], (32, 32), 6, with_421=k == 0)
        expected = np.zeros(raw.shape, np.uint8)
        for idx in np.ndindex(raw.shape):
            expected[idx] = MMWHS_CODES[int(raw[idx])]
        np.testing.assert_array_equal(case.label, expected)
        np.testing.assert_array_equal(case.image, image.astype(np.float32))
        assert case.spacing == pytest.approx((1.1, 1.3, 1.6))
        assert case.meta["orientation"] == "RAS"
        assert nib.aff2axcodes(case.affine) == ("R", "A", "S")
    assert reader.read("1002").meta["original_orientation"] == "PLI"
    assert reader.read("1002").meta["original_shape"] == (32, 32, 6)
    first = reader.read("1001")
    assert first.label is not None
    assert first.label[0, 1, 0] == 2  # the stray 421 voxel -> left atrium


def test_mmwhs_reader_test_split(mmwhs: Path) -> None:
    reader = get_reader("mmwhs", mmwhs, split="test")
    assert reader.case_ids == ["2001"]
    assert reader.read("2001").label is None


def test_mmwhs_reader_unknown_code(mmwhs: Path, tmp_path: Path) -> None:
    root = _copy(mmwhs, tmp_path)
    path = root / "mr_train/mr_train_1001_label.nii.gz"
    img = nib.load(str(path))
    data = np.asarray(img.dataobj).copy()
    data[2, 2, 2] = 300
    _save(path, data, img.affine)
    with pytest.raises(ValueError, match=r"mr_train_1001_label.nii.gz.*\[300\]"):
        MMWHSReader(root).read("1001")


def test_mmwhs_reader_errors(mmwhs: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="mr_train"):
        MMWHSReader(tmp_path)
    (tmp_path / "mr_train").mkdir()
    with pytest.raises(ValueError, match="found none"):
        MMWHSReader(tmp_path)
    root = _copy(mmwhs, tmp_path / "copy")
    (root / "mr_train/mr_train_1003_label.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"mr_train_1003_label.nii.gz"):
        MMWHSReader(root)
    _truncate(root / "mr_train/mr_train_1002_image.nii.gz")
    (root / "mr_train/mr_train_1003_image.nii.gz").unlink()
    with pytest.raises(ValueError, match=r"mr_train_1002_image.nii.gz"):
        MMWHSReader(root).read("1002")
    path = root / "mr_train/mr_train_1001_label.nii.gz"
    _save(path, np.zeros((32, 32, 5), np.int16), nib.load(str(path)).affine)
    with pytest.raises(ValueError, match="shape mismatch"):
        MMWHSReader(root).read("1001")


# ------------------------------------------------------------------------------- Cityscapes
def _cs_pair(root: Path, split: str, stem: str) -> tuple[np.ndarray, np.ndarray]:
    city = stem.split("_")[0]
    with Image.open(root / f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png") as im:
        rgb = np.asarray(im)
    with Image.open(root / f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png") as gt:
        ids = np.asarray(gt)
    return rgb, ids


def test_cityscapes_reader_native_mapping(cityscapes: Path) -> None:
    reader = CityscapesReader(cityscapes, downscale=1)
    assert reader.case_ids == [
        "aachen_000000_000019", "aachen_000000_000029",
        "bochum_000000_000019", "bochum_000000_000029",
    ]  # fmt: skip
    assert reader.num_classes == 13 == len(reader.class_names)
    for case_id in reader.case_ids:
        case = reader.read(case_id)
        rgb, ids = _cs_pair(cityscapes, "train", case_id)
        expected = np.vectorize(lambda v: CITYSCAPES_GROUPS.get(int(v), 0))(ids)
        np.testing.assert_array_equal(case.label, expected)
        np.testing.assert_array_equal(case.image, rgb)
        assert case.label is not None
        assert set(np.unique(case.label).tolist()) == set(range(13))
        assert case.is_rgb
        assert case.spacing == (1.0, 1.0, 1.0)


def test_cityscapes_reader_downscale_by_4(cityscapes: Path) -> None:
    reader = CityscapesReader(cityscapes, split="val")
    assert reader.case_ids == ["frankfurt_000000_000019", "frankfurt_000000_000029"]
    case = reader.read("frankfurt_000000_000019")
    assert case.image.shape == (16, 32, 3)
    assert case.image.dtype == np.uint8
    assert case.label is not None
    assert case.label.shape == (16, 32)
    assert case.meta["native_size"] == (64, 128)
    rgb, ids = _cs_pair(cityscapes, "val", case.case_id)
    full = np.vectorize(lambda v: CITYSCAPES_GROUPS.get(int(v), 0))(ids)
    # nearest: each label is one of the labels of its 4x4 block, never a blend
    for i, j in np.ndindex(16, 32):
        assert case.label[i, j] in full[4 * i : 4 * i + 4, 4 * j : 4 * j + 4]
    # antialiased: closer to the 4x4 block means than a strided subsample is
    blocks = rgb.reshape(16, 4, 32, 4, 3).astype(float).mean(axis=(1, 3))
    err_aa = np.abs(case.image - blocks).mean()
    err_stride = np.abs(rgb[::4, ::4].astype(float) - blocks).mean()
    assert err_aa < err_stride


def test_cityscapes_reader_test_split_has_no_labels(cityscapes: Path) -> None:
    reader = CityscapesReader(cityscapes, split="test")
    assert reader.case_ids == ["berlin_000000_000019", "berlin_000000_000029"]
    assert reader.read("berlin_000000_000019").label is None


def test_cityscapes_reader_nested_one_level(cityscapes: Path, tmp_path: Path) -> None:
    shutil.copytree(cityscapes / "leftImg8bit", tmp_path / "leftImg8bit_trainvaltest/leftImg8bit")
    shutil.copytree(cityscapes / "gtFine", tmp_path / "gtFine_trainvaltest/gtFine")
    assert len(CityscapesReader(tmp_path, split="val")) == 2


def test_cityscapes_reader_errors(cityscapes: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="leftImg8bit"):
        CityscapesReader(tmp_path)
    with pytest.raises(ValueError, match="split"):
        CityscapesReader(cityscapes, split="training")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="downscale"):
        CityscapesReader(cityscapes, downscale=0)
    root = _copy(cityscapes, tmp_path / "copy")
    # an empty split
    shutil.rmtree(root / "leftImg8bit/val/frankfurt")
    (root / "leftImg8bit/val/frankfurt").mkdir()
    with pytest.raises(ValueError, match=r"empty.*leftImg8bit/val"):
        CityscapesReader(root, split="val")
    shutil.rmtree(root / "leftImg8bit/val")
    with pytest.raises(FileNotFoundError, match="leftImg8bit/val"):
        CityscapesReader(root, split="val")
    gt_dir = root / "gtFine/train/aachen"
    # an id outside 0-33
    label = gt_dir / "aachen_000000_000019_gtFine_labelIds.png"
    with Image.open(label) as im:
        ids = np.asarray(im).copy()
    ids[0, 0] = 40
    Image.fromarray(ids).save(label)
    with pytest.raises(ValueError, match=r"aachen_000000_000019_gtFine_labelIds.png.*\[40\]"):
        CityscapesReader(root).read("aachen_000000_000019")
    # a colour PNG where labelIds are expected
    Image.fromarray(np.zeros((64, 128, 3), np.uint8)).save(label)
    with pytest.raises(ValueError, match="mode"):
        CityscapesReader(root).read("aachen_000000_000019")
    # a label of the wrong size
    Image.fromarray(np.zeros((32, 128), np.uint8)).save(label)
    with pytest.raises(ValueError, match="shape mismatch"):
        CityscapesReader(root).read("aachen_000000_000019")
    # a truncated image
    image = root / "leftImg8bit/train/aachen/aachen_000000_000029_leftImg8bit.png"
    _truncate(image)
    with pytest.raises(ValueError, match=r"aachen_000000_000029_leftImg8bit.png"):
        CityscapesReader(root).read("aachen_000000_000029")
    # a missing labelIds file
    (gt_dir / "aachen_000000_000029_gtFine_labelIds.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"aachen_000000_000029_gtFine_labelIds.png"):
        CityscapesReader(root)


# --------------------------------------------------------------------------------- registry
def test_get_reader_names(acdc: Path, prostate: Path) -> None:
    assert set(READERS) == {"acdc", "prostate", "mmwhs", "cityscapes"}
    for name, cls in READERS.items():
        assert cls.name == name
        assert len(cls.class_names) == cls.num_classes
    assert isinstance(get_reader("acdc", acdc), ACDCReader)
    assert get_reader("prostate", prostate, split="test").case_ids == ["03", "05"]
    with pytest.raises(ValueError, match="name"):
        get_reader("brats", acdc)
