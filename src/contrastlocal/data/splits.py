"""The data splits of the original experiments, as data (the authors' code).

For ACDC, the Medical Segmentation Decathlon prostate task and MM-WHS (MR) the lists are the
original's (``experiment_init/data_cfg_*.py`` of the authors' code), with ids in the form the
readers use: ACDC ``"001"``…``"100"`` (``patientNNN``), prostate ``"00"``…``"47"`` (MSD
``prostate_NN``; the original wrote the same case numbers with three digits, ``"000"``…``"047"``,
so ``"016"`` is ``prostate_16``), MM-WHS ``"1001"``…``"1020"`` (``mr_train_10NN``).

Bugs of the original lists, fixed here:

* prostate ``trall``: a missing comma fused ``"000" "001"`` into the single id ``"000001"``;
  here both ``"00"`` and ``"01"`` are listed (15 ids);
* ACDC ``trall`` contained ``"011"``, which is also its validation volume; it is removed here
  (77 training ids);
* the prostate pre-training list is called ``tr22`` but holds 17 ids; it is kept as is (the 17 are
  all labelled training cases outside the test list).

Cityscapes has no published split for this method; :func:`make_cityscapes_split` defines a
deterministic one from the list of image ids found.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "CITYSCAPES_FINETUNE_SIZES",
    "SPLITS",
    "DatasetSplits",
    "auto_splits",
    "get_split",
    "make_cityscapes_split",
    "resolve_split",
]

IdList = tuple[str, ...]
TrainVal = tuple[IdList, IdList]


@dataclass(frozen=True)
class DatasetSplits:
    """The splits of one dataset.

    Parameters
    ----------
    pretrain : tuple of str
        Unlabelled pre-training volumes.
    test : tuple of str
        Test volumes.
    finetune : mapping int -> (mapping int -> (tuple of str, tuple of str))
        ``finetune[num_labelled][combination] = (train_ids, validation_ids)``.
    pretrain_val : tuple of str
        The original's validation list of the pre-training set (unused by its scripts).
    trall : (tuple of str, tuple of str) or None
        The "all labelled" benchmark (train ids, validation ids), where the original has one.
    notes : mapping of str to str
        Free-text remarks on the lists (e.g. the original's bugs fixed here).

    Examples
    --------
    >>> SPLITS["acdc"].finetune[1][1]
    (('002',), ('011', '071'))
    """

    pretrain: IdList
    test: IdList
    finetune: Mapping[int, Mapping[int, TrainVal]]
    pretrain_val: IdList = ()
    trall: TrainVal | None = None
    notes: Mapping[str, str] = field(default_factory=dict)

    def all_ids(self) -> tuple[str, ...]:
        """Return every id mentioned by any split, sorted.

        Returns
        -------
        tuple of str
            Sorted unique ids.

        Examples
        --------
        >>> len(SPLITS["mmwhs"].all_ids())
        20
        """
        ids: set[str] = set(self.pretrain) | set(self.test) | set(self.pretrain_val)
        for per_comb in self.finetune.values():
            for tr, va in per_comb.values():
                ids |= set(tr) | set(va)
        if self.trall is not None:
            ids |= set(self.trall[0]) | set(self.trall[1])
        return tuple(sorted(ids))


def _r(a: int, b: int, width: int = 3) -> list[str]:
    return [f"{i:0{width}d}" for i in range(a, b + 1)]


def _ids(*items: str | list[str], width: int = 3) -> IdList:
    out: list[str] = []
    for it in items:
        out.extend(it.split() if isinstance(it, str) else it)  # "001 002" -> two ids
    return tuple(f"{int(i):0{width}d}" for i in out)


def _p(*ids: str) -> IdList:
    # original three-digit prostate ids -> MSD two-digit case numbers
    return _ids(*ids, width=2)


_ACDC = DatasetSplits(
    pretrain=_ids(
        _r(1, 6),
        "012",
        _r(17, 20),
        _r(21, 26),
        _r(37, 40),
        _r(41, 46),
        _r(57, 60),
        _r(61, 66),
        "072",
        _r(77, 80),
        _r(81, 86),
        _r(97, 100),
    ),
    pretrain_val=_ids("013", "014", "033", "034", "053", "054", "073", "074", "093", "094"),
    test=_ids(_r(7, 10), _r(27, 30), _r(47, 50), _r(67, 70), _r(87, 90)),
    finetune={
        1: {
            1: (_ids("002"), _ids("011", "071")),
            2: (_ids("042"), _ids("031", "072")),
            3: (_ids("095"), _ids("011", "071")),
            4: (_ids("022"), _ids("011", "071")),
            5: (_ids("062"), _ids("011", "071")),
        },
        2: {
            1: (_ids("042", "062"), _ids("031", "072")),
            2: (_ids("002", "042"), _ids("011", "071")),
            3: (_ids("042", "095"), _ids("031", "072")),
            4: (_ids("002", "022"), _ids("011", "071")),
            5: (_ids("002", "095"), _ids("011", "071")),
        },
        8: {
            1: (
                _ids("002", "022", "042", "062", "095", "003", "023", "043"),
                _ids("011", "071"),
            ),
            2: (
                _ids("002", "022", "042", "062", "095", "063", "094", "043"),
                _ids("031", "072"),
            ),
            3: (
                _ids("002", "022", "042", "062", "095", "003", "094", "023"),
                _ids("011", "071"),
            ),
        },
    },
    # original: 001-006, 011-026, 032-046, 051-066, 072-086, 091-100 (78 ids, 011 included
    # although it is the validation volume) -> 011 removed
    trall=(
        _ids(_r(1, 6), _r(12, 26), _r(32, 46), _r(51, 66), _r(72, 86), _r(91, 100)),
        _ids("011", "071"),
    ),
    notes={"trall": "'011' removed from the training list (it is the validation volume)."},
)

_PROSTATE = DatasetSplits(
    pretrain=_p("000 001 002 004 006 007 010 013 014 016 017 018 020 021 024 025 028"),
    pretrain_val=_p("013", "014", "020", "028"),
    test=_p("029 031 032 034 035 037 038 039 040 041 042 043 044 046 047"),
    finetune={
        1: {
            1: (_p("001"), _p("013", "014")),
            2: (_p("002"), _p("017", "020")),
            3: (_p("006"), _p("025", "028")),
            4: (_p("000"), _p("013", "014")),
            5: (_p("004"), _p("025", "028")),
        },
        2: {
            1: (_p("000", "001"), _p("013", "014")),
            2: (_p("021", "024"), _p("017", "020")),
            3: (_p("001", "002"), _p("025", "028")),
            4: (_p("004", "010"), _p("013", "014")),
            5: (_p("000", "007"), _p("025", "028")),
        },
        8: {
            1: (_p("000", "001", "002", "004", "006", "007", "010", "016"), _p("013", "014")),
            2: (_p("002", "004", "006", "007", "010", "016", "021", "018"), _p("017", "020")),
            3: (_p("000", "001", "006", "007", "010", "017", "018", "024"), _p("025", "028")),
        },
    },
    # original list has "000" "001" fused by a missing comma -> both listed
    trall=(
        _p("000 001 002 004 006 007 010 016 017 018 020 021 024 025 028"),
        _p("013", "014"),
    ),
    notes={
        "trall": "missing comma fixed: '000001' is '00' and '01'.",
        "pretrain": "called tr22 in the original, holds 17 ids.",
    },
)


def _m(*ids: int) -> IdList:
    return tuple(str(i) for i in ids)


_MMWHS = DatasetSplits(
    pretrain=_m(*range(1001, 1011)),
    pretrain_val=_m(1002, 1005, 1008, 1010),
    test=_m(*range(1011, 1021)),
    finetune={
        1: {
            1: (_m(1003), _m(1002, 1005)),
            2: (_m(1006), _m(1001, 1008)),
            3: (_m(1008), _m(1007, 1002)),
            4: (_m(1001), _m(1002, 1005)),
            5: (_m(1009), _m(1007, 1002)),
        },
        2: {
            1: (_m(1001, 1003), _m(1002, 1005)),
            2: (_m(1009, 1008), _m(1007, 1002)),
            3: (_m(1006, 1002), _m(1001, 1008)),
            4: (_m(1010, 1007), _m(1004, 1008)),
        },
        8: {
            1: (_m(1001, 1003, 1004, 1006, 1007, 1008, 1009, 1010), _m(1002, 1005)),
            2: (_m(1002, 1003, 1004, 1005, 1006, 1007, 1009, 1010), _m(1001, 1008)),
            3: (_m(1001, 1003, 1004, 1005, 1006, 1008, 1009, 1010), _m(1007, 1002)),
        },
    },
    trall=None,
    notes={"trall": "none in the original (its tr8 lists serve as the benchmark)."},
)

#: The original's splits per dataset (see the module docstring for id conventions and fixes).
SPLITS: dict[str, DatasetSplits] = {"acdc": _ACDC, "prostate": _PROSTATE, "mmwhs": _MMWHS}

#: ``(num_train, num_val)`` of the Cityscapes fine-tuning sets, keyed by ``num_train``.
CITYSCAPES_FINETUNE_SIZES: dict[int, tuple[int, int]] = {
    100: (100, 100),
    200: (200, 200),
    400: (400, 200),
}

# the full Cityscapes train + val image count and its pre-training/test sizes
_CITYSCAPES_TOTAL = 3475
_CITYSCAPES_TEST = 705
_CITYSCAPES_VAL_POOL = 200


def make_cityscapes_split(
    image_ids: Iterable[str], *, seed: int = 0, num_combinations: int = 5
) -> DatasetSplits:
    """Deterministic Cityscapes split: pre-training / test images and fine-tuning sets.

    Parameters
    ----------
    image_ids : iterable of str
        Ids of every fine-annotated training + validation image found (3475 in the full release).
    seed : int
        Seed of the permutations.
    num_combinations : int
        Number of fine-tuning combinations (different random draws) per set size.

    Returns
    -------
    DatasetSplits
        ``pretrain`` (2770 of 3475) and ``test`` (705); ``finetune[n][c] = (train, val)`` for
        ``(n, n_val)`` in :data:`CITYSCAPES_FINETUNE_SIZES`, drawn from the pre-training part;
        ``trall`` = the fully supervised benchmark (Table 8's last row): every pre-training image
        outside combination 1's validation pool for training, that pool for validation.

    Raises
    ------
    ValueError
        If fewer than 2 unique ids are given, or `num_combinations` < 1.

    Notes
    -----
    The ids are sorted and de-duplicated, then permuted with ``default_rng(seed)``; the last
    ``num_test`` of the permutation are the test set, where ``num_test = 705`` for the full 3475
    images and ``round(705 / 3475 * n)`` (at least 1) otherwise. For combination ``c``, the
    pre-training ids are permuted with ``default_rng([seed, c])``: the first 200 form the
    validation pool, the rest the training pool; a set ``(n, n_val)`` takes the first ``n`` of the
    training pool and the first ``n_val`` of the validation pool (so the 100-image set is inside
    the 200-image set, which is inside the 400-image set). Sizes that do not fit (small
    collections) are left out. The result depends only on the set of ids and the seed.

    Examples
    --------
    >>> ids = [f"city_{i:06d}_000019" for i in range(3475)]
    >>> s = make_cityscapes_split(ids)
    >>> len(s.pretrain), len(s.test), [len(v) for v in s.finetune[400][1]]
    (2770, 705, [400, 200])
    >>> [len(v) for v in s.trall]
    [2570, 200]
    """
    ids = sorted(set(image_ids))
    n = len(ids)
    if n < 2:
        msg = f"`image_ids` must hold at least 2 unique ids; got {n}."
        raise ValueError(msg)
    if num_combinations < 1:
        msg = f"`num_combinations` must be >= 1; got {num_combinations}."
        raise ValueError(msg)
    num_test = (
        _CITYSCAPES_TEST
        if n == _CITYSCAPES_TOTAL
        else min(n - 1, max(1, round(_CITYSCAPES_TEST / _CITYSCAPES_TOTAL * n)))
    )
    perm = np.random.default_rng(seed).permutation(n)
    pretrain = tuple(sorted(ids[i] for i in perm[: n - num_test]))
    test = tuple(sorted(ids[i] for i in perm[n - num_test :]))
    finetune: dict[int, dict[int, TrainVal]] = {}
    val_pool_size = min(_CITYSCAPES_VAL_POOL, len(pretrain) // 2)
    trall: TrainVal | None = None
    for comb in range(1, num_combinations + 1):
        p = np.random.default_rng([seed, comb]).permutation(len(pretrain))
        val_pool = [pretrain[i] for i in p[:val_pool_size]]
        train_pool = [pretrain[i] for i in p[val_pool_size:]]
        if comb == 1 and val_pool and train_pool:
            trall = (tuple(sorted(train_pool)), tuple(sorted(val_pool)))
        for n_train, (_, n_val) in CITYSCAPES_FINETUNE_SIZES.items():
            if n_train <= len(train_pool) and n_val <= len(val_pool):
                finetune.setdefault(n_train, {})[comb] = (
                    tuple(train_pool[:n_train]),
                    tuple(val_pool[:n_val]),
                )
    return DatasetSplits(pretrain=pretrain, test=test, finetune=finetune, trall=trall)


def auto_splits(case_ids: Iterable[str], num_labelled: Sequence[int]) -> DatasetSplits:
    """Split the cases found in a small folder (fixtures, subsets of a release).

    Parameters
    ----------
    case_ids : iterable of str
        The ids found (at least 3: training, validation and test need one each).
    num_labelled : sequence of int
        |X_tr| values wanted; sizes larger than the training pool are left out.

    Returns
    -------
    DatasetSplits
        The last ``max(1, n // 5)`` sorted ids are the test set, the 1 (fewer than 10 cases) or
        2 before them the validation set, the rest the training pool; every id but the test
        ones is pre-trained on. |X_tr| = k gets ``min(5, max(1, pool // k))`` combinations,
        combination c taking ``k`` consecutive pool ids from ``c * k`` (wrapping around).

    Raises
    ------
    ValueError
        If fewer than 3 cases are given.

    Examples
    --------
    >>> s = auto_splits([f"{i:03d}" for i in range(1, 6)], [1, 2])
    >>> s.test, s.pretrain, s.finetune[2][1]
    (('005',), ('001', '002', '003', '004'), (('001', '002'), ('004',)))
    """
    ids = sorted(case_ids)
    n = len(ids)
    if n < 3:
        msg = f"automatic splits need at least 3 cases (train, validation, test); found {n}."
        raise ValueError(msg)
    num_test = max(1, n // 5)
    num_val = 1 if n < 10 else 2
    test = tuple(ids[n - num_test :])
    val = tuple(ids[n - num_test - num_val : n - num_test])
    pool = ids[: n - num_test - num_val]
    finetune: dict[int, dict[int, TrainVal]] = {}
    for k in num_labelled:
        if k > len(pool):
            continue
        combos = min(5, max(1, len(pool) // k))
        finetune[k] = {c + 1: (tuple((pool * 2)[c * k : c * k + k]), val) for c in range(combos)}
    return DatasetSplits(pretrain=tuple(ids[: n - num_test]), test=test, finetune=finetune)


def _splits_for(dataset: str, splits: DatasetSplits | None) -> DatasetSplits:
    if splits is not None:
        return splits
    if dataset not in SPLITS:
        hint = (
            " (Cityscapes splits depend on the images found: build them with "
            "`make_cityscapes_split(ids)` and pass `splits=`)"
            if dataset == "cityscapes"
            else ""
        )
        msg = f"`dataset` must be one of {sorted(SPLITS)}; got {dataset!r}{hint}."
        raise ValueError(msg)
    return SPLITS[dataset]


def get_split(
    dataset: str,
    num_labelled: int,
    combination: int,
    *,
    splits: DatasetSplits | None = None,
) -> TrainVal:
    """Return the (train ids, validation ids) of one fine-tuning set.

    Parameters
    ----------
    dataset : {"acdc", "prostate", "mmwhs"}
        Dataset name (ignored when `splits` is given).
    num_labelled : int
        ``|X_tr|``, the number of labelled training volumes (1, 2 or 8; Cityscapes 100, 200, 400).
    combination : int
        Which combination, 1-based (``c1`` … ``c5``).
    splits : DatasetSplits, optional
        Use these splits instead of ``SPLITS[dataset]`` (e.g. from :func:`make_cityscapes_split`).

    Returns
    -------
    train_ids : tuple of str
        Labelled training volumes.
    val_ids : tuple of str
        Validation volumes.

    Raises
    ------
    ValueError
        If the dataset, the number of labelled volumes or the combination does not exist.

    Examples
    --------
    >>> get_split("mmwhs", 2, 3)
    (('1006', '1002'), ('1001', '1008'))
    """
    s = _splits_for(dataset, splits)
    if num_labelled not in s.finetune:
        msg = (
            f"`num_labelled` must be one of {sorted(s.finetune)} for {dataset!r}; "
            f"got {num_labelled!r}."
        )
        raise ValueError(msg)
    per_comb = s.finetune[num_labelled]
    if combination not in per_comb:
        msg = (
            f"`combination` must be one of {sorted(per_comb)} for {dataset!r} with "
            f"num_labelled={num_labelled}; got {combination!r}."
        )
        raise ValueError(msg)
    return per_comb[combination]


def resolve_split(
    dataset: str,
    split: str,
    available: Sequence[str] | None = None,
    *,
    splits: DatasetSplits | None = None,
) -> tuple[str, ...]:
    """Turn a split name into the list of case ids it contains.

    Parameters
    ----------
    dataset : str
        Dataset name.
    split : str
        ``"all"`` (every id in `available`), ``"pretrain"``, ``"pretrain_val"``, ``"test"``,
        ``"trall"``, ``"trall_val"``, ``"tr{N}_c{K}"`` (training ids of a fine-tuning set) or
        ``"tr{N}_c{K}_val"`` (its validation ids).
    available : sequence of str, optional
        Ids the reader found; required for ``"all"``; otherwise, if given, every id of the split
        must be among them.
    splits : DatasetSplits, optional
        Splits to use instead of ``SPLITS[dataset]``.

    Returns
    -------
    tuple of str
        The ids, in the split's order.

    Raises
    ------
    ValueError
        If the split name is unknown or ids of the split are missing from `available`.

    Examples
    --------
    >>> resolve_split("acdc", "tr2_c1_val")
    ('031', '072')
    >>> len(resolve_split("prostate", "pretrain"))
    17
    """
    if split == "all":
        if available is None:
            msg = "`available` is required for split 'all'."
            raise ValueError(msg)
        return tuple(available)
    s = _splits_for(dataset, splits)
    ids: tuple[str, ...]
    if split == "pretrain":
        ids = s.pretrain
    elif split == "pretrain_val":
        ids = s.pretrain_val
    elif split == "test":
        ids = s.test
    elif split in ("trall", "trall_val") and s.trall is not None:
        ids = s.trall[0] if split == "trall" else s.trall[1]
    else:
        ids = _resolve_finetune(dataset, split, s)
    if available is not None:
        have = set(available)
        missing = [i for i in ids if i not in have]
        if missing:
            msg = (
                f"split {split!r} of {dataset!r} needs case ids {missing} that the dataset "
                f"folder does not have (found {len(have)} cases)."
            )
            raise ValueError(msg)
    return ids


def _resolve_finetune(dataset: str, split: str, s: DatasetSplits) -> tuple[str, ...]:
    parts = split.split("_")
    ok = (
        len(parts) in (2, 3)
        and parts[0].startswith("tr")
        and parts[0][2:].isdigit()
        and parts[1].startswith("c")
        and parts[1][1:].isdigit()
        and (len(parts) == 2 or parts[2] == "val")
    )
    if not ok:
        names = ["all", "pretrain", "pretrain_val", "test", "tr{N}_c{K}", "tr{N}_c{K}_val"]
        if s.trall is not None:
            names[4:4] = ["trall", "trall_val"]
        msg = f"`split` must be one of {names}; got {split!r}."
        raise ValueError(msg)
    train, val = get_split(dataset, int(parts[0][2:]), int(parts[1][1:]), splits=s)
    return val if len(parts) == 3 else train
