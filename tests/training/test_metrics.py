import math

import numpy as np
import pytest

from contrastlocal.training import dice_per_class, hd95_per_class, surface_distances


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
