import json
import math

import numpy as np
import pytest

from contrastlocal.training import (
    DICE_DEFINITIONS,
    dice_counts,
    dice_over_images,
    dice_per_class,
    hd95_per_class,
    surface_distances,
)


def test_dice_per_class_hand_computed_with_absent_class():
    # class 2 is absent from both (policy: Dice 1), class 3 only in the target (Dice 0)
    target = np.array([[0, 0, 0, 0], [1, 1, 1, 3]])
    pred = np.array([[0, 0, 0, 1], [1, 0, 0, 1]])
    # recount by hand: pred 0 at (0,0),(0,1),(0,2),(1,1),(1,2) = 5; target 0 at 4 cells
    # overlap 0: (0,0),(0,1),(0,2) = 3 -> 6/9
    # pred 1 at (0,3),(1,0),(1,3) = 3; target 1 at (1,0),(1,1),(1,2) = 3; overlap (1,0) = 1 -> 2/6
    dice = dice_per_class(pred, target, 4)
    np.testing.assert_allclose(dice, [6 / 9, 2 / 6, 1.0, 0.0])


def test_dice_per_class_empty_prediction():
    target = np.zeros((2, 3, 3), np.uint8)
    target[1, 1, 1] = 2
    pred = np.zeros_like(target)
    dice = dice_per_class(pred, target, 3)
    assert dice[2] == 0.0
    assert dice[1] == 1.0  # absent from both
    np.testing.assert_allclose(dice[0], 2 * 17 / (18 + 17))


def test_hd95_single_voxels_uses_spacing():
    a = np.zeros((3, 4, 5), bool)
    b = np.zeros((3, 4, 5), bool)
    a[0, 0, 0] = True
    b[2, 3, 4] = True
    d_ab, d_ba = surface_distances(a, b, (2.0, 1.0, 0.5))
    expected = math.sqrt((2 * 2.0) ** 2 + 3.0**2 + (4 * 0.5) ** 2)
    np.testing.assert_allclose(d_ab, [expected])
    np.testing.assert_allclose(d_ba, [expected])


def test_hd95_shifted_square_hand_computed():
    # target: 3x3 square; pred: same square shifted by 2 columns (spacing 1.5 mm)
    t = np.zeros((1, 8, 8), np.uint8)
    t[0, 2:5, 1:4] = 1
    p = np.zeros_like(t)
    p[0, 2:5, 3:6] = 1
    # surface of a 3x3 square = its 8 border voxels. From pred to target: columns 3 (in
    # target's surface, d=0: 3 voxels), column 4 (middle row (3,4) and rows 2,4): nearest target
    # surface voxel is 1 column away (d=1.5), column 5: 2 columns away (d=3.0). Border of pred:
    # col3: 3 voxels d=0; col4: rows 2 and 4 (2 voxels) d=1.5; col5: 3 voxels d=3.0.
    d = np.array([0, 0, 0, 1.5, 1.5, 3.0, 3.0, 3.0])
    expected = float(np.percentile(d, 95))
    hd = hd95_per_class(p, t, 2, (1.0, 1.0, 1.5))
    assert math.isnan(hd[0])
    np.testing.assert_allclose(hd[1], expected)


def test_hd95_empty_mask_policy():
    t = np.zeros((2, 4, 6), np.uint8)
    t[0, 1, 1] = 1
    p = np.zeros_like(t)
    hd = hd95_per_class(p, t, 3, (5.0, 1.0, 2.0), include_background=True)
    diagonal = math.sqrt(10.0**2 + 4.0**2 + 12.0**2)
    np.testing.assert_allclose(hd[1], diagonal)  # exactly one empty -> image diagonal in mm
    assert hd[2] == 0.0  # both empty -> 0
    assert hd[0] >= 0.0


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        dice_per_class(np.zeros((2, 2), int), np.zeros((2, 3), int), 2)
    with pytest.raises(TypeError, match="pred"):
        dice_per_class(np.zeros((2, 2)), np.zeros((2, 2), int), 2)
    with pytest.raises(ValueError, match="spacing"):
        hd95_per_class(np.zeros((2, 2), int), np.zeros((2, 2), int), 2, (1.0,))


# ---- Dice over a test set of images (Cityscapes): absent-from-both classes are not a perfect 1 --


def _two_images():
    # image 0: class 1 -> P 3, T 2, I 2; class 2 absent from both; class 3 -> P 1, T 0, I 0
    # image 1: class 1 -> P 1, T 2, I 1; class 2 -> P 2, T 1, I 1; class 3 absent from both
    preds = [np.array([[0, 1], [1, 1], [3, 0]]), np.array([2, 2, 1, 0])]
    targets = [np.array([[0, 1], [1, 0], [0, 0]]), np.array([2, 0, 1, 1])]
    return preds, targets


def test_dice_counts_hand_computed():
    preds, targets = _two_images()
    inter, p_size, t_size = dice_counts(preds[0], targets[0], 4)
    assert inter.tolist() == [2, 2, 0, 0]
    assert p_size.tolist() == [2, 3, 0, 1]
    assert t_size.tolist() == [4, 2, 0, 0]


def test_dice_per_class_absent_nan_leaves_the_class_unscored():
    preds, targets = _two_images()
    dice = dice_per_class(preds[0], targets[0], 4, absent=np.nan)
    np.testing.assert_allclose(dice, [4 / 6, 4 / 5, np.nan, 0.0])
    # the default keeps the per-volume policy of the medical tables (absent from both -> 1)
    assert dice_per_class(preds[0], targets[0], 4)[2] == 1.0


def test_dice_over_images_per_image_hand_computed():
    preds, targets = _two_images()
    result = dice_over_images(preds, targets, 4)
    assert result.definition == "per_image"
    assert result.description == DICE_DEFINITIONS["per_image"]
    # image 0: classes 1 (4/5) and 3 (0) present, class 2 skipped -> 0.4
    # image 1: classes 1 (2/3) and 2 (2/3) present, class 3 skipped -> 2/3
    np.testing.assert_allclose(result.per_image, [0.4, 2 / 3])
    np.testing.assert_allclose(result.mean, (0.4 + 2 / 3) / 2)
    # per class: mean over the images where the class is present (background of image 1:
    # P 1 at index 3, T 1 at index 1, I 0 -> 0)
    np.testing.assert_allclose(result.per_class, [(4 / 6 + 0.0) / 2, (4 / 5 + 2 / 3) / 2,
                                                  2 / 3, 0.0])
    # counting absent-from-both as 1 (the per-volume policy) would have given more
    inflated = np.mean([dice_per_class(p, t, 4)[1:].mean() for p, t in zip(preds, targets,
                                                                            strict=True)])
    np.testing.assert_allclose(inflated, ((0.8 + 1 + 0) / 3 + (2 / 3 + 2 / 3 + 1) / 3) / 2)
    assert inflated > result.mean


def test_dice_over_images_pooled_hand_computed():
    preds, targets = _two_images()
    result = dice_over_images(preds, targets, 4, definition="pooled")
    assert result.definition == "pooled"
    assert result.per_image is None
    # class 1: I 2 + 1, P 3 + 1, T 2 + 2 -> 6 / 8; class 2: I 1, P 2, T 1 -> 2 / 3;
    # class 3: I 0, P 1, T 0 -> 0; background: I 2 + 0, P 2 + 1, T 4 + 1 -> 4 / 8
    np.testing.assert_allclose(result.per_class, [4 / 8, 6 / 8, 2 / 3, 0.0])
    np.testing.assert_allclose(result.mean, (6 / 8 + 2 / 3 + 0.0) / 3)


def test_dice_over_images_class_never_present_is_skipped():
    preds = [np.array([0, 1, 1]), np.array([1, 0, 0])]
    targets = [np.array([0, 1, 0]), np.array([1, 0, 0])]
    for definition in ("per_image", "pooled"):
        result = dice_over_images(preds, targets, 3, definition=definition)
        assert np.isnan(result.per_class[2])
    per_image = dice_over_images(preds, targets, 3)
    np.testing.assert_allclose(per_image.per_image, [2 / 3, 1.0])
    np.testing.assert_allclose(per_image.mean, (2 / 3 + 1.0) / 2)
    pooled = dice_over_images(preds, targets, 3, definition="pooled")
    np.testing.assert_allclose(pooled.mean, 2 * 2 / (3 + 2))


def test_dice_over_images_image_without_foreground_is_skipped():
    preds = [np.zeros(4, np.int64), np.array([1, 1, 0, 0])]
    targets = [np.zeros(4, np.int64), np.array([1, 0, 0, 0])]
    result = dice_over_images(np.stack(preds), np.stack(targets), 2)
    assert np.isnan(result.per_image[0])
    np.testing.assert_allclose(result.mean, 2 / 3)
    meta = result.metadata()
    assert meta["dice_definition"] == "per_image"
    assert meta["dice_mean"] == pytest.approx(2 / 3)
    assert json.loads(json.dumps(meta)) == meta


@pytest.mark.parametrize(("args", "kwargs", "error", "match"), [
    (([np.zeros(2, int)], [np.zeros(2, int)], 2), {"definition": "mean"}, ValueError,
     r"`definition`.*'per_image', 'pooled'.*got 'mean'"),
    (([np.zeros(2, int)], [], 2), {}, ValueError, r"1 predictions and 0 targets"),
    (([], [], 2), {}, ValueError, r"at least one test image"),
    (([np.zeros(2, int)], [np.zeros(3, int)], 2), {}, ValueError, r"same shape"),
    (([np.zeros(2)], [np.zeros(2, int)], 2), {}, TypeError, r"`pred`.*integer"),
])
def test_dice_over_images_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        dice_over_images(*args, **kwargs)
