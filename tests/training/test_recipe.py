"""The recipe API: run_recipe on a fixture tree without the CLI, plans keyed by settings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from contrastlocal.data import open_dataset
from contrastlocal.data.fixtures import write_acdc_fixture
from contrastlocal.data.registry import DATASETS, PREPARABLE, class_names, get_dataset
from contrastlocal.training import (
    KEYED_LAYOUT,
    RUN_LAYOUT,
    build_unet,
    evaluate,
    finetune,
    load_weights,
    plan_cells,
    plan_recipe,
    plan_stages,
    preset,
    run_recipe,
    select_labelled,
    train_baseline,
)
from contrastlocal.training.demo import DEMO_INITIALISATIONS

from ._helpers import tiny_config, volumes

TINY = {
    "model.image_size": (32, 32),
    "model.channels": (4, 8, 16),
    "model.global_hidden_features": 16,
    "global_stage.iterations": 2,
    "global_stage.volumes_per_batch": 2,
    "local_stage.iterations": 2,
    "local_stage.volumes_per_batch": 2,
    "local_stage.num_decoder_blocks": 1,
    "finetune.iterations": 2,
    "finetune.batch_size": 2,
    "finetune.validate_every": 1,
    "runtime.progress": False,
    "runtime.num_threads": 1,
}


@pytest.mark.slow
def test_run_recipe_on_fixture_tree_without_cli(tmp_path: Path) -> None:
    root = write_acdc_fixture(tmp_path / "raw", num_patients=5, num_testing=0)
    cfg = preset("acdc", **TINY)
    data = open_dataset("acdc", root, tmp_path / "cache", image_size=(32, 32), n4="none",
                        splits="auto", num_labelled=[1], workers=0, progress=False)
    lines: list[str] = []
    seen: list[str] = []
    out = tmp_path / "run"
    result = run_recipe(data.pretrain_volumes(), data.finetune_volumes(), data.test_volumes(),
                        cfg, out=out, combinations=[1, 2], log=lines.append,
                        on_cell=lambda o: seen.append(o.cell.name))
    assert result.plan.rows == ("random", "GD", "GD+LD")
    assert seen == [f"{r}_n1_c{c}" for c in (1, 2) for r in result.plan.rows]
    assert set(result.results) == {"random", "GD", "GD+LD"}
    for row in result.results.values():
        assert list(row) == ["1"]
        assert len(row["1"]) == 2
        assert all(0 <= v <= 1 for v in row["1"])
    assert result.finite
    # what it returns is what it wrote
    assert json.loads((out / "results.json").read_text()) == result.results
    assert json.loads((out / "config.json").read_text())["dataset"] == "acdc"
    per_volume = json.loads((out / "evaluation.json").read_text())
    assert sorted(per_volume) == sorted(seen)
    for name in ("results.md", "results.csv", "plots/results.png", "plots/partitions.png"):
        assert (out / name).is_file(), name
    for cell in result.plan.cells:
        assert cell.directory == out / RUN_LAYOUT.cell(cell)
        assert (cell.directory / "best.pt").is_file()
    # the scores are those of the selected checkpoints on the test volumes
    outcome = result.outcomes[0]
    net = build_unet(cfg)
    load_weights(net, outcome.cell.directory / "best.pt")
    again = evaluate(net, data.test_volumes(), num_classes=cfg.model.num_classes)
    assert math.isclose(again.mean_dice, result.results["random"]["1"][0], rel_tol=1e-6)
    assert any(line.startswith("stage 1 (G^D)") for line in lines)
    assert any("test Dice" in line for line in lines)
    # resumable: a second call finds every stage and cell done and reports the same table
    rerun = run_recipe(data.pretrain_volumes(), data.finetune_volumes(), data.test_volumes(),
                       cfg, out=out, combinations=[1, 2], plots=False)
    assert rerun.results == result.results
    assert all(o.stage.resumed_from == cfg.finetune.iterations for o in rerun.outcomes)


def test_random_row_is_the_baseline_of_run_and_demo() -> None:
    """The demo's and run's "random" row is train_baseline (augmented random init)."""
    cfg = tiny_config(finetune={"iterations": 2, "batch_size": 2, "validate_every": 1,
                                "log_every": 1, "augment": False})
    data = volumes()
    cell = next(c for c in plan_cells(cfg, {1: [1]}, plan_stages(cfg)) if c.init == "random")
    assert cell.source is None
    from contrastlocal.training import run_cell

    got = run_cell(cell, data["train"], data["val"])
    want = train_baseline(data["train"], data["val"], cfg)
    plain = finetune(data["train"], data["val"], cfg)  # augment=False: not the baseline
    for key, value in want.network.state_dict().items():
        torch.testing.assert_close(got.network.state_dict()[key], value, rtol=0, atol=0)
    assert any(not torch.equal(plain.network.state_dict()[k], v)
               for k, v in want.network.state_dict().items() if v.is_floating_point())
    assert plan_recipe(cfg, {1: [1]}).rows == DEMO_INITIALISATIONS


def test_plan_keys_are_deterministic_and_follow_the_settings(tmp_path: Path) -> None:
    cfg = preset("acdc")
    a = plan_recipe(cfg, {1: [1, 2], 2: [1]}, out=tmp_path)
    b = plan_recipe(cfg, [(1, [1, 2]), (2, [1])], out=tmp_path)
    assert [c.key for c in a.cells] == [c.key for c in b.cells]
    assert len({c.key for c in a.cells}) == len(a.cells)
    # a change of stage 2 changes stage 2 and the cells it initialises, nothing else
    c2 = cfg.replace(local_stage={"num_decoder_blocks": 2})
    p2 = plan_recipe(c2, {1: [1, 2], 2: [1]})
    assert p2.stages[0].key == a.stages[0].key
    assert p2.stages[1].key != a.stages[1].key
    for old, new in zip(a.cells, p2.cells, strict=True):
        assert (old.key == new.key) == (old.init != "GD+LD"), old.name
    # a change of stage 1 propagates to stage 2 and to both pre-trained rows
    c3 = cfg.replace(global_stage={"temperature": 0.5})
    p3 = plan_recipe(c3, {1: [1]})
    assert p3.stages[1].key != a.stages[1].key
    assert [c.key == o.key for c, o in zip(p3.cells, a.cells[:3], strict=True)] == [
        True, False, False]
    # the keyed layout gives every cell its own folder named by its key
    k = plan_recipe(cfg, {1: [1]}, out=tmp_path, layout=KEYED_LAYOUT)
    assert k.stages[1].directory == tmp_path / "stages" / f"local-{k.stages[1].key}"
    assert {c.directory for c in k.cells} == {tmp_path / "cells" / c.key for c in k.cells}
    with pytest.raises(ValueError, match="rows"):
        plan_cells(cfg, {1: [1]}, a.stages, rows=["GR"])


def test_select_labelled_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match=r"`--num-labelled` must be among \[1, 2\]"):
        select_labelled({1: [1], 2: [1]}, [3], names=("--num-labelled", "--combinations"))
    with pytest.raises(ValueError, match="`combinations`"):
        select_labelled({1: [1]}, [1], [4])


def test_registry_is_the_one_list_of_datasets() -> None:
    from contrastlocal.cli import build_parser
    from contrastlocal.data.prepare import DATASETS as PREPARE_DATASETS
    from contrastlocal.data.preprocess import PREPROCESS_PRESETS
    from contrastlocal.data.readers import READERS
    from contrastlocal.training import DATASETS as CONFIG_DATASETS

    assert tuple(DATASETS) == CONFIG_DATASETS
    assert PREPARABLE == PREPARE_DATASETS == tuple(READERS) == tuple(PREPROCESS_PRESETS)
    for name, info in DATASETS.items():
        assert preset(name).model.num_classes == info.num_classes
        if info.reader is not None:
            assert READERS[name].__name__ == info.reader
    run = build_parser().parse_args(["run", "--dataset", "mmwhs", "--data", "d", "--out", "o"])
    assert run.dataset == "mmwhs"
    assert class_names("mmwhs", 8)[0] == "Myo"
    assert get_dataset("acdc").preprocess_config(n4="legacy").n4 == "legacy"
    assert get_dataset("acdc").preprocess_config().n4 == "default"
    with pytest.raises(ValueError, match="'kitti'"):
        get_dataset("kitti")
