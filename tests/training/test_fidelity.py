"""FidelityConfig and the authors' batches / local-loss arguments against loop references."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from contrastlocal.functional import local_contrastive_loss, original_global_layout
from contrastlocal.training.fidelity import (
    FIDELITY_ITEMS,
    TEXT_AND_CODE,
    FidelityConfig,
    authors_batch_indices,
    authors_batch_views,
    authors_global_batch,
    authors_local_batch,
    authors_local_loss_arguments,
    authors_partition_slices,
)
from tests import _reference_fidelity as ref
from tests._reference_local import original_ld_reference, original_lr_reference, reference_tables

FIELDS = ("volume", "slice", "partition", "image", "view", "set", "call", "blank")


def _as_rows(batch: dict[str, np.ndarray]) -> list[dict[str, object]]:
    n = len(batch["view"])
    assert all(len(batch[k]) == n for k in FIELDS)
    return [{k: (bool(batch[k][i]) if k == "blank" else int(batch[k][i])) for k in FIELDS}
            for i in range(n)]


# ------------------------------------------------------------------ FidelityConfig
def test_presets_all_off_all_on_and_text_vs_code() -> None:
    paper, authors = FidelityConfig.preset("paper"), FidelityConfig.preset("authors")
    assert paper == FidelityConfig()
    for f in dataclasses.fields(FidelityConfig):
        if f.name in TEXT_AND_CODE:
            assert getattr(paper, f.name) == TEXT_AND_CODE[f.name][0][0]
            assert getattr(authors, f.name) == TEXT_AND_CODE[f.name][1][0]
        else:
            assert getattr(paper, f.name) is False
            assert getattr(authors, f.name) is True
    assert (paper.finetune_batch, authors.finetune_batch) == (40, 20)
    assert set(FIDELITY_ITEMS) == {f.name for f in dataclasses.fields(FidelityConfig)}
    assert (paper.name, authors.name) == ("paper", "authors")


def test_overrides_and_round_trip() -> None:
    cfg = FidelityConfig.preset("authors", n4=False, finetune_batch=40)
    assert cfg.n4 is False
    assert cfg.finetune_batch == 40
    assert cfg.global_loss is True
    assert cfg.name == "custom"
    d = cfg.to_dict()
    assert d["fidelity"] == "authors"
    assert FidelityConfig.from_dict(d) == cfg
    assert FidelityConfig.from_dict("authors") == FidelityConfig.preset("authors")
    assert FidelityConfig.from_dict({"elastic_tail": True}) == FidelityConfig(elastic_tail=True)


def test_unknown_item_one_line_with_suggestion() -> None:
    with pytest.raises(ValueError, match=r"unknown fidelity item 'blank_row' \(did you mean "
                       r"'blank_rows'\?\); accepted: blank_rows, global_loss") as err:
        FidelityConfig.preset("authors", blank_row=True)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"unknown fidelity item 'zzz'; accepted"):
        FidelityConfig.from_dict({"fidelity": "paper", "zzz": 1})
    with pytest.raises(ValueError, match=r"did you mean 'authors'\?.*got 'author'"):
        FidelityConfig.preset("author")


def test_bad_values() -> None:
    with pytest.raises(TypeError, match=r"`fidelity.n4` must be a bool; got 1"):
        FidelityConfig(n4=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`fidelity.finetune_batch` must be an integer"):
        FidelityConfig(finetune_batch=True)
    with pytest.raises(ValueError, match=r"`fidelity.global_batch` must be >= 1; got 0"):
        FidelityConfig(global_batch=0)
    with pytest.raises(ValueError, match=r"blank_rows` needs `fidelity.global_loss"):
        FidelityConfig(blank_rows=True)
    with pytest.raises(TypeError, match=r"must be 'paper', 'authors' or a mapping"):
        FidelityConfig.from_dict(3)  # type: ignore[arg-type]


# ------------------------------------------------------------------ batches vs loops
DEPTHS = [9, 12, 7, 10, 8, 13, 11, 6, 10, 9, 14, 8]


def test_partition_slices_match_reference() -> None:
    vols = [3, 0, 11, 7]
    got = authors_partition_slices(DEPTHS, vols, 3, np.random.default_rng(5))
    want = ref.partition_slices_reference(DEPTHS, vols, 3, np.random.default_rng(5))
    assert got.tolist() == want
    # many draws: every slice of every chunk is reachable, the Z mod S tail never is
    many = authors_partition_slices([10] * 400, np.arange(400), 4, np.random.default_rng(0))
    assert set(many[:, 0].tolist()) == {0, 1}
    assert set(many[:, 3].tolist()) == {6, 7}


@pytest.mark.parametrize(("b", "s"), [(12, 4), (10, 4), (8, 4), (40, 4), (12, 3), (12, 6),
                                      (5, 4), (7, 3), (4, 4), (1, 4), (1, 3)])
@pytest.mark.parametrize("blank_rows", [True, False])
def test_domain_batch_matches_stitching_loop(b: int, s: int, blank_rows: bool) -> None:
    depths = DEPTHS * 2  # 24 volumes: enough for B = 40 (9 per set)
    got = authors_global_batch("domain", b, depths, np.random.default_rng(b + s),
                               num_partitions=s, blank_rows=blank_rows)
    want = ref.domain_batch_reference(b, s, depths, np.random.default_rng(b + s), blank_rows)
    assert _as_rows(got) == want
    layout = original_global_layout("domain", b, s)
    assert len(got["view"]) == len(layout["blank"])
    if blank_rows:
        assert got["blank"].tolist() == layout["blank"].tolist()
        real = ~layout["blank"]
        for key in ("partition", "image", "view", "set"):
            assert got[key][real].tolist() == layout[key][real].tolist()
    else:
        assert not got["blank"].any()


def test_domain_batch_row_counts_of_reference_table() -> None:
    # REFERENCE.md §1.3's table: (S, B) -> rows fed, real rows
    for (s, b), (rows, real) in {(4, 12): (48, 32), (4, 10): (40, 32), (4, 8): (32, 16),
                                 (4, 40): (160, 144), (3, 12): (64, 60),
                                 (6, 12): (64, 48)}.items():
        got = authors_global_batch("domain", b, DEPTHS * 2, np.random.default_rng(0),
                                   num_partitions=s)
        assert (len(got["blank"]), int((~got["blank"]).sum())) == (rows, real)


@pytest.mark.parametrize(("b", "s"), [(12, 4), (10, 4), (7, 3), (1, 4)])
def test_domain_negatives_batch_matches_reference(b: int, s: int) -> None:
    got = authors_global_batch("domain_negatives", b, DEPTHS, np.random.default_rng(3),
                               num_partitions=s)
    want = ref.domain_negatives_batch_reference(b, s, DEPTHS, np.random.default_rng(3))
    assert _as_rows(got) == want
    layout = original_global_layout("domain_negatives", b, s)
    assert got["partition"].tolist() == layout["partition"].tolist()
    assert got["view"].tolist() == layout["view"].tolist()


def test_random_batches_match_reference() -> None:
    got = authors_global_batch("random", 9, DEPTHS, np.random.default_rng(4))
    assert _as_rows(got) == ref.random_batch_reference(9, DEPTHS, np.random.default_rng(4))
    got = authors_local_batch("random", DEPTHS, np.random.default_rng(6))
    want = ref.random_batch_reference(10, DEPTHS, np.random.default_rng(6))
    assert _as_rows(got) == want
    assert len(want) == 20
    assert len(original_global_layout("random", 9)["view"]) == 18


def test_local_domain_batch_matches_reference() -> None:
    got = authors_local_batch("domain", DEPTHS, np.random.default_rng(7))
    want = ref.local_domain_batch_reference(DEPTHS, np.random.default_rng(7))
    assert _as_rows(got) == want
    assert len(want) == 24


def test_batch_errors() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"G\^D with B = 40, S = 4 \(9 volumes per set\) needs "
                       "9 pre-training volumes; `depths` lists 4"):
        authors_global_batch("domain", 40, [10] * 4, rng)
    with pytest.raises(ValueError, match=r"`num_partitions` must be one of 3, 4, 6"):
        authors_global_batch("domain", 12, DEPTHS, rng, num_partitions=5)
    with pytest.raises(ValueError, match=r"`strategy` must be one of"):
        authors_global_batch("domian", 12, DEPTHS, rng)
    with pytest.raises(ValueError, match=r"volume 1 has 3 slices, fewer than `num_partitions` = 4"):
        authors_global_batch("domain_negatives", 8, [8, 3], rng)
    with pytest.raises(ValueError, match=r"`depths` must be a non-empty sequence"):
        authors_local_batch("random", [], rng)
    with pytest.raises(ValueError, match=r"`batch_size` must be 12 for the authors' L\^D"):
        authors_local_batch("domain", DEPTHS, rng, batch_size=10)
    with pytest.raises(ValueError, match=r"needs 3 pre-training volumes"):
        authors_local_batch("domain", [8, 8], rng)
    with pytest.raises(TypeError, match=r"`rng` must be a numpy.random.Generator"):
        authors_local_batch("random", DEPTHS, 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`batch_size` must be an integer"):
        authors_global_batch("random", 2.0, DEPTHS, rng)  # type: ignore[arg-type]


def test_batch_indices_address_the_concatenated_slices() -> None:
    rows = authors_global_batch("domain", 10, DEPTHS, np.random.default_rng(2))
    idx = authors_batch_indices(rows, DEPTHS)
    for i in range(len(idx)):
        if rows["blank"][i]:
            assert idx[i] == -1
        else:
            v, z = int(rows["volume"][i]), int(rows["slice"][i])
            assert idx[i] == sum(DEPTHS[:v]) + z
    with pytest.raises(ValueError, match=r"outside `depths`"):
        authors_batch_indices({"volume": np.array([0]), "slice": np.array([9])}, [9])
    with pytest.raises(ValueError, match=r"must hold 'volume' and 'slice'"):
        authors_batch_indices({"volume": np.array([0])}, [9])


def test_batch_views_follow_the_rows() -> None:
    # §1.2-1.3, §4.1: view-0 rows are the slices themselves, blank rows all-zero images, and
    # the augmented rows of one call share one (δ, c = 1 + δ) draw; crop disabled so that the
    # shared draw can be read back: x' = c x + δ on zero-mean images without clipping
    torch = pytest.importorskip("torch")
    rows = authors_global_batch("domain", 10, DEPTHS, np.random.default_rng(3))
    n = len(rows["view"])
    x = torch.rand(n, 1, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x - x.mean(dim=(1, 2, 3), keepdim=True)
    out = authors_batch_views(x, rows, torch.Generator().manual_seed(1), shared=True, clip=None,
                              crop_fraction=1.0, corner_range=(0.0, 0.0))
    for i in range(n):
        if rows["blank"][i]:
            assert not out[i].any()
        elif rows["view"][i] == 0:
            assert torch.equal(out[i], x[i])
    pairs = {}
    for i in np.flatnonzero(rows["call"] >= 0):
        delta = float(out[i].mean())
        c = float((out[i, 0, 0, 1] - out[i, 0, 0, 0]) / (x[i, 0, 0, 1] - x[i, 0, 0, 0]))
        assert c == pytest.approx(1 + delta)
        pairs.setdefault(int(rows["call"][i]), set()).add(round(delta, 9))
    assert sorted(pairs) == [0, 1]  # G^D: one call per set
    assert all(len(v) == 1 for v in pairs.values())  # one draw per call
    assert pairs[0] != pairs[1]
    with pytest.raises(ValueError, match=r"`kind` must be 'global' or 'local'"):
        authors_batch_views(x, rows, torch.Generator(), kind="crop")
    with pytest.raises(ValueError, match=r"`rows` must describe the 3 rows"):
        authors_batch_views(x[:3], rows, torch.Generator())


# ------------------------------------------------------------------ local loss arguments
@pytest.mark.parametrize("region_size", [3, 1])
def test_local_domain_arguments_match_loop_reference(region_size: int) -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(24, 3, 12, 12))
    kw = authors_local_loss_arguments("domain", 12, region_size=region_size)
    got = local_contrastive_loss(features, region_size=region_size, temperature=0.5, **kw)
    positions, negatives = reference_tables(12, region_size, 13)
    want = original_ld_reference(features, positions, negatives, region_size=region_size,
                                 temperature=0.5, num_negatives=4)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-10)


def test_local_random_arguments_match_loop_reference() -> None:
    rng = np.random.default_rng(2)
    features = rng.normal(size=(20, 2, 12, 12))
    kw = authors_local_loss_arguments("random", 12, region_size=3)
    assert kw["normalizer"] == 13 * 20
    assert kw["negative_positions"].shape == (13, 5, 2)
    got = local_contrastive_loss(features, region_size=3, temperature=0.3, **kw)
    positions, negatives = reference_tables(12, 3, 13)
    want = original_lr_reference(features, positions, negatives, batch_size=10, region_size=3,
                                 temperature=0.3)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-10)


def test_local_arguments_errors() -> None:
    with pytest.raises(ValueError, match=r"`batch_size` must be 12"):
        authors_local_loss_arguments("domain", 48, batch_size=10)
    with pytest.raises(ValueError, match=r"strategy"):
        authors_local_loss_arguments("dom", 48)
