"""Reproduce a table of the paper: plan the runs it needs, share them, resume, compare.

:func:`~contrastlocal.training.reproduce_table` runs one of the supplement's tables (2–8, and
Table 1's fully supervised benchmark) on a dataset folder, on top of the recipe API
(:func:`~contrastlocal.training.plan_stages`, :func:`~contrastlocal.training.plan_joint`,
:func:`~contrastlocal.training.plan_finetune`, :func:`~contrastlocal.training.run_stage`,
:func:`~contrastlocal.training.run_cell`) with the :data:`~contrastlocal.training.KEYED_LAYOUT`:
every pre-training stage lives in ``RUNDIR/stages/<kind>-<key>/`` and every fine-tuning run in
``RUNDIR/cells/<key>/``, its key derived from all of its settings. Two tables run in the same
``RUNDIR`` therefore share every run they have in common (one stage 1 per global configuration,
one stage 2 per (global, local strategy, l, K), one random baseline per (|X_tr|, combination),
each fine-tuning run once). A finished cell (its ``result.json`` present, holding its key) is
never recomputed; an unfinished one resumes from its checkpoints.

:func:`~contrastlocal.training.table_plan` says what a table needs without training
(``contrastlocal reproduce --dry-run``): the run counts, how many are done, and the projected
time from a per-iteration cost (:data:`~contrastlocal.training.tables.DEFAULT_ITERATION_MS`).

The output is the paper's layout (:func:`~contrastlocal.paper.paper_table`): every printed cell
holds our mean ± standard deviation over the combinations, the paper's number and the
difference, written as ``RUNDIR/table<N>_<dataset>.md`` / ``.csv`` / ``.json``, with a plot of
ours against the paper's (``.png``, where matplotlib is installed).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .config import ExperimentConfig, config_to_dict
from .plan import (
    KEYED_LAYOUT,
    FinetuneCell,
    StageCell,
    plan_finetune,
    plan_joint,
    plan_stages,
    settings_key,
)

__all__ = [
    "DEFAULT_ITERATION_MS",
    "REPRODUCIBLE_TABLES",
    "TableCell",
    "TablePlan",
    "TableResult",
    "reproduce_table",
    "table_plan",
]

#: The tables :func:`~contrastlocal.training.reproduce_table` runs, with the datasets each covers.
REPRODUCIBLE_TABLES: dict[int, tuple[str, ...]] = {
    1: ("acdc",),
    2: ("acdc",),
    3: ("acdc",),
    4: ("acdc",),
    5: ("prostate", "mmwhs"),
    6: ("acdc", "prostate", "mmwhs"),
    7: ("acdc",),
    8: ("cityscapes",),
}

#: Default cost of one iteration (ms) of stage 1, stage 2 and fine-tuning, per device type, for
#: the projection when none is given. CUDA: one NVIDIA H200 at the paper's settings (192 × 192,
#: bf16 autocast + channels-last; docs/benchmarks.md, ``benchmarks/bench_pipeline.py``:
#: 19.3 / 18.6 / 26.1 ms). No default for the CPU: pass ``iteration_ms``.
DEFAULT_ITERATION_MS: dict[str, tuple[float, float, float]] = {"cuda": (19.3, 18.6, 26.1)}

#: Row label of our random-initialisation baseline in the tables that do not print one.
RANDOM_ROW = "random init. (ours only)"

Init = Literal["random", "global", "local", "joint", "benchmark"]


# ------------------------------------------------------------------------------ table specs
@dataclass(frozen=True)
class _Row:
    label: str
    init: Init
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Column:
    label: str
    num_labelled: int | Literal["all"]
    overrides: Mapping[str, Any] = field(default_factory=dict)


def _strategy(symbol: str) -> str:
    return {"G^R": "random", "G^D": "domain", "L^R": "random", "L^D": "domain"}[symbol]


def _spec(table: int, dataset: str, base: ExperimentConfig) -> tuple[list[_Row], list[_Column]]:
    """Rows and columns of `table` in the paper's order, each with the settings it changes."""
    from ..paper import paper_results, paper_table

    printed = paper_table(table, dataset)
    cols: list[_Column] = []
    rows: list[_Row] = []
    if table == 4:
        for label in printed.columns:
            k, n = label.split(" / ")
            cols.append(_Column(label, int(n), {"local_stage.region_size": int(k.split("x")[0])}))
    else:
        for label in printed.columns:
            cols.append(_Column(label, "all" if label == "all" else int(label)))
    s = base.global_stage.num_partitions
    if table not in (1, 8):
        rows.append(_Row(RANDOM_ROW, "random"))
    for label in printed.rows:
        rec = next(r for r in paper_results(table, dataset)
                   if r.dataset == dataset and _row_label(table, r) == label)
        if table == 1 or label == "random init. (benchmark)":
            rows.append(_Row(label, "benchmark"))
        elif table == 2:
            rows.append(_Row(label, "global", {"global_stage.strategy": "domain",
                                               "global_stage.volumes_per_batch": max(
                                                   1, int(rec.batch_size or 40) // s)}))
        elif table == 3:
            p = int(rec.partitions or 4)
            rows.append(_Row(label, "global", {"global_stage.strategy": "domain",
                                               "global_stage.num_partitions": p,
                                               "global_stage.volumes_per_batch": 40 // p}))
        elif table == 7:
            rows.append(_Row(label, "joint", {"local_stage.lambda_local": float(
                rec.lambda_local or 1.0), "local_stage.num_decoder_blocks": 3,
                "global_stage.strategy": "domain", "local_stage.strategy": "domain"}))
        elif rec.encoder == "random":
            rows.append(_Row(label, "random"))
        else:
            over: dict[str, Any] = {"global_stage.strategy": _strategy(rec.encoder)}
            if rec.mixup:
                over["finetune.mixup"] = True
            if rec.decoder == "random":
                rows.append(_Row(label, "global", over))
                continue
            over["local_stage.strategy"] = _strategy(rec.decoder)
            if rec.decoder_blocks is not None:
                over["local_stage.num_decoder_blocks"] = rec.decoder_blocks
            if rec.region is not None and table != 4:
                over["local_stage.region_size"] = int(rec.region.split("x")[0])
            rows.append(_Row(label, "local", over))
    return rows, cols


def _row_label(table: int, rec: Any) -> str:
    from ..paper import _row_col

    return _row_col(table, rec)[0]


# ------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class TableCell:
    """One printed cell of a table: its row, column and the fine-tuning runs averaged in it.

    Attributes
    ----------
    row, column : str
        Labels as printed (:func:`~contrastlocal.paper.paper_table`; ``"random init. (ours
        only)"`` is our baseline row in the tables that print none).
    paper : float or None
        The paper's number there (None: not printed).
    runs : tuple of FinetuneCell
        One per combination (empty: not run, e.g. a column left out).

    Examples
    --------
    >>> from contrastlocal.training import preset, table_plan
    >>> plan = table_plan(6, preset("acdc"), {1: [1, 2]}, out="run")
    >>> cell = next(c for c in plan.cells if c.row == "G^D + L^D d_3" and c.column == "1")
    >>> cell.paper, len(cell.runs), cell.runs[0].init
    (0.725, 2, 'GD+LD')
    """

    row: str
    column: str
    paper: float | None
    runs: tuple[FinetuneCell, ...]


@dataclass
class TablePlan:
    """What a table needs: its stages, fine-tuning runs and printed cells (nothing trained).

    Attributes
    ----------
    table : int
        The supplement's table number.
    dataset : str
        The dataset.
    stages : tuple of StageCell
        Distinct pre-training runs (stage 1, joint, then stage 2), each once.
    runs : tuple of FinetuneCell
        Distinct fine-tuning runs, each once.
    cells : tuple of TableCell
        The printed cells, row by row.
    rows, columns : tuple of str
        Row and column labels in printed order.
    out : Path
        The run directory.
    row_header, column_header : str
        What the rows and the columns vary, as printed.
    notes : tuple of str
        Cells that cannot be run with these splits (e.g. no fully supervised list).

    Examples
    --------
    >>> from contrastlocal.training import preset, table_plan
    >>> plan = table_plan(6, preset("acdc"), {1: [1, 2, 3, 4, 5], 2: [1, 2, 3, 4, 5],
    ...                                        8: [1, 2, 3]}, out="run")
    >>> {kind: n for kind, (n, done) in plan.counts().items()}
    {'stage1': 2, 'stage2': 12, 'finetune': 195}
    >>> round(plan.projection((19.3, 18.6, 26.1))[0], 1)
    14.9
    """

    table: int
    dataset: str
    stages: tuple[StageCell, ...]
    runs: tuple[FinetuneCell, ...]
    cells: tuple[TableCell, ...]
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    out: Path
    row_header: str = ""
    column_header: str = ""
    notes: tuple[str, ...] = ()

    def counts(self) -> dict[str, tuple[int, int]]:
        """Return ``{kind: (runs, done)}`` for ``"stage1"``, ``"stage2"`` and ``"finetune"``.

        Returns
        -------
        dict of str to (int, int)
            Distinct runs of each kind and how many are finished on disk; stage 1 counts the
            global and the joint pre-training runs.
        """
        out: dict[str, tuple[int, int]] = {}
        for name, kinds in (("stage1", ("global", "joint")), ("stage2", ("local",))):
            sel = [s for s in self.stages if s.kind in kinds]
            out[name] = (len(sel), sum(_stage_done(s) for s in sel))
        out["finetune"] = (len(self.runs), sum(_cell_done(c) for c in self.runs))
        return out

    def projection(
        self, iteration_ms: tuple[float, float, float] | None
    ) -> tuple[float, float] | None:
        """Return (total, remaining) hours at `iteration_ms`, runs one after another.

        Parameters
        ----------
        iteration_ms : (float, float, float) or None
            Milliseconds per iteration of stage 1, stage 2 and fine-tuning (None: no cost
            known).

        Returns
        -------
        (float, float) or None
            Hours of every run and of the unfinished ones: a stage costs its iterations × its
            ms (a joint run both stages' ms), a fine-tuning run its iterations × the fine-tuning
            ms (validation and evaluation not counted); None without `iteration_ms`.
        """
        if iteration_ms is None:
            return None
        g_ms, l_ms, f_ms = iteration_ms
        total = remaining = 0.0
        for s in self.stages:
            if s.kind == "global":
                ms = s.config.global_stage.iterations * g_ms
            elif s.kind == "local":
                ms = s.config.local_stage.iterations * l_ms
            else:
                ms = s.config.global_stage.iterations * (g_ms + l_ms)
            total += ms
            remaining += 0.0 if _stage_done(s) else ms
        for c in self.runs:
            ms = c.config.finetune.iterations * f_ms
            total += ms
            remaining += 0.0 if _cell_done(c) else ms
        return total / 3.6e6, remaining / 3.6e6

    def describe(self, iteration_ms: tuple[float, float, float] | None = None,
                 source: str = "") -> str:
        """Return the dry run's report: run counts, how many are done, the projected time.

        Parameters
        ----------
        iteration_ms : (float, float, float), optional
            As :meth:`projection`.
        source : str, default ""
            Where `iteration_ms` comes from (printed with it).

        Returns
        -------
        str
            A few lines of text.
        """
        c = self.counts()
        lines = [
            f"Table {self.table} ({self.dataset}) in {os.fspath(self.out)}: "
            f"{len(self.cells)} printed cells",
            f"  stage-1 runs:     {c['stage1'][0]:4d} ({c['stage1'][1]} done; global or joint)",
            f"  stage-2 runs:     {c['stage2'][0]:4d} ({c['stage2'][1]} done)",
            f"  fine-tuning runs: {c['finetune'][0]:4d} ({c['finetune'][1]} done)",
        ]
        hours = self.projection(iteration_ms)
        if hours is None:
            lines.append("  projected time: no per-iteration cost known for this device; pass "
                         "--iteration-ms STAGE1,STAGE2,FINETUNE (ms)")
        else:
            g, loc, f = iteration_ms or (0.0, 0.0, 0.0)
            lines.append(
                f"  projected time: {hours[0]:.2f} h in all, {hours[1]:.2f} h left, at "
                f"{g:g} / {loc:g} / {f:g} ms per iteration (stage 1 / 2 / fine-tuning; "
                f"{source}), runs one after another; a projection, not a measurement"
            )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _stage_done(cell: StageCell) -> bool:
    return _read_done(cell.directory, "done.json", cell.key) is not None


def _cell_done(cell: FinetuneCell) -> bool:
    return _read_done(cell.directory, "result.json", cell.key) is not None


def _read_done(directory: Path | None, name: str, key: str) -> dict[str, Any] | None:
    if directory is None:
        return None
    path = directory / name
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("key") == key else None


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _check_table(table: object, dataset: object) -> tuple[int, str]:
    if isinstance(table, bool) or not isinstance(table, int) or table not in REPRODUCIBLE_TABLES:
        msg = (f"`table` must be one of {', '.join(map(str, REPRODUCIBLE_TABLES))}; "
               f"got {table!r}.")
        raise ValueError(msg)
    covered = REPRODUCIBLE_TABLES[table]
    if dataset not in covered:
        msg = (f"`dataset` {dataset!r} is not covered by Table {table}; it covers "
               f"{', '.join(map(repr, covered))}.")
        raise ValueError(msg)
    assert isinstance(dataset, str)
    return table, dataset


def table_plan(
    table: int,
    config: ExperimentConfig,
    labelled: Mapping[int, Sequence[int]],
    *,
    out: str | os.PathLike[str],
    benchmark: Mapping[str, int] | None = None,
    num_labelled: Sequence[int] | None = None,
    combinations: Sequence[int] | None = None,
    rows: Sequence[str] | None = None,
    data_tag: str = "",
    pretrain_count: int | None = None,
) -> TablePlan:
    """Plan the runs of `table` on `config`'s dataset, each keyed by its settings.

    Parameters
    ----------
    table : int
        The supplement's table number (:data:`~contrastlocal.training.tables.REPRODUCIBLE_TABLES`).
    config : ExperimentConfig
        The shared base settings (the dataset's preset with the caller's overrides); each row
        and column changes only what the table varies.
    labelled : mapping of int to sequence of int
        ``{|X_tr|: combinations}`` the splits hold.
    out : path
        The run directory (cells under ``stages/`` and ``cells/``).
    benchmark : mapping of str to int, optional
        Column label -> number of training volumes of the fully supervised benchmark's columns
        (Tables 1 and 8); its runs have combination 0. None: benchmark cells are not run.
    num_labelled, combinations : sequence of int, optional
        Restrict the columns' |X_tr| and the combinations (default: all the splits hold).
    rows : sequence of str, optional
        Run only these rows (labels as printed).
    data_tag : str, default ""
        Names the data in the keys.
    pretrain_count : int, optional
        Number of pre-training volumes: a stage-1 batch needing more fails here.

    Returns
    -------
    TablePlan
        The distinct stages and runs, and the printed cells.

    Raises
    ------
    ValueError
        For an unknown table, a dataset the table does not cover, an unknown row, or a
        pre-training batch larger than the pre-training volumes allow.

    Examples
    --------
    >>> from contrastlocal.training import preset, table_plan
    >>> plan = table_plan(4, preset("acdc"), {1: [1], 2: [1]}, out="run")
    >>> plan.rows[:3], plan.columns
    (('random init. (ours only)', 'd_1', 'd_2'), ('1x1 / 1', '1x1 / 2', '3x3 / 1', '3x3 / 2'))
    >>> [s.kind for s in plan.stages].count("local")  # K = 1x1, 3x3 and l = 1 ... 5
    10
    """
    from ..paper import paper_table

    table, dataset = _check_table(table, config.dataset)
    printed = paper_table(table, dataset)
    spec_rows, spec_cols = _spec(table, dataset, config)
    if rows is not None:
        known = [r.label for r in spec_rows]
        unknown = [r for r in rows if r not in known]
        if unknown:
            msg = f"`rows` must be among {known} for Table {table}; got {unknown}."
            raise ValueError(msg)
        spec_rows = [r for r in spec_rows if r.label in rows]
    root = Path(out)
    stages: dict[str, StageCell] = {}
    runs: dict[str, FinetuneCell] = {}
    cells: list[TableCell] = []
    notes: list[str] = []
    too_large: list[tuple[str, int, int]] = []
    for row in spec_rows:
        for col in spec_cols:
            paper = (printed.cell(row.label, col.label) if row.label in printed.rows else None)
            if row.label in printed.rows and paper is None:
                continue  # the paper prints nothing there (Table 8's benchmark column)
            cfg = config.replace(**{**row.overrides, **col.overrides})
            pairs = _labelled_for(col, labelled, benchmark, num_labelled, combinations)
            if (not pairs and col.num_labelled == "all") or (
                    row.init == "benchmark" and benchmark is None):
                notes.append(f"{row.label} / {col.label}: the splits hold no fully supervised "
                             "(all labelled) list; not run")
                pairs = []
            source = _source(row.init, cfg, root, data_tag, stages, pretrain_count, too_large,
                             row.label) if pairs else None
            mine = []
            for n, c in pairs:
                run = plan_finetune(cfg, n, c, source, out=root, layout=KEYED_LAYOUT,
                                    data_tag=data_tag)
                mine.append(runs.setdefault(run.key, run))
            cells.append(TableCell(row.label, col.label, paper, tuple(mine)))
    if too_large:
        bad = dict.fromkeys(too_large)
        what = ", ".join(f"{label!r} ({need} volumes × S = {s} partitions)"
                         for label, need, s in bad)
        fits = [r.label for r in spec_rows
                if r.label not in {b[0] for b in bad}]
        msg = (
            f"Table {table} on {dataset}: the stage-1 batch of {what} needs that many distinct "
            f"pre-training volumes per batch, but the pre-training split holds "
            f"{pretrain_count}; nothing was trained. Run the rows that fit (--rows / `rows=` "
            f"among {fits}) or pre-train on a split with enough volumes."
        )
        raise ValueError(msg)
    order = {"global": 0, "joint": 1, "local": 2}
    ordered = sorted(stages.values(), key=lambda s: order[s.kind])
    return TablePlan(
        table, dataset, tuple(ordered), tuple(runs.values()), tuple(cells),
        tuple(r.label for r in spec_rows), tuple(c.label for c in spec_cols), root,
        printed.row_header, printed.column_header, tuple(dict.fromkeys(notes)),
    )


def _labelled_for(
    col: _Column,
    labelled: Mapping[int, Sequence[int]],
    benchmark: Mapping[str, int] | None,
    num_labelled: Sequence[int] | None,
    combinations: Sequence[int] | None,
) -> list[tuple[int, int]]:
    if col.num_labelled == "all" or (benchmark is not None and col.label in benchmark):
        if benchmark is None or col.label not in benchmark:
            return []
        return [(benchmark[col.label], 0)]
    n = col.num_labelled
    if n not in labelled or (num_labelled is not None and n not in num_labelled):
        return []
    return [(n, c) for c in labelled[n] if combinations is None or c in combinations]


def _source(
    init: Init,
    cfg: ExperimentConfig,
    root: Path,
    data_tag: str,
    stages: dict[str, StageCell],
    pretrain_count: int | None,
    too_large: list[tuple[str, int, int]],
    label: str,
) -> StageCell | None:
    if init in ("random", "benchmark"):
        return None
    need = cfg.global_stage.volumes_per_batch
    if pretrain_count is not None and need > pretrain_count:
        too_large.append((label, need, cfg.global_stage.num_partitions))
    if init == "joint":
        j = plan_joint(cfg, out=root, layout=KEYED_LAYOUT, data_tag=data_tag)
        return stages.setdefault(j.key, j)
    g, loc = plan_stages(cfg, out=root, layout=KEYED_LAYOUT, data_tag=data_tag)
    g = stages.setdefault(g.key, g)
    if init == "global":
        return g
    return stages.setdefault(loc.key, loc)


# ------------------------------------------------------------------------------ the result
@dataclass
class TableResult:
    """What :func:`~contrastlocal.training.reproduce_table` returns.

    Attributes
    ----------
    plan : TablePlan
        The runs and cells.
    values : dict
        ``{(row, column): [test Dice per combination]}`` of the cells run.
    trained : dict of str to int
        Runs trained by this call (not read back from a finished cell): ``"stage1"``,
        ``"stage2"``, ``"finetune"``.
    files : list of Path
        Tables and plot written.
    seconds : float
        Wall time.

    Examples
    --------
    >>> from contrastlocal.training import reproduce_table
    >>> result = reproduce_table(4, dataset="acdc", data="ACDC/database",
    ...                          out="runs/tables")  # doctest: +SKIP
    >>> result.records()[0]["paper"], result.trained  # doctest: +SKIP
    (0.738, {'stage1': 0, 'stage2': 7, 'finetune': 70})
    """

    plan: TablePlan
    values: dict[tuple[str, str], list[float]]
    trained: dict[str, int]
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def records(self) -> list[dict[str, Any]]:
        """Return one record per printed cell.

        Returns
        -------
        list of dict
            ``row``, ``column``, ``mean``, ``std`` (sample standard deviation over the
            combinations, 0 for one run), ``n``, ``values``, ``paper`` and ``difference``
            (ours − paper); None where not run or not printed.
        """
        out = []
        for cell in self.plan.cells:
            vals = self.values.get((cell.row, cell.column), [])
            mean = float(np.mean(vals)) if vals else None
            std = (float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0) if vals else None
            diff = None if mean is None or cell.paper is None else mean - cell.paper
            out.append({"row": cell.row, "column": cell.column, "mean": mean, "std": std,
                        "n": len(vals), "values": vals, "paper": cell.paper,
                        "difference": diff})
        return out

    def to_markdown(self) -> str:
        """Return the table in the paper's layout as Markdown.

        Returns
        -------
        str
            A title line and a pipe table; each cell ``mean ± std (n=N; paper P, Δ ±D)``.
        """
        from ..paper import _math  # the paper's tables' Markdown labels

        recs = {(r["row"], r["column"]): r for r in self.records()}
        p = self.plan
        head = f"| {p.row_header} | " + " | ".join(
            f"{p.column_header} = {c}" if i == 0 else c for i, c in enumerate(p.columns)) + " |"
        head = head.replace("|X_tr|", "$\\lvert X_{tr}\\rvert$")
        lines = [
            f"Table {p.table} ({p.dataset}): test Dice, ours (mean ± std over the combinations, "
            "n runs) against the paper's",
            "",
            head,
            "|---" * (len(p.columns) + 1) + "|",
        ]
        for row in p.rows:
            cells = []
            for col in p.columns:
                r = recs.get((row, col))
                cells.append("–" if r is None else _md_cell(r))
            lines.append(f"| {_math(row)} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """Return the table as CSV, one line per printed cell.

        Returns
        -------
        str
            Header ``table, dataset, row, column, mean, std, n, paper, difference``.
        """
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["table", "dataset", "row", "column", "mean", "std", "n", "paper",
                    "difference"])
        for r in self.records():
            w.writerow([self.plan.table, self.plan.dataset, r["row"], r["column"],
                        _num(r["mean"]), _num(r["std"]), r["n"], _num(r["paper"]),
                        _num(r["difference"])])
        return buf.getvalue()


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"


def _md_cell(r: Mapping[str, Any]) -> str:
    paper = "–" if r["paper"] is None else f"{r['paper']:.3f}"
    if r["mean"] is None:
        return f"not run (paper {paper})"
    text = f"{r['mean']:.3f} ± {r['std']:.3f} (n={r['n']}; paper {paper}"
    if r["difference"] is not None:
        text += f", Δ {r['difference']:+.3f}"
    return text + ")"


def _write_outputs(result: TableResult, plots: bool) -> list[Path]:
    p = result.plan
    stem = p.out / f"table{p.table}_{p.dataset}"
    files = []
    for suffix, text in ((".md", result.to_markdown()), (".csv", result.to_csv())):
        path = stem.with_suffix(suffix)
        path.write_text(text)
        files.append(path)
    meta = json.loads((p.out / _META).read_text()) if (p.out / _META).is_file() else {}
    _write_json(stem.with_suffix(".json"), {
        "table": p.table, "dataset": p.dataset, "rows": list(p.rows),
        "columns": list(p.columns), "row_header": p.row_header,
        "column_header": p.column_header, "cells": result.records(),
        "std": "sample standard deviation over the combinations (ddof = 1; 0 for one run)",
        "fidelity": meta.get("fidelity"), "notes": list(p.notes),
    })
    files.append(stem.with_suffix(".json"))
    if plots:
        png = _plot(result, stem.with_suffix(".png"))
        if png is not None:
            files.append(png)
    return files


def _plot(result: TableResult, path: Path) -> Path | None:
    from .._deps import optional

    if optional("matplotlib", extra="torch", purpose="the plot of ours against the paper's") \
            is None:
        return None  # warned
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(r["paper"], r["mean"], r["std"]) for r in result.records()
           if r["paper"] is not None and r["mean"] is not None]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if pts:
        xs, ys, es = zip(*pts, strict=True)
        ax.errorbar(xs, ys, yerr=es, fmt="o", ms=4, capsize=2)
        lo = min(min(xs), min(ys)) - 0.05
        hi = max(max(xs), max(ys)) + 0.05
    else:
        lo, hi = 0.0, 1.0
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="ours = paper")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("paper's Dice")
    ax.set_ylabel("our Dice (mean ± std over combinations)")
    ax.set_title(f"Table {result.plan.table} ({result.plan.dataset})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------ run directory
_META = "reproduce.json"


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _base_settings(config: ExperimentConfig) -> dict[str, Any]:
    d = config_to_dict(config)
    for k in ("runtime", "data", "cache", "out", "num_labelled", "combination"):
        d.pop(k, None)
    return d


def _check_rundir(out: Path, meta: Mapping[str, Any]) -> bool:
    """Refuse a run directory holding other shared settings; True if it already holds these."""
    path = out / _META
    if not path.is_file():
        return False
    old = json.loads(path.read_text())
    a, b = _flat(old), _flat(meta)
    first = ("dataset", "splits", "n4", "fidelity.name")
    for k in sorted(set(a) | set(b), key=lambda k: (first.index(k) if k in first else 9, k)):
        if a.get(k) != b.get(k):
            msg = (f"`out` {os.fspath(out)!r} holds runs with {k} = {a.get(k)!r} ({_META}); "
                   f"this call has {k} = {b.get(k)!r}. Use another run directory, or the same "
                   "shared settings.")
            raise ValueError(msg)
    return True


# ------------------------------------------------------------------------------ running
Splits = Mapping[int, Mapping[int, tuple[Sequence[Any], Sequence[Any]]]]


def run_table_plan(
    plan: TablePlan,
    pretrain: Callable[[], Sequence[Any]],
    sets: Callable[[int, int], tuple[Sequence[Any], Sequence[Any]]],
    test: Callable[[], Sequence[Any]],
    *,
    concurrent: int = 1,
    on_run: Callable[[str, str], None] | None = None,
    on_cell: Callable[[FinetuneCell, float], None] | None = None,
    log: Callable[[str], None] | None = None,
    plots: bool = True,
) -> TableResult:
    """Run the unfinished stages and fine-tuning runs of `plan`, then write the table.

    Parameters
    ----------
    plan : TablePlan
        From :func:`~contrastlocal.training.table_plan`.
    pretrain : callable
        Returns the pre-training volumes (called only if a stage must train).
    sets : callable
        ``sets(|X_tr|, combination) -> (train, val)`` volumes (combination 0: the benchmark).
    test : callable
        Returns the test volumes (called only if a run must be evaluated).
    concurrent : int, default 1
        Fine-tuning runs with identical settings trained at once in one grouped network
        (the grouped driver, ``finetune_grid``); 1: one by one with
        :func:`~contrastlocal.training.run_cell` (resumable mid-run; a group of K > 1 keeps no
        checkpoints and restarts after an interruption).
    on_run : callable, optional
        ``on_run(kind, key)`` before each training run (``"global"``, ``"local"``,
        ``"joint"``, ``"finetune"``).
    on_cell : callable, optional
        ``on_cell(run, test_dice)`` after each fine-tuning run is finished and recorded.
    log : callable, optional
        Receives progress lines.
    plots : bool, default True
        Write the plot.

    Returns
    -------
    TableResult
        The values and what was trained.
    """
    t0 = time.perf_counter()
    say = log or (lambda _t: None)
    trained = {"stage1": 0, "stage2": 0, "finetune": 0}
    todo = [c for c in plan.runs if not _cell_done(c)]
    needed: dict[str, StageCell] = {}
    for c in todo:
        s = c.source
        while s is not None:
            needed[s.key] = s
            s = s.parent
    cache: dict[str, Any] = {}

    def volumes() -> Sequence[Any]:
        if "pretrain" not in cache:
            cache["pretrain"] = pretrain()
        return cache["pretrain"]  # type: ignore[no-any-return]

    for stage in plan.stages:
        if stage.key not in needed or _stage_done(stage):
            continue
        _run_stage(stage, volumes, on_run, say)
        trained["stage2" if stage.kind == "local" else "stage1"] += 1
    if todo:
        test_vols = test()
        groups: dict[str, list[FinetuneCell]] = {}
        for c in todo:
            groups.setdefault(settings_key(config_to_dict(c.config)), []).append(c)
        for group in groups.values():
            for start in range(0, len(group), concurrent):
                chunk = group[start:start + concurrent]
                _run_cells(chunk, sets, test_vols, concurrent, on_run, on_cell, say)
                trained["finetune"] += len(chunk)
    values: dict[tuple[str, str], list[float]] = {}
    for cell in plan.cells:
        vals = []
        for run in cell.runs:
            done = _read_done(run.directory, "result.json", run.key)
            if done is not None:
                vals.append(float(done["test_dice"]))
        if vals:
            values[(cell.row, cell.column)] = vals
    result = TableResult(plan, values, trained)
    result.files = _write_outputs(result, plots)
    result.seconds = time.perf_counter() - t0
    for f in result.files:
        say(f"wrote {f}")
    return result


def _run_stage(
    stage: StageCell,
    volumes: Callable[[], Sequence[Any]],
    on_run: Callable[[str, str], None] | None,
    say: Callable[[str], None],
) -> None:
    from .recipe import run_stage
    from .stages import pretrain_joint

    if on_run is not None:
        on_run(stage.kind, stage.key)
    t = time.perf_counter()
    if stage.kind == "joint":
        res = pretrain_joint(volumes(), stage.config, out=stage.directory, resume=True)
    else:
        encoder = None
        if stage.parent is not None:
            assert stage.parent.directory is not None
            encoder = stage.parent.directory / "final.pt"
        res = run_stage(stage, volumes(), encoder=encoder, resume=True)
    assert stage.directory is not None
    _write_json(stage.directory / "done.json", {
        "key": stage.key, "kind": stage.kind, "iterations": res.iterations,
        "seconds": time.perf_counter() - t,
    })
    say(f"{stage.kind} stage {stage.key}: {res.iterations} iterations, "
        f"{time.perf_counter() - t:.1f} s")


def _init_path(cell: FinetuneCell) -> Path | None:
    if cell.source is None:
        return None
    assert cell.source.directory is not None
    return cell.source.directory / "final.pt"


def _run_cells(
    chunk: Sequence[FinetuneCell],
    sets: Callable[[int, int], tuple[Sequence[Any], Sequence[Any]]],
    test: Sequence[Any],
    concurrent: int,
    on_run: Callable[[str, str], None] | None,
    on_cell: Callable[[FinetuneCell, float], None] | None,
    say: Callable[[str], None],
) -> None:
    from .evaluation import evaluate
    from .recipe import run_cell

    data = [sets(c.num_labelled, c.combination) for c in chunk]
    for c in chunk:
        if on_run is not None:
            on_run("finetune", c.key)
    if concurrent == 1:
        results = [run_cell(c, tr, va, init=_init_path(c), resume=True)
                   for c, (tr, va) in zip(chunk, data, strict=True)]
    else:
        from ._grouped import GroupedCell, finetune_grid

        grouped = [GroupedCell(tr, va, init=_init_path(c), baseline=c.source is None,
                               out=c.directory) for c, (tr, va) in zip(chunk, data, strict=True)]
        assert chunk[0].directory is not None
        # a killed group resumes from its checkpoints (RUNDIR/cells/.groups/group-<digest>)
        results = finetune_grid(grouped, chunk[0].config, concurrent=len(chunk),
                                checkpoint_root=chunk[0].directory.parent / ".groups")
    for c, res in zip(chunk, results, strict=True):
        net = res.network
        ev = evaluate(net, test, num_classes=c.config.model.num_classes,
                      device=next(net.parameters()).device)
        assert c.directory is not None
        dice = float(ev.mean_dice)
        _write_json(c.directory / "result.json", {
            "key": c.key, "init": c.init, "num_labelled": c.num_labelled,
            "combination": c.combination, "source": None if c.source is None else c.source.key,
            "test_dice": dice, "summary": ev.summary(), "best_iteration": res.best_iteration,
            "best_validation_dice": res.best_score, "concurrent": concurrent,
        })
        say(f"{c.init} |X_tr| = {c.num_labelled} c{c.combination} ({c.key}): test Dice "
            f"{dice:.3f}")
        if on_cell is not None:
            on_cell(c, dice)


# ------------------------------------------------------------------------------ entry point
def reproduce_table(
    table: int,
    *,
    dataset: str,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: ExperimentConfig | None = None,
    overrides: Mapping[str, Any] | None = None,
    fidelity: str = "paper",
    fidelity_items: Mapping[str, Any] | None = None,
    device: str | None = None,
    concurrent: int | None = None,
    dry_run: bool = False,
    splits: Literal["paper", "auto"] = "paper",
    cache: str | os.PathLike[str] | None = None,
    n4: Any = None,
    workers: int | None = 0,
    num_labelled: Sequence[int] | None = None,
    combinations: Sequence[int] | None = None,
    rows: Sequence[str] | None = None,
    iteration_ms: tuple[float, float, float] | None = None,
    plots: bool = True,
    log: Callable[[str], None] | None = None,
    on_run: Callable[[str, str], None] | None = None,
    on_cell: Callable[[FinetuneCell, float], None] | None = None,
) -> TableResult | TablePlan:
    """Reproduce one of the paper's tables on a dataset folder (``contrastlocal reproduce``).

    Parameters
    ----------
    table : int
        The supplement's table number: 1 (the fully supervised benchmark), 2–8.
    dataset : str
        A dataset the table covers (:data:`~contrastlocal.training.tables.REPRODUCIBLE_TABLES`).
    data : path
        The dataset folder as distributed.
    out : path
        The run directory: ``reproduce.json`` (shared settings), ``stages/``, ``cells/``,
        ``cache/`` (unless `cache`) and the tables ``table<N>_<dataset>.{md,csv,json,png}``.
    config : ExperimentConfig, optional
        Base settings (default: the dataset's preset).
    overrides : mapping, optional
        Dotted settings applied over `config` (``--set``); ``fidelity.ITEM`` items go to the
        fidelity.
    fidelity : {"paper", "authors"}, default "paper"
        Passed as the config override ``fidelity=...`` where the settings have a fidelity
        section; otherwise validated with :class:`~contrastlocal.training.fidelity.FidelityConfig`
        and recorded in ``reproduce.json`` and the keys (the stages do not read it then).
    fidelity_items : mapping, optional
        Item-by-item fidelity overrides.
    device : str, optional
        ``runtime.device``.
    concurrent : int, optional
        Fine-tuning runs trained at once (default: 1 on the CPU, else
        the memory estimate of the grouped driver); checked against the memory
        estimate before any stage runs.
    dry_run : bool, default False
        Plan only: return the :class:`TablePlan` (its :meth:`TablePlan.describe` is what the
        command prints) without training or preparing anything the plan does not need.
    splits : {"paper", "auto"}, default "paper"
        The paper's splits or automatic ones of the cases found (small folders, tests).
    cache : path, optional
        Root of the prepared caches (default: ``out/cache``).
    n4 : {"none", "default", "legacy"}, optional
        N4 bias correction when preparing (default: the dataset's preset).
    workers : int, optional, default 0
        Processes preparing the cache (None: one per CPU; 0: none).
    num_labelled, combinations : sequence of int, optional
        Restrict the columns' |X_tr| and the combinations.
    rows : sequence of str, optional
        Run only these rows (labels as printed).
    iteration_ms : (float, float, float), optional
        Milliseconds per iteration of stage 1, stage 2 and fine-tuning for the projection (default:
        :data:`~contrastlocal.training.tables.DEFAULT_ITERATION_MS` of the device type).
    plots : bool, default True
        Write the plot of ours against the paper's.
    log : callable, optional
        Receives progress lines (the plan first).
    on_run : callable, optional
        ``on_run(kind, key)`` before each training run (``"global"``, ``"local"``, ``"joint"``,
        ``"finetune"``).
    on_cell : callable, optional
        ``on_cell(run, test_dice)`` after each fine-tuning run is finished and recorded.

    Returns
    -------
    TableResult or TablePlan
        The result (the plan with `dry_run`).

    Raises
    ------
    ValueError
        For an unknown table, a dataset the table does not cover, a misspelt fidelity item,
        a run directory holding other shared settings, a `concurrent` that does not fit, or a
        pre-training batch the pre-training split cannot form (all before any training).

    Examples
    --------
    >>> from contrastlocal.training import reproduce_table
    >>> result = reproduce_table(6, dataset="acdc", data="ACDC/database", out="runs/tables",
    ...                          device="cuda")  # doctest: +SKIP
    >>> print(result.to_markdown())  # doctest: +SKIP
    """
    from .config import preset
    from .fidelity import FidelityConfig

    _check_table(table, dataset)
    if splits not in ("paper", "auto"):
        msg = f"`splits` must be 'paper' or 'auto'; got {splits!r}."
        raise ValueError(msg)
    say = log or (lambda _t: None)
    cfg = config if config is not None else preset(dataset)
    if cfg.dataset != dataset:
        msg = f"`config` is for dataset {cfg.dataset!r}, but `dataset` is {dataset!r}."
        raise ValueError(msg)
    over = dict(overrides or {})
    items = dict(fidelity_items or {})
    for k in [k for k in over if k.startswith("fidelity.")]:
        items[k.split(".", 1)[1]] = over.pop(k)
    fid = FidelityConfig.preset(fidelity, **items)  # validates the name and every item
    wired = "fidelity" in getattr(type(cfg), "__dataclass_fields__", {})
    if wired:
        over["fidelity"] = fidelity
        over.update({f"fidelity.{k}": v for k, v in items.items()})
    if device is not None:
        over["runtime.device"] = device
    if over:
        cfg = cfg.replace(**over)
    fid_tag = "" if (wired or fid == FidelityConfig.preset("paper")) else \
        f"|fidelity:{settings_key(fid.to_dict())}"
    root = Path(out)
    meta = {"dataset": dataset, "splits": splits, "n4": n4,
            "fidelity": {"name": fidelity, "items": fid.to_dict(), "wired_into_config": wired},
            "settings": _base_settings(cfg)}
    recorded = _check_rundir(root, meta)  # before anything is read or trained
    dev = cfg.runtime.device
    if concurrent is not None and (
        isinstance(concurrent, bool) or not isinstance(concurrent, int) or concurrent < 1
    ):
        msg = f"`concurrent` must be a positive integer; got {concurrent!r}."
        raise ValueError(msg)
    if dry_run and splits == "paper" and dataset != "cityscapes":
        from ..data.registry import get_dataset

        prepared = None  # the paper's lists are known without reading the folder
        s = get_dataset(dataset).paper_splits()
    else:
        prepared = _open_data(dataset, data, cache if cache is not None else root / "cache",
                              cfg, splits, n4, workers, num_labelled)
        s = prepared.splits
    labelled = {n: sorted(v) for n, v in s.finetune.items()}
    benchmark = _benchmark_columns(table, s)
    data_tag = f"{splits}:{n4 or 'preset'}{fid_tag}"
    plan = table_plan(table, cfg, labelled, out=root, benchmark=benchmark,
                      num_labelled=num_labelled, combinations=combinations, rows=rows,
                      data_tag=data_tag, pretrain_count=len(s.pretrain))
    if iteration_ms is None:
        iteration_ms = DEFAULT_ITERATION_MS.get(dev.split(":")[0])
        source = ("default: one NVIDIA H200 at the paper's settings, docs/benchmarks.md"
                  if iteration_ms is not None else "")
    else:
        source = "given"
    if dry_run:
        say(plan.describe(iteration_ms, source))
        return plan
    if concurrent is None:
        from ._grouped import default_concurrent

        concurrent = 1 if dev == "cpu" else default_concurrent(cfg, dev)
    if concurrent > 1:  # before any stage runs: a K that does not fit fails here
        from ._grouped import check_concurrent

        check_concurrent(concurrent, cfg, dev)
    from .._lock import DirectoryLock, LockHeldError

    root.mkdir(parents=True, exist_ok=True)
    lock = DirectoryLock(root, purpose=f"reproduce table {table} ({dataset})")
    try:
        lock.acquire()
    except LockHeldError as err:  # two runners in one directory would train the same runs
        msg = f"`out` {os.fspath(root)!r} is in use: {err}"
        raise ValueError(msg) from None
    try:
        if not recorded:
            _write_json(root / _META, meta)
        say(plan.describe(iteration_ms, source))
        assert prepared is not None
        volumes = _Volumes(prepared, benchmark_sets=_benchmark_sets(table, s))
        return run_table_plan(plan, volumes.pretrain, volumes.sets, volumes.test,
                              concurrent=concurrent, on_run=on_run, on_cell=on_cell, log=say,
                              plots=plots)
    finally:
        lock.release()


def _open_data(dataset: str, data: str | os.PathLike[str], cache: str | os.PathLike[str],
               cfg: ExperimentConfig, splits: Literal["paper", "auto"], n4: Any,
               workers: int | None, num_labelled: Sequence[int] | None) -> Any:
    from ..data.volumes import open_dataset

    root = Path(data)
    if not root.is_dir():
        msg = f"`data` {os.fspath(root)!r} does not exist or is not a folder."
        raise ValueError(msg)
    return open_dataset(dataset, root, cache, image_size=cfg.model.image_size, n4=n4,
                        splits=splits, num_labelled=num_labelled, workers=workers,
                        progress=cfg.runtime.progress)


def _benchmark_columns(table: int, s: Any) -> dict[str, int] | None:
    """Columns of the fully supervised benchmark -> training volumes (``trall`` of the splits)."""
    trall = getattr(s, "trall", None)
    if trall is None:
        return None
    n = len(trall[0])
    if table == 1:  # "78" (the authors' list, 77 here without its validation volume) and "50"
        return {"78": n, "50": min(50, n)}
    if table == 8:
        return {"all": n}
    return None


def _benchmark_sets(table: int, s: Any) -> dict[int, tuple[tuple[str, ...], tuple[str, ...]]]:
    cols = _benchmark_columns(table, s) or {}
    train, val = s.trall if s.trall is not None else ((), ())
    return {n: (tuple(train)[:n], tuple(val)) for n in cols.values()}


class _Volumes:
    """The volumes a plan asks for, loaded on first use."""

    def __init__(self, data: Any, benchmark_sets: Mapping[int, tuple[Sequence[str],
                                                                     Sequence[str]]]) -> None:
        self.data = data
        self.bench = benchmark_sets
        self.splits = data.finetune_volumes()

    def pretrain(self) -> Sequence[Any]:
        return self.data.pretrain_volumes()  # type: ignore[no-any-return]

    def test(self) -> Sequence[Any]:
        return self.data.test_volumes()  # type: ignore[no-any-return]

    def sets(self, n: int, c: int) -> tuple[Sequence[Any], Sequence[Any]]:
        if c == 0:
            train, val = self.bench[n]
            return (self.data.volumes(train, native=False), self.data.volumes(val, native=True))
        return self.splits[n][c]  # type: ignore[no-any-return]
