"""The table runner: a tiny Table 6 on the ACDC fixture, kill and resume, sharing across tables."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from contrastlocal.cli import main
from contrastlocal.data.fixtures import write_acdc_fixture
from contrastlocal.paper import paper_table
from contrastlocal.training import FinetuneCell, preset, reproduce_table
from contrastlocal.training.tables import RANDOM_ROW, TablePlan, TableResult

# 6 levels so that l = 1 ... 5 decoder blocks exist; 64 x 64 so that l = 1 gives 4 x 4 maps
TINY = {
    "model.image_size": (64, 64),
    "model.channels": (2, 2, 2, 2, 2, 2),
    "model.global_hidden_features": 8,
    "model.global_out_features": 8,
    "global_stage.iterations": 2,
    "global_stage.volumes_per_batch": 2,
    "local_stage.iterations": 2,
    "local_stage.volumes_per_batch": 2,
    "local_stage.num_regions": 9,
    "local_stage.projection_dim": 8,
    "finetune.iterations": 2,
    "finetune.batch_size": 2,
    "finetune.validate_every": 1,
    "runtime.progress": False,
    "runtime.num_threads": 1,
}


class KilledError(Exception):
    """Raised by a callback to simulate a kill mid-grid."""


@pytest.fixture(scope="module")
def acdc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("tables")
    root = write_acdc_fixture(tmp / "raw", num_patients=5, num_testing=0)
    return {"data": root, "cache": tmp / "cache", "tmp": tmp}


def _run(acdc: dict[str, Path], table: int, out: Path, **kw: Any) -> TableResult:
    counts: Counter[str] = Counter()
    kw.setdefault("on_run", lambda kind, key: counts.update([kind]))
    kw.setdefault("config", preset("acdc", **TINY))
    result = reproduce_table(
        table, dataset="acdc", data=acdc["data"], out=out, cache=acdc["cache"],
        splits="auto", n4="none", num_labelled=[1],
        combinations=[1, 2], **kw,
    )
    assert isinstance(result, TableResult)
    result.counted = dict(counts)  # type: ignore[attr-defined]
    return result


@pytest.fixture(scope="module")
def table6(acdc: dict[str, Path]) -> dict[str, Any]:
    """Table 6, killed after 7 fine-tuning runs, then rerun to the end."""
    out = acdc["tmp"] / "run"
    finished: list[FinetuneCell] = []
    trained: Counter[str] = Counter()

    def on_cell(cell: FinetuneCell, dice: float) -> None:
        finished.append(cell)
        if len(finished) == 7:
            raise KilledError

    with pytest.raises(KilledError):
        _run(acdc, 6, out, on_cell=on_cell, on_run=lambda k, _key: trained.update([k]))
    first = dict(trained)
    rerun = _run(acdc, 6, out)
    return {"out": out, "first": first, "killed_after": list(finished), "result": rerun}


def test_table6_has_every_cell_and_the_paper_column(table6: dict[str, Any]) -> None:
    result: TableResult = table6["result"]
    printed = paper_table(6, "acdc")
    plan = result.plan
    assert plan.rows == (RANDOM_ROW, *printed.rows)
    assert plan.columns == printed.columns
    # 2 global configurations, 2 local strategies x l = 2, 3, 4 on each, 15 initialisations
    counts = plan.counts()
    assert counts == {"stage1": (2, 2), "stage2": (12, 12), "finetune": (30, 30)}
    records = {(r["row"], r["column"]): r for r in result.records()}
    assert len(records) == 15 * 3
    for row in printed.rows:
        for col in printed.columns:
            rec = records[(row, col)]
            assert rec["paper"] == printed.cell(row, col)
            if col == "1":
                assert rec["n"] == 2
                assert 0.0 <= rec["mean"] <= 1.0
                assert rec["difference"] == pytest.approx(rec["mean"] - rec["paper"])
            else:  # |X_tr| = 2, 8 were left out
                assert rec["n"] == 0
                assert rec["mean"] is None
    assert records[(RANDOM_ROW, "1")]["paper"] is None
    out: Path = table6["out"]
    md = (out / "table6_acdc.md").read_text()
    assert "paper 0.725" in md
    assert "| $G^D$ + $L^D$ $d_3$ | " in md
    assert "| initialisation | $\\lvert X_{tr}\\rvert$ = 1 | 2 | 8 |" in md
    data = json.loads((out / "table6_acdc.json").read_text())
    assert data["cells"] == json.loads(json.dumps(result.records()))
    csv_lines = (out / "table6_acdc.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 45
    assert (out / "table6_acdc.png").is_file()
    # every fine-tuning run lives under cells/<key>
    for run in plan.runs:
        assert run.directory == out / "cells" / run.key
        assert json.loads((run.directory / "result.json").read_text())["key"] == run.key


def test_kill_and_rerun_finishes_only_the_missing_runs(table6: dict[str, Any]) -> None:
    killed = table6["killed_after"]
    assert table6["first"] == {"global": 2, "local": 12, "finetune": 7}
    # the rerun trains neither stage again (all finished) nor the 7 finished runs
    result: TableResult = table6["result"]
    assert result.counted == {"finetune": 30 - 7}  # type: ignore[attr-defined]
    assert result.trained == {"stage1": 0, "stage2": 0, "finetune": 23}
    assert len({c.key for c in killed}) == 7


def test_a_finished_table_recomputes_nothing(acdc: dict[str, Path],
                                             table6: dict[str, Any]) -> None:
    again = _run(acdc, 6, table6["out"])
    assert again.counted == {}  # type: ignore[attr-defined]
    assert again.records() == table6["result"].records()


@pytest.fixture(scope="module")
def table4(acdc: dict[str, Path], table6: dict[str, Any]) -> TableResult:
    """Table 4's rows d_2, d_3 (and the baseline) in Table 6's run directory."""
    return _run(acdc, 4, table6["out"], rows=[RANDOM_ROW, "d_2", "d_3"])


def test_table4_after_table6_recomputes_nothing_it_shares(
    table4: TableResult, table6: dict[str, Any]
) -> None:
    t4 = table4
    # shared with Table 6: stage 1 (G^D), stage 2 d_2 / d_3 at 3x3, their runs and the baseline;
    # new: stage 2 d_2 / d_3 at 1x1 and their 2 x 2 runs
    assert t4.counted == {"local": 2, "finetune": 4}  # type: ignore[attr-defined]
    six = {(r["row"], r["column"]): r for r in table6["result"].records()}
    four = {(r["row"], r["column"]): r for r in t4.records()}
    for d in (2, 3):
        assert four[(f"d_{d}", "3x3 / 1")]["values"] == six[(f"G^D + L^D d_{d}", "1")]["values"]
    assert four[(RANDOM_ROW, "1x1 / 1")]["values"] == six[(RANDOM_ROW, "1")]["values"]
    assert four[("d_3", "1x1 / 1")]["paper"] == paper_table(4).cell("d_3", "1x1 / 1")


def test_concurrent_runs_give_the_same_table(acdc: dict[str, Path],
                                             table6: dict[str, Any]) -> None:
    # A learning rate of 1e-9: in float32, Adam turns the rounding noise in the (truly zero)
    # gradient of a convolution bias before batch norm into steps of size lr, so K cells in one
    # grouped network and the cells one by one separate by ~lr per step (tests/
    # test_grouped_training.py proves the two equal in float64). At 1e-9 that noise is far below
    # the tolerance, while data, seeds, initialisation, selection and evaluation must all match.
    rows = [RANDOM_ROW, "G^D", "G^D + L^D d_3"]
    tables = []
    for k in (1, 2):
        out = acdc["tmp"] / f"grouped{k}"
        out.mkdir()
        shutil.copytree(table6["out"] / "stages", out / "stages")  # pre-training reused
        tables.append(_run(acdc, 6, out, rows=rows, concurrent=k, plots=False,
                           config=preset("acdc", **{**TINY, "finetune.learning_rate": 1e-9})))
    one, two = tables
    assert one.counted == two.counted == {"finetune": 6}  # type: ignore[attr-defined]
    assert [r["row"] for r in one.records()] == [r["row"] for r in two.records()]
    for a, b in zip(one.records(), two.records(), strict=True):
        assert a["n"] == b["n"]
        if a["n"]:
            assert b["values"] == pytest.approx(a["values"], abs=1e-6)
    for run in two.plan.runs:  # the same per-run layout as run_cell's
        for name in ("result.json", "best.pt", "final.pt", "metrics.jsonl"):
            assert (run.directory / name).is_file(), name
        assert json.loads((run.directory / "result.json").read_text())["concurrent"] == 2
    # the groups' resumable checkpoints are gone once their cells are written
    assert not (acdc["tmp"] / "grouped2" / "cells" / ".groups").exists()


def test_dry_run_counts_done_runs_and_projects_time(
    acdc: dict[str, Path], table6: dict[str, Any], table4: TableResult
) -> None:
    lines: list[str] = []
    plan = reproduce_table(
        4, dataset="acdc", data=acdc["data"], out=table6["out"], cache=acdc["cache"],
        config=preset("acdc", **TINY), splits="auto", n4="none", num_labelled=[1],
        combinations=[1, 2], dry_run=True, iteration_ms=(10.0, 10.0, 20.0), log=lines.append,
    )
    assert isinstance(plan, TablePlan)
    c = plan.counts()
    # K = 1x1 / 3x3 x l = 1 ... 5: 10 stage-2 runs, of which d_2, d_3 at both K are done
    assert c["stage1"] == (1, 1)
    assert c["stage2"] == (10, 5)  # d_2, d_3, d_4 at 3x3 (Table 6) + d_2, d_3 at 1x1 (Table 4)
    assert c["finetune"][0] == 2 * (1 + 10)
    total, left = plan.projection((10.0, 10.0, 20.0)) or (0, 0)
    assert total == pytest.approx((2 * 10 + 10 * 2 * 10 + 22 * 2 * 20) / 3.6e6)
    assert 0 < left < total
    assert "a projection" in lines[0]
    assert "stage-2 runs:" in lines[0]


def test_bad_input_fails_in_one_line(acdc: dict[str, Path], table6: dict[str, Any]) -> None:
    common = {"data": acdc["data"], "cache": acdc["cache"], "splits": "auto", "n4": "none"}
    with pytest.raises(ValueError, match=r"`table` must be one of 1, 2, .*got 9"):
        reproduce_table(9, dataset="acdc", out=acdc["tmp"] / "x", **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"'prostate' is not covered by Table 4; it covers 'acdc'"):
        reproduce_table(4, dataset="prostate", out=acdc["tmp"] / "x", **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown fidelity item 'blank_row'.*blank_rows"):
        reproduce_table(6, dataset="acdc", out=acdc["tmp"] / "x",
                        overrides={"fidelity.blank_row": True}, **common)  # type: ignore[arg-type]
    # the run directory holds other shared settings: refused, naming the setting
    other = preset("acdc", **{**TINY, "finetune.learning_rate": 0.01})
    with pytest.raises(ValueError, match=r"settings\.finetune\.learning_rate = 0\.001.*0\.01"):
        reproduce_table(4, dataset="acdc", out=table6["out"], config=other,
                        **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"fidelity\.name = 'paper'.*'authors'"):
        reproduce_table(4, dataset="acdc", out=table6["out"], config=preset("acdc", **TINY),
                        fidelity="authors", **common)  # type: ignore[arg-type]


def test_table2_batch_450_fails_before_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'batch size 450' \(112 volumes.*holds 52; nothing "
                                         r"was trained.*--rows"):
        reproduce_table(2, dataset="acdc", data=tmp_path, out=tmp_path / "o", dry_run=True)
    assert not (tmp_path / "o").exists()


def test_cli_reproduce_dry_run_and_errors(capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    code = main(["reproduce", "6", "--dataset", "acdc", "--data", str(tmp_path), "--out",
                 str(tmp_path / "o"), "--dry-run", "--iteration-ms", "19.3,18.6,26.1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "stage-1 runs:        2" in out
    assert "stage-2 runs:       12" in out
    assert "fine-tuning runs:  195 (0 done)" in out
    assert "14.86 h in all" in out
    for argv, expected in (
        (["reproduce", "4", "--dataset", "prostate"], "'prostate' is not covered by Table 4"),
        (["reproduce", "9", "--dataset", "acdc"], "TABLE must be one of 1, 2, 3"),
        (["reproduce", "6", "--dataset", "acdc", "--set", "fidelity.blank_row=true"],
         "unknown fidelity item 'blank_row'"),
    ):
        with pytest.raises(SystemExit) if argv[1] == "9" else contextlib.nullcontext():
            code = main([*argv, "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                         "--dry-run"])
            assert code == 2
        err = capsys.readouterr().err
        assert expected in err
        assert len(err.strip().splitlines()) == 1


def test_table7_joint_stage_and_shared_baseline(acdc: dict[str, Path],
                                                table6: dict[str, Any]) -> None:
    t7 = _run(acdc, 7, table6["out"], rows=[RANDOM_ROW, "lambda_l = 10"], plots=False)
    # one joint pre-training and its 2 runs; the baseline is Table 6's
    assert t7.counted == {"joint": 1, "finetune": 2}  # type: ignore[attr-defined]
    rec = {(r["row"], r["column"]): r for r in t7.records()}
    assert rec[("lambda_l = 10", "1")]["n"] == 2
    assert rec[("lambda_l = 10", "1")]["paper"] == paper_table(7).cell("lambda_l = 10", "1")
    joint = [s for s in t7.plan.stages if s.kind == "joint"]
    assert len(joint) == 1
    assert joint[0].config.local_stage.lambda_local == 10.0


def test_a_run_directory_in_use_is_refused(acdc: dict[str, Path], tmp_path: Path) -> None:
    from contrastlocal._lock import DirectoryLock

    with DirectoryLock(tmp_path / "busy", purpose="another runner"), \
            pytest.raises(ValueError, match=r"`out` .*busy' is in use"):
        _run(acdc, 6, tmp_path / "busy")
    assert not (tmp_path / "busy" / "cells").exists()


def test_cli_reproduce_runs_a_tiny_table(acdc: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    sets = [f"{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}"
            for k, v in TINY.items()]
    argv = ["reproduce", "7", "--dataset", "acdc", "--data", str(acdc["data"]), "--out",
            str(tmp_path / "run"), "--cache", str(acdc["cache"]), "--splits", "auto", "--n4",
            "none", "--workers", "0", "--num-labelled", "1", "--combinations", "1", "--rows",
            "lambda_l = 1", "--no-plots", "--no-progress"]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "stage-1 runs:        1 (0 done; global or joint)" in out
    assert "| $\\lambda_l$ = 1 | " in out
    assert "paper 0.634" in out
    data = json.loads((tmp_path / "run" / "table7_acdc.json").read_text())
    assert [c["n"] for c in data["cells"]] == [1, 0]
    assert data["fidelity"]["name"] == "paper"
    wired = "fidelity" in preset("acdc").__dataclass_fields__  # the settings' own section
    assert data["fidelity"]["wired_into_config"] == wired


def test_table8_plans_the_fully_supervised_cityscapes_row() -> None:
    # the Cityscapes split's `trall` (every pre-training image outside combination 1's validation
    # pool) makes Table 8's benchmark row a planned run, not "not run"
    from contrastlocal.data.splits import make_cityscapes_split
    from contrastlocal.training.tables import _benchmark_columns, table_plan

    s = make_cityscapes_split([f"city_{i:06d}_000019" for i in range(3475)])
    assert s.trall is not None
    train, val = s.trall
    assert (len(train), len(val)) == (2570, 200)
    assert not set(train) & set(val)
    assert not (set(train) | set(val)) & set(s.test)
    bench = _benchmark_columns(8, s)
    assert bench == {"all": 2570}
    plan = table_plan(8, preset("cityscapes"), {n: sorted(v) for n, v in s.finetune.items()},
                      out="unused", benchmark=bench)
    assert plan.counts()["finetune"] == (4 * 3 * 5 + 1, 0)
    (cell,) = [c for c in plan.cells if c.column == "all"]
    assert cell.paper == pytest.approx(0.652)
    assert [r.num_labelled for r in cell.runs] == [2570]
