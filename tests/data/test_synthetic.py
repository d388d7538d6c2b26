from __future__ import annotations

import numpy as np
import pytest

from contrastlocal.data._records import Case
from contrastlocal.data.synthetic import (
    PHANTOM_CLASS_NAMES,
    make_cardiac_phantom,
    make_synthetic_dataset,
)


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return make_synthetic_dataset(8, seed=3, shape=(64, 64))


def _slice_areas(label: np.ndarray, value: int | None = None) -> np.ndarray:
    mask = label > 0 if value is None else label == value
    return mask.reshape(-1, label.shape[2]).sum(axis=0)


def test_make_cardiac_phantom_shapes_and_dtypes() -> None:
    case = make_cardiac_phantom(0, shape=(48, 40), num_slices=9, spacing=(1.2, 1.4, 7.0))
    assert isinstance(case, Case)
    assert case.image.shape == (48, 40, 9)
    assert case.label is not None
    assert case.label.shape == (48, 40, 9)
    assert case.image.dtype == np.float32
    assert case.label.dtype == np.uint8
    assert case.spacing == (1.2, 1.4, 7.0)
    np.testing.assert_array_equal(case.affine, np.diag([1.2, 1.4, 7.0, 1.0]))
    assert np.isfinite(case.image).all()
    assert (case.image >= 0).all()  # Rician magnitude
    assert len(case.meta["slice_positions"]) == 9
    assert not case.is_rgb


def test_make_cardiac_phantom_labels_are_acdc_convention(cases: list[Case]) -> None:
    assert PHANTOM_CLASS_NAMES == ("background", "RV", "Myo", "LV")
    for case in cases:
        assert case.label is not None
        assert set(np.unique(case.label).tolist()) == {0, 1, 2, 3}
        # the LV blood pool is brighter than the myocardium on average
        img = case.image
        assert img[case.label == 3].mean() > img[case.label == 2].mean()


def test_make_cardiac_phantom_slice_count_range() -> None:
    counts = {make_cardiac_phantom(s, shape=(32, 32)).image.shape[2] for s in range(40)}
    assert counts <= set(range(8, 15))
    assert len(counts) >= 4


def test_make_cardiac_phantom_areas_shrink_base_to_apex(cases: list[Case]) -> None:
    # per volume: total heart area and LV cavity area are non-increasing base -> apex
    for case in cases:
        assert case.label is not None
        for value in (None, 3, 1):
            area = _slice_areas(case.label, value)
            assert area[0] > area[-1]
            steps = np.diff(area.astype(np.int64))
            assert (steps <= 2).all(), (case.case_id, value, area)
    # on average over volumes, binned by normalised slice position: strictly decreasing
    bins = np.zeros(4)
    counts = np.zeros(4)
    for case in cases:
        assert case.label is not None
        area = _slice_areas(case.label)
        pos = np.asarray(case.meta["slice_positions"])
        idx = np.minimum((pos * 4).astype(int), 3)
        np.add.at(bins, idx, area)
        np.add.at(counts, idx, 1)
    mean = bins / counts
    assert (np.diff(mean) < 0).all(), mean


def test_make_cardiac_phantom_rv_absent_near_apex(cases: list[Case]) -> None:
    for case in cases:
        assert case.label is not None
        rv = _slice_areas(case.label, 1)
        assert rv[0] > 0
        assert rv[-1] == 0
        # once gone, the RV does not come back
        gone = np.flatnonzero(rv == 0)
        assert (rv[gone[0] :] == 0).all()
        # myocardium is still present in the apical slice
        assert _slice_areas(case.label, 2)[-1] > 0


def test_make_cardiac_phantom_rv_touches_septum(cases: list[Case]) -> None:
    from scipy import ndimage

    for case in cases:
        assert case.label is not None
        sl = case.label[..., 0]
        rv_dilated = ndimage.binary_dilation(sl == 1)
        assert (rv_dilated & (sl == 2)).any()  # crescent hugs the myocardium, no gap


def test_make_cardiac_phantom_deterministic_per_seed() -> None:
    a = make_cardiac_phantom(7, shape=(32, 32))
    b = make_cardiac_phantom(np.random.default_rng(7), shape=(32, 32))
    c = make_cardiac_phantom(8, shape=(32, 32))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)


def test_make_synthetic_dataset_volumes_differ(cases: list[Case]) -> None:
    ids = [c.case_id for c in cases]
    assert ids == [f"{i:03d}" for i in range(8)]
    centres = []
    for case in cases:
        assert case.label is not None
        ys, xs = np.nonzero(case.label[..., 0] == 3)
        centres.append((ys.mean(), xs.mean()))
    centres_arr = np.asarray(centres)
    assert centres_arr.std(axis=0).min() > 1.0  # heart position varies (pixels)
    lv_areas = [int((c.label[..., 0] == 3).sum()) for c in cases if c.label is not None]
    assert max(lv_areas) > 1.3 * min(lv_areas)  # heart size varies
    contrasts = [c.meta["params"]["contrast"]["myo"] for c in cases]
    assert np.std(contrasts) > 0.03
    for i in range(len(cases) - 1):
        a, b = cases[i].image, cases[i + 1].image
        assert a.shape != b.shape or not np.allclose(a, b)


def test_make_synthetic_dataset_deterministic_and_prefix_stable() -> None:
    a = make_synthetic_dataset(3, seed=5, shape=(32, 32))
    b = make_synthetic_dataset(2, seed=5, shape=(32, 32))
    c = make_synthetic_dataset(2, seed=6, shape=(32, 32))
    for x, y in zip(a[:2], b, strict=True):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.label, y.label)
    assert not np.array_equal(a[0].label, c[0].label) or a[0].image.shape != c[0].image.shape


def test_make_cardiac_phantom_overrides() -> None:
    clean = make_cardiac_phantom(1, shape=(32, 32), noise_level=0.0, bias_strength=0.0)
    assert clean.meta["params"]["noise_level"] == 0.0
    plain = make_cardiac_phantom(1, shape=(32, 32), distractors=False, num_slices=5)
    assert plain.image.shape == (32, 32, 5)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"shape": (8, 8)}, ValueError, "shape"),
        ({"shape": (32,)}, TypeError, "shape"),
        ({"num_slices": 2}, ValueError, "num_slices"),
        ({"num_slices": 4.0}, TypeError, "num_slices"),
        ({"spacing": (1.0, 0.0, 1.0)}, ValueError, "spacing"),
        ({"spacing": (1.0, 1.0)}, TypeError, "spacing"),
        ({"noise_level": -0.1}, ValueError, "noise_level"),
        ({"bias_strength": float("nan")}, ValueError, "bias_strength"),
    ],
)
def test_make_cardiac_phantom_bad_input(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        make_cardiac_phantom(0, **kwargs)


def test_make_cardiac_phantom_bad_seed() -> None:
    with pytest.raises(TypeError, match="seed_or_rng"):
        make_cardiac_phantom("zero", shape=(32, 32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed_or_rng"):
        make_cardiac_phantom(-1, shape=(32, 32))


def test_make_synthetic_dataset_bad_input() -> None:
    with pytest.raises(ValueError, match="num_volumes"):
        make_synthetic_dataset(0)
    with pytest.raises(ValueError, match="seed"):
        make_synthetic_dataset(1, seed=-3)
    with pytest.raises(ValueError, match="case_id"):
        make_synthetic_dataset(1, case_id="x")
