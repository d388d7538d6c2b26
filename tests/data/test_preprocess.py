"""Pre-processing steps against loop oracles written from their definitions, and the inverse map."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("scipy")

from contrastlocal.data._records import Case
from contrastlocal.data.preprocess import (
    PREPROCESS_PRESETS,
    Geometry,
    PreprocessConfig,
    crop_or_pad,
    n4_bias_correction,
    normalize_percentiles,
    preprocess_case,
    resample_inplane,
    resampled_size,
    to_native,
)

# ---------------------------------------------------------------------------------------------
# loop oracles
# ---------------------------------------------------------------------------------------------


def _percentile_oracle(values: list[float], q: float) -> float:
    # linear interpolation between closest ranks (numpy's default "linear" method)
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _sample(img: np.ndarray, y: int, x: int) -> float:
    h, w = img.shape
    if 0 <= y < h and 0 <= x < w:
        return float(img[y, x])
    return 0.0


def _resize_oracle(img: np.ndarray, out_h: int, out_w: int, order: int) -> np.ndarray:
    """skimage-style resize of one slice: centre-aligned mapping, zeros outside, no filter."""
    h, w = img.shape
    out = np.zeros((out_h, out_w))
    for oy in range(out_h):
        cy = (oy + 0.5) * h / out_h - 0.5
        for ox in range(out_w):
            cx = (ox + 0.5) * w / out_w - 0.5
            if order == 0:
                out[oy, ox] = _sample(img, math.floor(cy + 0.5), math.floor(cx + 0.5))
            else:
                y0, x0 = math.floor(cy), math.floor(cx)
                fy, fx = cy - y0, cx - x0
                out[oy, ox] = (
                    (1 - fy) * (1 - fx) * _sample(img, y0, x0)
                    + (1 - fy) * fx * _sample(img, y0, x0 + 1)
                    + fy * (1 - fx) * _sample(img, y0 + 1, x0)
                    + fy * fx * _sample(img, y0 + 1, x0 + 1)
                )
    return out


def _crop_pad_oracle(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    h, w = img.shape
    out = np.zeros((out_h, out_w), dtype=img.dtype)
    sy = (h - out_h) // 2 if h >= out_h else -((out_h - h) // 2)
    sx = (w - out_w) // 2 if w >= out_w else -((out_w - w) // 2)
    for y in range(out_h):
        for x in range(out_w):
            if 0 <= y + sy < h and 0 <= x + sx < w:
                out[y, x] = img[y + sy, x + sx]
    return out


def _case(h=20, w=24, z=3, spacing=(1.0, 1.0, 8.0), seed=0, num_classes=4):
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 20, size=(h, w, z))
    label = np.zeros((h, w, z), dtype=np.uint8)
    for k in range(z):
        cy, cx = h // 2 + k, w // 2 - k
        yy, xx = np.mgrid[:h, :w]
        r = np.hypot(yy - cy, xx - cx)
        label[..., k] = np.where(r < 6, 1, 0) + np.where(r < 4, 1, 0) + np.where(r < 2, 1, 0)
    label = np.minimum(label, num_classes - 1).astype(np.uint8)
    return Case("c0", image, label, spacing, affine=np.diag([*spacing, 1.0]))


# ---------------------------------------------------------------------------------------------
# normalize_percentiles
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("percentiles", [(1.0, 99.0), (0.0, 100.0), (5.0, 60.0)])
def test_normalize_percentiles_matches_oracle(percentiles):
    rng = np.random.default_rng(1)
    x = rng.gamma(2.0, 30.0, size=(7, 6, 3))
    flat = x.ravel().tolist()
    lo = _percentile_oracle(flat, percentiles[0])
    hi = _percentile_oracle(flat, percentiles[1])
    expected = (x - lo) / (hi - lo)
    out = normalize_percentiles(x, percentiles)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # not clipped: values beyond the percentiles stay outside [0, 1]
    if percentiles == (1.0, 99.0):
        assert out.min() < 0
        assert out.max() > 1


def test_normalize_percentiles_constant_image_is_zero():
    out = normalize_percentiles(np.full((3, 3, 2), 7.0))
    np.testing.assert_array_equal(out, 0.0)


@pytest.mark.parametrize("bad", [(99.0, 1.0), (-1.0, 50.0), (10.0, 101.0)])
def test_normalize_percentiles_rejects_bad_range(bad):
    with pytest.raises(ValueError, match="percentiles"):
        normalize_percentiles(np.ones(4), bad)


# ---------------------------------------------------------------------------------------------
# resample_inplane
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spacing", "target"),
    [
        ((1.5625, 1.5625), (1.36719, 1.36719)),
        ((0.6, 0.7), (0.625, 0.625)),
        ((1.1, 2.3), (1.5, 1.5)),
    ],
)
def test_resample_inplane_image_matches_oracle(spacing, target):
    rng = np.random.default_rng(2)
    vol = rng.normal(size=(2, 13, 11)).astype(np.float32)
    out = resample_inplane(vol, spacing, target, order=1)
    out_h = round(13 * spacing[0] / target[0])
    out_w = round(11 * spacing[1] / target[1])
    assert out.shape == (2, out_h, out_w)
    assert out.dtype == np.float32
    for z in range(2):
        np.testing.assert_allclose(
            out[z], _resize_oracle(vol[z].astype(np.float64), out_h, out_w, 1), atol=1e-5
        )


@pytest.mark.parametrize(
    ("spacing", "target"), [((1.5625, 1.5625), (1.36719, 1.36719)), ((1.1, 2.3), (1.5, 1.5))]
)
def test_resample_inplane_labels_nearest_matches_oracle(spacing, target):
    rng = np.random.default_rng(3)
    lab = rng.integers(0, 4, size=(2, 13, 11)).astype(np.uint8)
    out = resample_inplane(lab, spacing, target, order=0)
    assert out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, 1, 2, 3}
    for z in range(2):
        expected = _resize_oracle(lab[z].astype(np.float64), *out.shape[1:], 0)
        np.testing.assert_array_equal(out[z], expected)


def test_resample_inplane_identity_when_spacing_equals_target():
    vol = np.random.default_rng(4).normal(size=(3, 9, 7)).astype(np.float32)
    out = resample_inplane(vol, (1.25, 1.25), (1.25, 1.25), order=1)
    np.testing.assert_array_equal(out, vol)


def test_resampled_size_rounds_like_skimage():
    # 256 * 1.5625 / 1.36719 = 292.57 -> 293; np.round is half-to-even: 2.5 -> 2
    assert resampled_size(256, 1.5625, 1.36719) == 293
    assert resampled_size(5, 1.0, 2.0) == 2
    assert resampled_size(1, 1.0, 10.0) == 1


def test_resample_inplane_anti_aliasing_smooths_when_downsampling():
    vol = np.zeros((1, 32, 32), np.float32)
    vol[0, :, ::2] = 1.0  # a pattern that aliases at factor 0.5
    plain = resample_inplane(vol, (1.0, 1.0), (2.0, 2.0), order=1)
    smooth = resample_inplane(vol, (1.0, 1.0), (2.0, 2.0), order=1, anti_aliasing=True)
    assert plain.shape == smooth.shape == (1, 16, 16)
    assert smooth[0, 4:12, 4:12].std() < plain[0, 4:12, 4:12].std() + 1e-6
    assert abs(float(smooth[0, 4:12, 4:12].mean()) - 0.5) < 0.05


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spacing": (0.0, 1.0), "target_spacing": (1.0, 1.0), "order": 1}, "spacing"),
        ({"spacing": (1.0, 1.0), "target_spacing": (1.0, -1.0), "order": 1}, "target_spacing"),
        ({"spacing": (1.0, 1.0), "target_spacing": (1.0, 1.0), "order": 3}, "order"),
    ],
)
def test_resample_inplane_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resample_inplane(np.ones((2, 4, 4)), **kwargs)


# ---------------------------------------------------------------------------------------------
# crop_or_pad
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w"), [(10, 13), (17, 8), (12, 12), (9, 20), (21, 5)])
@pytest.mark.parametrize(("out_h", "out_w"), [(12, 12), (7, 16)])
def test_crop_or_pad_matches_oracle(h, w, out_h, out_w):
    img = np.arange(h * w, dtype=np.int32).reshape(h, w) + 1
    out = crop_or_pad(img[None], (out_h, out_w))[0]
    np.testing.assert_array_equal(out, _crop_pad_oracle(img, out_h, out_w))


def test_crop_or_pad_rejects_bad_size():
    with pytest.raises(ValueError, match="size"):
        crop_or_pad(np.ones((2, 4, 4)), (0, 4))
    with pytest.raises(ValueError, match="volume"):
        crop_or_pad(np.ones(4), (2, 2))


# ---------------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------------


def test_config_digest_is_stable_and_covers_every_field():
    base = PreprocessConfig()
    assert base.digest() == PreprocessConfig().digest()
    assert base.digest() == PreprocessConfig(percentiles=[1, 99]).digest()  # normalised types
    variants = [
        PreprocessConfig(n4="default"),
        PreprocessConfig(percentiles=(2.0, 98.0)),
        PreprocessConfig(percentiles=None),
        PreprocessConfig(clip=(0.0, 1.0)),
        PreprocessConfig(target_spacing=(1.0, 1.0)),
        PreprocessConfig(image_size=(160, 160)),
        PreprocessConfig(anti_aliasing=True),
    ]
    digests = {base.digest(), *(v.digest() for v in variants)}
    assert len(digests) == len(variants) + 1
    assert PreprocessConfig.from_dict(variants[3].to_dict()) == variants[3]
    assert hash(base) == hash(PreprocessConfig())


def test_config_presets_match_the_original():
    assert PREPROCESS_PRESETS["acdc"].target_spacing == (1.36719, 1.36719)
    assert PREPROCESS_PRESETS["acdc"].image_size == (192, 192)
    assert PREPROCESS_PRESETS["prostate"].target_spacing == (0.625, 0.625)
    assert PREPROCESS_PRESETS["mmwhs"].image_size == (160, 160)
    assert PREPROCESS_PRESETS["mmwhs"].target_spacing == (1.5, 1.5)
    assert PREPROCESS_PRESETS["cityscapes"].image_size == (256, 512)
    assert PREPROCESS_PRESETS["cityscapes"].target_spacing is None
    assert all(not c.anti_aliasing and c.clip is None for c in PREPROCESS_PRESETS.values())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n4": "fast"}, "n4"),
        ({"percentiles": (50.0, 10.0)}, "percentiles"),
        ({"clip": (1.0, 0.0)}, "clip"),
        ({"target_spacing": (0.0, 1.0)}, "target_spacing"),
        ({"image_size": (0, 4)}, "image_size"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PreprocessConfig(**kwargs)


# ---------------------------------------------------------------------------------------------
# preprocess_case and to_native
# ---------------------------------------------------------------------------------------------


def test_preprocess_case_steps_in_order():
    case = _case(h=20, w=24, z=3, spacing=(1.5, 1.2, 8.0))
    cfg = PreprocessConfig(target_spacing=(1.0, 1.0), image_size=(32, 32))
    image, label, geom = preprocess_case(case, cfg)
    # the same pipeline spelled out with the public steps
    norm = normalize_percentiles(case.image, (1.0, 99.0)).transpose(2, 0, 1)
    res = resample_inplane(norm, (1.5, 1.2), (1.0, 1.0), order=1)
    expected = crop_or_pad(res, (32, 32))
    np.testing.assert_allclose(image, expected, rtol=0, atol=0)
    lab = crop_or_pad(
        resample_inplane(case.label.transpose(2, 0, 1), (1.5, 1.2), (1.0, 1.0), order=0),
        (32, 32),
    )
    np.testing.assert_array_equal(label, lab)
    assert image.dtype == np.float32
    assert label.dtype == np.uint8
    assert image.shape == label.shape == (3, 32, 32)
    assert geom.native_shape == (20, 24, 3)
    assert geom.native_spacing == (1.5, 1.2, 8.0)
    assert geom.resampled_shape == (30, 29)
    assert geom.crop_offsets == (-1, -1)
    np.testing.assert_array_equal(geom.affine_matrix(), case.affine)
    assert geom.num_slices == 3


@pytest.mark.parametrize("image_size", [(32, 40), (20, 24), (26, 24)])
def test_to_native_is_exact_without_crop_and_resampling(image_size):
    case = _case(h=20, w=24, z=4, spacing=(1.36719, 1.36719, 10.0))
    cfg = PreprocessConfig(target_spacing=(1.36719, 1.36719), image_size=image_size)
    _, label, geom = preprocess_case(case, cfg)
    np.testing.assert_array_equal(to_native(label, geom), case.label)
    # probabilities: one-hot, order-1 resize, argmax -> the same labels
    onehot = np.eye(4, dtype=np.float32)[label].transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(to_native(onehot, geom), case.label)


def test_to_native_is_approximate_with_resampling():
    case = _case(h=40, w=44, z=2, spacing=(1.5625, 1.5625, 10.0))
    cfg = PreprocessConfig(target_spacing=(1.36719, 1.36719), image_size=(64, 64))
    _, label, geom = preprocess_case(case, cfg)
    assert geom.resampled_shape == (46, 50)
    back = to_native(label, geom)
    assert back.shape == case.label.shape
    agree = float(np.mean(back == case.label))
    assert agree > 0.97
    for k in (1, 2, 3):
        a, b = back == k, case.label == k
        dice = 2 * np.sum(a & b) / (np.sum(a) + np.sum(b))
        assert dice > 0.8


def test_to_native_cropped_region_becomes_background():
    case = _case(h=20, w=24, z=2, spacing=(1.0, 1.0, 5.0))
    lab = np.full((20, 24, 2), 3, dtype=np.uint8)
    case = Case("c", case.image, lab, case.spacing)
    _, label, geom = preprocess_case(case, PreprocessConfig(image_size=(10, 12)))
    assert geom.crop_offsets == (5, 6)
    back = to_native(label, geom)
    expected = np.zeros_like(lab)
    expected[5:15, 6:18] = 3
    np.testing.assert_array_equal(back, expected)


def test_preprocess_case_rgb():
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, size=(16, 24, 3), dtype=np.uint8)
    lab = rng.integers(0, 13, size=(16, 24), dtype=np.uint8)
    case = Case("aachen_000000_000019", img, lab, (1.0, 1.0, 1.0), is_rgb=True)
    cfg = PREPROCESS_PRESETS["cityscapes"]
    cfg = PreprocessConfig(percentiles=None, image_size=(16, 24))
    image, label, geom = preprocess_case(case, cfg)
    assert image.shape == (1, 3, 16, 24)
    assert label.shape == (1, 16, 24)
    np.testing.assert_allclose(image[0], img.transpose(2, 0, 1) / 255.0, rtol=1e-6)
    assert geom.is_rgb
    assert geom.num_slices == 1
    assert geom.native_shape == (16, 24)
    np.testing.assert_array_equal(to_native(label, geom), lab)
    scores = np.eye(13, dtype=np.float32)[label].transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(to_native(scores, geom), lab)


def test_preprocess_case_without_label_and_with_clip():
    case = _case()
    case = Case("u", case.image, None, case.spacing)
    image, label, _ = preprocess_case(case, PreprocessConfig(clip=(0.0, 1.0), image_size=(8, 8)))
    assert label is None
    assert image.min() >= 0.0
    assert image.max() <= 1.0


def test_preprocess_case_rejects_label_shape_mismatch():
    case = _case()
    bad = Case("p007", case.image, case.label[:, :, :2], case.spacing)
    with pytest.raises(ValueError, match=r"label.*p007"):
        preprocess_case(bad)


def test_preprocess_case_rejects_bad_spacing_and_ndim():
    case = _case()
    with pytest.raises(ValueError, match="spacing"):
        preprocess_case(Case("s", case.image, case.label, (1.0, 0.0, 1.0)))
    with pytest.raises(ValueError, match="image"):
        preprocess_case(Case("s", case.image[..., 0], None, (1.0, 1.0, 1.0)))


def test_to_native_rejects_mismatched_prediction():
    case = _case()
    _, label, geom = preprocess_case(case, PreprocessConfig(image_size=(16, 16)))
    with pytest.raises(ValueError, match="prediction"):
        to_native(label[:, :8], geom)
    with pytest.raises(ValueError, match="prediction"):
        to_native(label[:2], geom)


def test_geometry_round_trips_through_dict():
    case = _case()
    _, _, geom = preprocess_case(case, PreprocessConfig(image_size=(16, 16)))
    again = Geometry.from_dict(geom.to_dict())
    assert again == geom


# ---------------------------------------------------------------------------------------------
# N4 (tiny volumes only)
# ---------------------------------------------------------------------------------------------


def _biased_volume(h=40, w=40, z=2, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    body = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (0.4 * h) ** 2
    truth = np.where(body, 100.0, 2.0)[..., None].repeat(z, 2)
    bias = np.exp(0.3 * (yy - h / 2) / h * 2 + 0.2 * (xx - w / 2) / w * 2)[..., None]
    observed = np.abs(truth * bias + rng.normal(0, 1, (h, w, z)))
    return observed, body[..., None].repeat(z, 2)


def _cv(x, mask):
    v = x[mask]
    return float(v.std() / v.mean())


def test_n4_default_removes_bias_on_tiny_volume():
    pytest.importorskip("SimpleITK")
    observed, mask = _biased_volume()
    out = n4_bias_correction(observed, (1.5, 1.5, 8.0))
    assert out.shape == observed.shape
    assert out.dtype == np.float32
    assert _cv(observed, mask) > 0.1
    assert _cv(out, mask) < 0.5 * _cv(observed, mask)


def test_n4_legacy_removes_bias_on_tiny_volume():
    pytest.importorskip("SimpleITK")
    observed, mask = _biased_volume(24, 24, 2, seed=1)
    out = n4_bias_correction(observed, (1.5, 1.5, 8.0), preset="legacy")
    assert _cv(out, mask) < 0.5 * _cv(observed, mask)


def test_n4_runs_inside_preprocess_case():
    pytest.importorskip("SimpleITK")
    observed, _ = _biased_volume(32, 32, 2, seed=2)
    case = Case("n", observed, None, (1.5, 1.5, 8.0))
    with_n4, _, _ = preprocess_case(case, PreprocessConfig(n4="default", image_size=(32, 32)))
    without, _, _ = preprocess_case(case, PreprocessConfig(image_size=(32, 32)))
    assert with_n4.shape == without.shape
    assert not np.allclose(with_n4, without)


def test_n4_rejects_bad_input():
    pytest.importorskip("SimpleITK")
    with pytest.raises(ValueError, match="image"):
        n4_bias_correction(np.ones((4, 4)), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="preset"):
        n4_bias_correction(np.ones((4, 4, 2)), (1.0, 1.0, 1.0), preset="fast")  # type: ignore[arg-type]
