"""The original splits as data (REFERENCE.md §5.2) and the Cityscapes split."""

from __future__ import annotations

import random

import pytest

from contrastlocal.data.splits import (
    CITYSCAPES_FINETUNE_SIZES,
    SPLITS,
    get_split,
    make_cityscapes_split,
    resolve_split,
)

ACDC_IDS = {f"{i:03d}" for i in range(1, 101)}
# MSD Task05 training cases (DATA.md §1.2)
PROSTATE_TRAIN = {
    f"{i:02d}"
    for i in (
        0,
        1,
        2,
        4,
        6,
        7,
        10,
        13,
        14,
        16,
        17,
        18,
        20,
        21,
        24,
        25,
        28,
        29,
        31,
        32,
        34,
        35,
        37,
        38,
        39,
        40,
        41,
        42,
        43,
        44,
        46,
        47,
    )
}
MMWHS_IDS = {str(i) for i in range(1001, 1021)}
LABELLED = {"acdc": ACDC_IDS, "prostate": PROSTATE_TRAIN, "mmwhs": MMWHS_IDS}


def _expand(spec: str) -> list[str]:
    """'001-003, 012' -> ['001', '002', '003', '012'] (ids as written in REFERENCE.md)."""
    out: list[str] = []
    for part in spec.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-")
            out.extend(f"{i:0{len(a)}d}" for i in range(int(a), int(b) + 1))
        else:
            out.append(part)
    return out


def test_splits_acdc_lists_match_reference():
    s = SPLITS["acdc"]
    pre = (
        "001-006, 012, 017-020, 021-026, 037-040, 041-046, 057-060, 061-066, 072, 077-080, "
        "081-086, 097-100"
    )
    assert sorted(s.pretrain) == sorted(_expand(pre))
    assert len(s.pretrain) == 52
    assert sorted(s.test) == _expand("007-010, 027-030, 047-050, 067-070, 087-090")
    assert s.pretrain_val == tuple(_expand("013, 014, 033, 034, 053, 054, 073, 074, 093, 094"))
    assert [s.finetune[1][c][0] for c in range(1, 6)] == [
        ("002",),
        ("042",),
        ("095",),
        ("022",),
        ("062",),
    ]
    assert s.finetune[2][3] == (("042", "095"), ("031", "072"))
    assert s.finetune[8][2][0] == ("002", "022", "042", "062", "095", "063", "094", "043")
    assert sorted(s.finetune[8]) == [1, 2, 3]


def test_splits_acdc_trall_drops_its_validation_volume():
    train, val = SPLITS["acdc"].trall
    original = _expand("001-006, 011-026, 032-046, 051-066, 072-086, 091-100")
    assert len(original) == 78
    assert "011" not in train
    assert sorted(train) == sorted(set(original) - {"011"})
    assert val == ("011", "071")


def test_splits_prostate_uses_msd_case_numbers_and_fixes_the_comma_bug():
    s = SPLITS["prostate"]
    assert len(s.pretrain) == 17  # "tr22" of the original
    assert s.pretrain[:3] == ("00", "01", "02")
    train, val = s.trall
    assert "00" in train
    assert "01" in train
    assert not any(len(i) != 2 for i in train)
    assert len(train) == 15
    assert val == ("13", "14")
    assert s.finetune[2][2] == (("21", "24"), ("17", "20"))
    assert s.test[0] == "29"
    assert len(s.test) == 15


def test_splits_mmwhs_lists():
    s = SPLITS["mmwhs"]
    assert s.pretrain == tuple(str(i) for i in range(1001, 1011))
    assert s.test == tuple(str(i) for i in range(1011, 1021))
    assert sorted(s.finetune[2]) == [1, 2, 3, 4]
    assert s.finetune[2][4] == (("1010", "1007"), ("1004", "1008"))
    assert s.finetune[1][5] == (("1009",), ("1007", "1002"))
    assert s.trall is None


@pytest.mark.parametrize("dataset", ["acdc", "prostate", "mmwhs"])
def test_splits_are_consistent(dataset):
    s = SPLITS[dataset]
    labelled = LABELLED[dataset]
    assert set(s.all_ids()) <= labelled
    assert not set(s.pretrain) & set(s.test)
    for num, per_comb in s.finetune.items():
        assert sorted(per_comb)[0] == 1
        for train, val in per_comb.values():
            assert len(train) == num
            assert len(set(train)) == num
            assert len(val) == 2
            assert not set(train) & set(val)
            assert not set(train) & set(s.test)
            assert not set(val) & set(s.test)
    if s.trall is not None:
        assert not set(s.trall[0]) & set(s.trall[1])
        assert not set(s.trall[0]) & set(s.test)


def test_get_split_returns_train_and_val():
    assert get_split("acdc", 1, 2) == (("042",), ("031", "072"))
    assert get_split("prostate", 8, 3)[1] == ("25", "28")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("acdc", 4, 1), "num_labelled"),
        (("acdc", 8, 4), "combination"),
        (("mmwhs", 2, 5), "combination"),
        (("brats", 1, 1), "dataset"),
        (("cityscapes", 100, 1), "make_cityscapes_split"),
    ],
)
def test_get_split_rejects_unknown(args, match):
    with pytest.raises(ValueError, match=match):
        get_split(*args)


def test_resolve_split_names():
    assert resolve_split("acdc", "tr2_c1") == ("042", "062")
    assert resolve_split("acdc", "tr2_c1_val") == ("031", "072")
    assert resolve_split("acdc", "test") == SPLITS["acdc"].test
    assert resolve_split("acdc", "trall_val") == ("011", "071")
    assert resolve_split("mmwhs", "pretrain_val") == ("1002", "1005", "1008", "1010")
    assert resolve_split("x", "all", ["b", "a"]) == ("b", "a")


@pytest.mark.parametrize("name", ["tr1", "tr1_c1_train", "trX_c1", "mmwhs_trall", "train"])
def test_resolve_split_rejects_unknown_names(name):
    with pytest.raises(ValueError, match="split"):
        resolve_split("mmwhs" if name == "mmwhs_trall" else "acdc", name.replace("mmwhs_", ""))


def test_resolve_split_reports_missing_cases():
    with pytest.raises(ValueError, match="042"):
        resolve_split("acdc", "tr2_c1", available=["001", "062"])
    with pytest.raises(ValueError, match="available"):
        resolve_split("acdc", "all")


def _city_ids(n):
    cities = ["aachen", "bochum", "frankfurt", "zurich"]
    return [f"{cities[i % 4]}_{i:06d}_000019" for i in range(n)]


def test_cityscapes_split_sizes_and_disjointness():
    ids = _city_ids(3475)
    s = make_cityscapes_split(ids)
    assert len(s.pretrain) == 2770
    assert len(s.test) == 705
    assert set(s.pretrain) | set(s.test) == set(ids)
    assert not set(s.pretrain) & set(s.test)
    for n, (n_tr, n_val) in CITYSCAPES_FINETUNE_SIZES.items():
        assert sorted(s.finetune[n]) == [1, 2, 3, 4, 5]
        for train, val in s.finetune[n].values():
            assert (len(train), len(val)) == (n_tr, n_val)
            assert set(train) <= set(s.pretrain)
            assert set(val) <= set(s.pretrain)
            assert not set(train) & set(val)
    # nested training sets per combination
    for c in range(1, 6):
        assert set(s.finetune[100][c][0]) < set(s.finetune[200][c][0]) < set(s.finetune[400][c][0])
    assert s.finetune[100][1] != s.finetune[100][2]


def test_cityscapes_split_is_deterministic_and_order_free():
    ids = _city_ids(500)
    shuffled = ids[:]
    random.Random(3).shuffle(shuffled)
    a = make_cityscapes_split(ids, seed=7)
    b = make_cityscapes_split(shuffled + ids[:10], seed=7)  # order and duplicates do not matter
    assert a == b
    assert make_cityscapes_split(ids, seed=8).test != a.test
    assert get_split("cityscapes", 100, 1, splits=a) == a.finetune[100][1]


def test_cityscapes_split_small_collection():
    s = make_cityscapes_split(_city_ids(10))
    assert len(s.test) == 2
    assert len(s.pretrain) == 8
    assert s.finetune == {}
    assert resolve_split("cityscapes", "pretrain", _city_ids(10), splits=s) == s.pretrain
    with pytest.raises(ValueError, match="num_labelled"):
        get_split("cityscapes", 100, 1, splits=s)
    with pytest.raises(ValueError, match="image_ids"):
        make_cityscapes_split(["one"])
