"""The slice cache: writing case by case, concatenation, index, loading, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("scipy")

from contrastlocal.data._records import Case
from contrastlocal.data.cache import (
    NO_LABEL,
    CacheWriter,
    cache_key,
    cache_path,
    open_cache,
)
from contrastlocal.data.preprocess import PreprocessConfig, preprocess_case

CFG = PreprocessConfig(image_size=(12, 12))


def _cases(slices=(3, 5, 4), labelled=(True, True, True), seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i, (z, lab) in enumerate(zip(slices, labelled, strict=True)):
        img = rng.normal(size=(10 + i, 12, z))
        label = rng.integers(0, 4, size=(10 + i, 12, z)).astype(np.uint8) if lab else None
        out.append(Case(f"{i + 1:03d}", img, label, (1.0, 1.0, 5.0)))
    return out


def _write(path, cases, cfg=CFG):
    writer = CacheWriter(path, [c.case_id for c in cases], config=cfg, dataset="t", split="all")
    for c in cases:
        writer.write_case(c.case_id, *preprocess_case(c, cfg))
    return writer.finalize()


def _partition_oracle(z, num_slices, s=4):
    for k in range(s):
        if k * num_slices <= z * s < (k + 1) * num_slices:
            return k
    raise AssertionError


@pytest.mark.parametrize("in_memory", [False, True])
def test_cache_round_trip(tmp_path, in_memory):
    cases = _cases()
    path = _write(tmp_path / "c", cases)
    data = open_cache(path, in_memory=in_memory)
    assert isinstance(data.images, np.memmap) != in_memory
    expected = [preprocess_case(c, CFG) for c in cases]
    np.testing.assert_array_equal(data.images, np.concatenate([e[0] for e in expected]))
    np.testing.assert_array_equal(data.labels, np.concatenate([e[1] for e in expected]))
    assert data.case_ids == ("001", "002", "003")
    assert data.slices_per_volume == (3, 5, 4)
    assert data.offsets == (0, 3, 8)
    assert data.num_slices == 12
    assert data.num_volumes == 3
    assert data.geometries == tuple(e[2] for e in expected)
    assert data.config == CFG
    np.testing.assert_array_equal(data.case_index, [0] * 3 + [1] * 5 + [2] * 4)
    np.testing.assert_array_equal(data.slice_index, [*range(3), *range(5), *range(4)])
    parts = [_partition_oracle(z, n) for n in (3, 5, 4) for z in range(n)]
    np.testing.assert_array_equal(data.partition, parts)
    img, lab, geom = data.volume("002")
    np.testing.assert_array_equal(img, expected[1][0])
    np.testing.assert_array_equal(lab, expected[1][1])
    assert geom == expected[1][2]
    assert not (path / "parts").exists()
    assert sorted(p.name for p in path.iterdir()) == ["images.npy", "index.json", "labels.npy"]


def test_cache_index_contents(tmp_path):
    path = _write(tmp_path / "c", _cases())
    index = json.loads((path / "index.json").read_text())
    assert index["config_digest"] == CFG.digest()
    assert index["dataset"] == "t"
    assert index["num_slices"] == 12
    assert [c["offset"] for c in index["cases"]] == [0, 3, 8]
    assert index["cases"][1]["geometry"]["native_shape"] == [11, 12, 5]
    assert index["num_partitions"] == 4


def test_cache_select_subset(tmp_path):
    data = open_cache(_write(tmp_path / "c", _cases()))
    sub = data.select(["003", "001"])
    assert sub.case_ids == ("003", "001")
    assert sub.slices_per_volume == (4, 3)
    assert sub.offsets == (0, 4)
    np.testing.assert_array_equal(sub.images, np.concatenate([data.images[8:12], data.images[:3]]))
    np.testing.assert_array_equal(sub.case_index, [0] * 4 + [1] * 3)
    with pytest.raises(ValueError, match="case"):
        data.select(["999"])


def test_cache_without_labels(tmp_path):
    path = _write(tmp_path / "c", _cases(labelled=(False, False, False)))
    data = open_cache(path)
    assert data.labels is None
    assert not (path / "labels.npy").exists()
    assert data.volume(0)[1] is None


def test_cache_mixed_labels_fill_no_label(tmp_path):
    data = open_cache(_write(tmp_path / "c", _cases(labelled=(True, False, True))))
    assert data.has_label == (True, False, True)
    np.testing.assert_array_equal(data.labels[3:8], NO_LABEL)
    assert data.volume("002")[1] is None
    assert data.volume("003")[1] is not None


def test_cache_writer_resume_state(tmp_path):
    cases = _cases()
    writer = CacheWriter(tmp_path / "c", [c.case_id for c in cases], config=CFG)
    assert writer.done_case_ids() == []
    assert not writer.is_complete()
    writer.write_case("002", *preprocess_case(cases[1], CFG))
    assert writer.done_case_ids() == ["002"]
    with pytest.raises(ValueError, match="missing"):
        writer.finalize()
    for c in (cases[0], cases[2]):
        writer.write_case(c.case_id, *preprocess_case(c, CFG))
    writer.finalize()
    assert writer.is_complete()
    # a different case list or config is not "complete"
    assert not CacheWriter(tmp_path / "c", ["001", "002"], config=CFG).is_complete()
    other = PreprocessConfig(image_size=(12, 12), clip=(0.0, 1.0))
    assert not CacheWriter(tmp_path / "c", ["001", "002", "003"], config=other).is_complete()
    # no temporary files left behind
    assert not [p for p in (tmp_path / "c").rglob("*") if ".tmp" in p.name]


def test_cache_writer_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="case_ids"):
        CacheWriter(tmp_path / "c", [], config=CFG)
    with pytest.raises(ValueError, match="case_ids"):
        CacheWriter(tmp_path / "c", ["a", "a"], config=CFG)
    writer = CacheWriter(tmp_path / "c", ["001"], config=CFG)
    image, label, geom = preprocess_case(_cases()[0], CFG)
    with pytest.raises(ValueError, match="case_id"):
        writer.write_case("zzz", image, label, geom)
    with pytest.raises(ValueError, match="label"):
        writer.write_case("001", image, label[:, :5], geom)


def test_cache_rejects_different_slice_shapes(tmp_path):
    cases = _cases(slices=(2, 2, 2))
    writer = CacheWriter(tmp_path / "c", ["001", "002"], config=CFG)
    writer.write_case("001", *preprocess_case(cases[0], CFG))
    writer.write_case("002", *preprocess_case(cases[1], PreprocessConfig(image_size=(8, 8))))
    with pytest.raises(ValueError, match="shape"):
        writer.finalize()


def test_open_cache_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_cache(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match=r"index\.json"):
        open_cache(tmp_path / "half")
    path = _write(tmp_path / "c", _cases())
    np.save(path / "images.npy", np.zeros((3, 12, 12), np.float32))
    with pytest.raises(ValueError, match=r"images\.npy"):
        open_cache(path)
    index = json.loads((path / "index.json").read_text())
    index["format_version"] = 99
    (path / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="format version"):
        open_cache(path)


def test_cache_rgb(tmp_path):
    rng = np.random.default_rng(0)
    cases = [
        Case(
            f"img{i}",
            rng.integers(0, 256, (8, 16, 3), dtype=np.uint8),
            rng.integers(0, 13, (8, 16), dtype=np.uint8),
            (1.0, 1.0, 1.0),
            is_rgb=True,
        )
        for i in range(3)
    ]
    cfg = PreprocessConfig(percentiles=None, image_size=(8, 16))
    data = open_cache(_write(tmp_path / "c", cases, cfg))
    assert data.images.shape == (3, 3, 8, 16)
    assert data.labels.shape == (3, 8, 16)
    assert data.partition is None
    np.testing.assert_array_equal(data.labels[1], cases[1].label)


def test_cache_path_and_key():
    cfg = PreprocessConfig()
    p = cache_path("out", "acdc", "test", cfg)
    assert p.name == f"test-{cfg.digest()}"
    assert cache_key(cfg, {"a": 1}) == cache_key(cfg, {"a": 1})
    assert cache_key(cfg, {"a": 1}) != cache_key(cfg, {"a": 2})


def test_cache_slice_dataset(tmp_path):
    pytest.importorskip("torch")
    data = open_cache(_write(tmp_path / "c", _cases()))
    ds = data.slice_dataset(num_partitions=2)
    assert len(ds) == 12
    item = ds[4]
    assert item["volume_id"] == 2
    assert item["slice_index"] == 1
    np.testing.assert_array_equal(item["image"].numpy()[0], data.images[4])
