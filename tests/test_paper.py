"""contrastlocal.paper: the shipped copy of the paper's numbers, its loader, the printed layouts."""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import pytest

from contrastlocal.paper import TABLES, PaperResult, paper_results, paper_table

PACKAGE_CSV = Path(str(resources.files("contrastlocal.paper").joinpath("results.csv")))
# the project's shared folder beside the checkout (or beside its worktree folder), if present
_ROOT = Path(__file__).resolve().parents[1]
SHARED_CSV = next(
    (p for p in (_ROOT.parent / "shared" / "paper" / "paper_results.csv",
                 _ROOT.parents[1] / "shared" / "paper" / "paper_results.csv") if p.exists()),
    _ROOT.parent / "shared" / "paper" / "paper_results.csv",
)
#: rows of the shipped copy (count of data lines of results.csv)
KNOWN_ROWS = 195


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_loader_returns_every_row_of_the_file():
    rows = _csv_rows(PACKAGE_CSV)
    assert len(rows) == KNOWN_ROWS
    results = paper_results()
    assert len(results) == len(rows)
    for record, row in zip(results, rows, strict=True):
        assert isinstance(record, PaperResult)
        assert record.table == int(row["table"])
        assert record.dataset == row["dataset"]
        assert record.dice == float(row["dice"])


@pytest.mark.skipif(not SHARED_CSV.exists(), reason="the project's shared data folder is absent")
def test_shipped_copy_equals_the_shared_source():
    assert PACKAGE_CSV.read_bytes() == SHARED_CSV.read_bytes()
    assert len(paper_results()) == len(_csv_rows(SHARED_CSV))


def test_filters():
    rows = _csv_rows(PACKAGE_CSV)
    for table in TABLES:
        got = paper_results(table=table)
        assert len(got) == sum(int(r["table"]) == table for r in rows)
        assert {r.table for r in got} == {table}
    assert len(paper_results(table=6, dataset="acdc")) == 42
    assert len(paper_results(table=6)) == 126
    assert len(paper_results(dataset="cityscapes")) == 13
    assert paper_results(table=8, dataset="acdc") == []


def test_record_fields_are_typed():
    t8 = paper_results(table=8)
    assert [r.num_labelled for r in t8][-1] == "all"
    assert [r.mixup for r in t8][:3] == [False, False, False]
    assert sum(bool(r.mixup) for r in t8) == 3
    assert t8[-1].mixup is None
    t2 = paper_results(table=2)[0]
    assert (t2.batch_size, t2.partitions, t2.region, t2.decoder_blocks) == (40, 4, None, None)
    t4 = paper_results(table=4)[0]
    assert (t4.region, t4.decoder_blocks, t4.num_labelled) == ("1x1", 1, 1)
    assert [r.lambda_local for r in paper_results(table=7)][::2] == [1.0, 10.0, 100.0, 1000.0]


def test_table6_acdc_headline():
    t = paper_table(6, "acdc")
    assert t.columns == ("1", "2", "8")
    assert [t.cell("G^D + L^D d_3", n) for n in t.columns] == [0.725, 0.787, 0.874]
    assert [t.cell("G^D + L^R d_3", n) for n in t.columns] == [0.725, 0.789, 0.872]
    assert t.rows[0] == "G^R"
    assert t.rows == (
        "G^R", "G^R + L^R d_2", "G^R + L^R d_3", "G^R + L^R d_4",
        "G^R + L^D d_2", "G^R + L^D d_3", "G^R + L^D d_4",
        "G^D", "G^D + L^R d_2", "G^D + L^R d_3", "G^D + L^R d_4",
        "G^D + L^D d_2", "G^D + L^D d_3", "G^D + L^D d_4",
    )


def test_inconsistencies_kept_as_printed():
    assert paper_table(2).cell("batch size 40", "2") == 0.784
    assert paper_table(3).cell("S = 4", "2") == 0.789


@pytest.mark.parametrize(("table", "dataset", "rows", "columns"), [
    (1, None, ("random init. (benchmark)",), ("78", "50")),
    (2, None, ("batch size 40", "batch size 250", "batch size 450"), ("1", "2", "8")),
    (3, None, ("S = 3", "S = 4", "S = 6"), ("1", "2", "8")),
    (4, None, ("d_1", "d_2", "d_3", "d_4", "d_5"), ("1x1 / 1", "1x1 / 2", "3x3 / 1", "3x3 / 2")),
    (5, "prostate", ("K = 1x1", "K = 3x3"), ("1", "2")),
    (5, "mmwhs", ("K = 1x1", "K = 3x3"), ("1", "2")),
    (7, None, ("lambda_l = 1", "lambda_l = 10", "lambda_l = 100", "lambda_l = 1000"),
     ("1", "2")),
    (8, None, ("random", "G^R", "G^R + L^R", "G^R + L^R + Mixup", "random init. (benchmark)"),
     ("100", "200", "400", "all")),
])
def test_layouts(table, dataset, rows, columns):
    t = paper_table(table, dataset)
    assert t.rows == rows
    assert t.columns == columns


@pytest.mark.parametrize(("table", "dataset"), [
    (1, None), (2, None), (3, None), (4, None), (5, "prostate"), (5, "mmwhs"), (6, "acdc"),
    (6, "prostate"), (6, "mmwhs"), (7, None), (8, None),
])
def test_every_score_has_exactly_one_cell(table, dataset):
    t = paper_table(table, dataset)
    scores = [r.dice for r in paper_results(table=table, dataset=t.dataset)]
    cells = [v for row in t.values for v in row if v is not None]
    assert sorted(cells) == sorted(scores)


def test_specific_cells():
    assert paper_table(4).cell("d_2", "3x3 / 2") == 0.793
    assert paper_table(5, "mmwhs").cell("K = 3x3", "2") == 0.681
    assert paper_table(7).cell("lambda_l = 100", "1") == 0.643
    t8 = paper_table(8)
    assert t8.cell("G^R + L^R + Mixup", "400") == 0.569
    assert t8.cell("random init. (benchmark)", "all") == 0.652
    assert t8.cell("random", "all") is None
    assert paper_table(1).cell("random init. (benchmark)", "50") == 0.908


def test_markdown():
    md = paper_table(3).to_markdown().splitlines()
    assert md[0] == r"| partitions | $\lvert X_{tr}\rvert$ = 1 | 2 | 8 |"
    assert md[1] == "|---|---|---|---|"
    assert md[3] == "| S = 4 | 0.691 | 0.789 | 0.870 |"
    md6 = paper_table(6, "acdc").to_markdown()
    assert "| $G^D$ + $L^D$ $d_3$ | 0.725 | 0.787 | 0.874 |" in md6
    assert "| random | 0.451 | 0.495 | 0.524 | – |" in paper_table(8).to_markdown()


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: paper_results(table=9), ValueError, r"`table`.*1, 2, 3.*got 9"),
    (lambda: paper_results(table="6"), ValueError, "table"),
    (lambda: paper_results(dataset="brats"), ValueError, r"`dataset`.*'acdc'.*got 'brats'"),
    (lambda: paper_table(6), ValueError, r"`dataset` is required for Table 6.*'prostate'"),
    (lambda: paper_table(6, "cityscapes"), ValueError, r"Table 6 covers.*got 'cityscapes'"),
    (lambda: paper_table(0), ValueError, "table"),
    (lambda: paper_table(3).cell("S = 5", "1"), KeyError, "S = 5"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _docs_generator():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "docs" / "_ext" / "paper_tables.py"
    spec = importlib.util.spec_from_file_location("paper_tables", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reproducing_page_holds_the_shipped_numbers():
    gen = _docs_generator()
    text = gen.PAGE.read_text(encoding="utf-8")
    assert gen.render(text) == text, "run `python docs/_ext/paper_tables.py` to refresh the page"
    assert gen.blocks(text) == [(1, None), (2, None), (3, None), (4, None), (5, "prostate"),
                                (5, "mmwhs"), (6, "acdc"), (6, "prostate"), (6, "mmwhs"),
                                (7, None), (8, None)]
    assert "| $G^D$ + $L^D$ $d_3$ | 0.725 | 0.787 | 0.874 |" in text
    assert "Placeholder" not in text


def test_docs_generator_refills_a_stale_block():
    gen = _docs_generator()
    stale = "a\n<!-- paper-table: 3 -->\n| old |\n<!-- /paper-table -->\nb\n"
    table = paper_table(3).to_markdown()
    assert gen.render(stale) == f"a\n<!-- paper-table: 3 -->\n{table}\n<!-- /paper-table -->\nb\n"
