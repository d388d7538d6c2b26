"""The three-stage recipe as a Python API: pre-train, fine-tune every cell, evaluate, report.

:func:`~contrastlocal.training.run_recipe` is the whole recipe on volumes already in memory
(``contrastlocal run``, the demo and the examples call it). Its steps are public, so that a
caller running many configurations (a table of the paper) can share what they have in common:
:mod:`contrastlocal.training.plan` gives the cells of a run, keyed by their settings, each with
its own output directory; :func:`~contrastlocal.training.run_stage` and
:func:`~contrastlocal.training.run_cell` run one cell (resuming from its checkpoints);
:func:`~contrastlocal.training.open_run_directory` is the one place where a run's output
directory is created and its settings recorded before any work starts.

Rows of the results: ``"random"`` is :func:`~contrastlocal.training.train_baseline` (random
weights, affine + elastic augmentation: the paper's baseline), ``"GD"`` (or ``"GR"``, ...) is
fine-tuning from the stage-1 encoder and ``"GD+LD"`` (...) from the stage-2 encoder and decoder
blocks; :data:`~contrastlocal.training.INIT_LABELS` has their printed names.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.volumes import Volume
from . import _distributed
from .config import ExperimentConfig, config_to_dict
from .evaluation import DATASET_DICE_DEFINITIONS, EvaluationResult, evaluate
from .plan import (
    RUN_LAYOUT,
    FinetuneCell,
    Layout,
    RecipePlan,
    StageCell,
    init_keys,
    plan_recipe,
    select_labelled,
)
from .results import INIT_LABELS
from .stages import StageResult, finetune, pretrain_global, pretrain_local, train_baseline

__all__ = [
    "CellOutcome",
    "FinetuneSplits",
    "RecipeResult",
    "open_run_directory",
    "run_cell",
    "run_recipe",
    "run_stage",
]

#: ``finetune[|X_tr|][combination] = (train volumes, validation volumes)``.
FinetuneSplits = Mapping[int, Mapping[int, tuple[Sequence[Volume], Sequence[Volume]]]]

Log = Callable[[str], None]


def _silent(_text: str) -> None:
    """Swallow a progress line (no logger given, or a rank other than 0)."""


# ------------------------------------------------------------------------------------ running
def open_run_directory(
    out: str | os.PathLike[str] | None, config: ExperimentConfig
) -> Path | None:
    """Create a run's output directory and record its settings, before any work starts.

    The one place where a recipe run's directory is opened (rank 0 writes): ``config.json``
    holds :func:`~contrastlocal.training.config_to_dict` of `config`.

    Parameters
    ----------
    out : path or None
        The directory (None: nothing is written).
    config : ExperimentConfig
        The run's settings.

    Returns
    -------
    Path or None
        `out` as a path.

    Examples
    --------
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from contrastlocal.training import open_run_directory, preset
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = open_run_directory(Path(tmp) / "run", preset("acdc"))
    ...     json.loads((path / "config.json").read_text())["dataset"]
    'acdc'
    """
    if out is None:
        return None
    path = Path(out)
    if _distributed.is_main():
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(config_to_dict(config), indent=2) + "\n")
    return path


def run_stage(
    cell: StageCell,
    volumes: Sequence[Volume],
    *,
    encoder: nn.Module | str | os.PathLike[str] | None = None,
    resume: bool = True,
) -> StageResult:
    """Run (or resume) one pre-training cell.

    Parameters
    ----------
    cell : StageCell
        From :func:`plan_stages`.
    volumes : sequence of Volume
        Pre-training volumes.
    encoder : nn.Module or path, optional
        Stage 2's encoder: the stage-1 network or its ``final.pt``.
    resume : bool, default True
        Resume from the cell's checkpoints.

    Returns
    -------
    StageResult
        As :func:`~contrastlocal.training.pretrain_global` /
        :func:`~contrastlocal.training.pretrain_local`.

    Examples
    --------
    >>> import numpy as np
    >>> from contrastlocal.training import Volume, plan_stages, preset, run_stage
    >>> rng = np.random.default_rng(0)
    >>> vols = [Volume(rng.random((8, 32, 32), dtype=np.float32), case_id=str(i))
    ...         for i in range(4)]
    >>> cfg = preset("synthetic", **{"model.image_size": (32, 32), "model.channels": (4, 8, 8, 8),
    ...                              "global_stage.iterations": 1,
    ...                              "global_stage.volumes_per_batch": 2,
    ...                              "runtime.progress": False})
    >>> run_stage(plan_stages(cfg)[0], vols).iterations
    1
    """
    if cell.kind == "global":
        return pretrain_global(volumes, cell.config, out=cell.directory, resume=resume)
    return pretrain_local(
        volumes, cell.config, encoder=encoder, out=cell.directory, resume=resume
    )


def run_cell(
    cell: FinetuneCell,
    train: Sequence[Volume],
    val: Sequence[Volume],
    *,
    init: nn.Module | str | os.PathLike[str] | None = None,
    resume: bool = True,
) -> StageResult:
    """Run (or resume) one fine-tuning cell.

    Parameters
    ----------
    cell : FinetuneCell
        From :func:`plan_cells`.
    train, val : sequence of Volume
        Labelled training and validation volumes.
    init : nn.Module or path, optional
        The network (or ``final.pt``) of ``cell.source``; ignored for the random row.
    resume : bool, default True
        Resume from the cell's checkpoints.

    Returns
    -------
    StageResult
        As :func:`~contrastlocal.training.finetune`, with the best validation checkpoint.

    Examples
    --------
    >>> import numpy as np
    >>> from contrastlocal.training import Volume, plan_cells, plan_stages, preset, run_cell
    >>> rng = np.random.default_rng(0)
    >>> vols = [Volume(rng.random((8, 32, 32), dtype=np.float32),
    ...                rng.integers(0, 4, (8, 32, 32)).astype(np.uint8), case_id=str(i))
    ...         for i in range(2)]
    >>> cfg = preset("synthetic", **{"model.image_size": (32, 32), "model.channels": (4, 8, 8, 8),
    ...                              "finetune.iterations": 1, "finetune.batch_size": 2,
    ...                              "finetune.validate_every": 1, "runtime.progress": False})
    >>> baseline = plan_cells(cfg, {1: [1]}, plan_stages(cfg), rows=["random"])[0]
    >>> run_cell(baseline, vols[:1], vols[1:]).best_iteration
    1
    """
    if cell.source is None:
        return train_baseline(train, val, cell.config, out=cell.directory, resume=resume)
    return finetune(train, val, cell.config, init=init, out=cell.directory, resume=resume)


@dataclass
class CellOutcome:
    """A finished fine-tuning cell and its test evaluation.

    Attributes
    ----------
    cell : FinetuneCell
        The cell.
    stage : StageResult
        Its training result (``stage.network`` holds the selected weights).
    evaluation : EvaluationResult
        Its scores on the test volumes.
    seconds : float
        Wall time of training and evaluation.

    Examples
    --------
    >>> from contrastlocal.training import run_recipe
    >>> outcome = run_recipe(pretrain, splits, test, config).outcomes[0]  # doctest: +SKIP
    >>> outcome.cell.name, outcome.evaluation.mean_dice  # doctest: +SKIP
    ('random_n1_c1', 0.62)
    """

    cell: FinetuneCell
    stage: StageResult
    evaluation: EvaluationResult
    seconds: float

    def record(self) -> dict[str, Any]:
        """Return the per-volume record written to ``evaluation.json``.

        Returns
        -------
        dict
            ``summary``, ``volumes``, ``best_iteration`` and ``best_validation_dice``.
        """
        return {
            "summary": self.evaluation.summary(),
            "volumes": self.evaluation.per_volume(),
            "best_iteration": self.stage.best_iteration,
            "best_validation_dice": self.stage.best_score,
        }


@dataclass
class RecipeResult:
    """What :func:`run_recipe` returns.

    Attributes
    ----------
    plan : RecipePlan
        The cells run.
    results : dict
        ``{row: {"|X_tr|": [test Dice per combination]}}`` (the table; empty on ranks other
        than 0 under several processes).
    outcomes : list of CellOutcome
        One per fine-tuning cell, in run order (rank 0).
    stages : dict of str to StageResult
        ``"global"`` and ``"local"``.
    out : Path or None
        The output directory.
    files : list of Path
        Tables, evaluation and plots written.
    seconds : float
        Wall time.

    Examples
    --------
    >>> from contrastlocal.training import run_recipe
    >>> result = run_recipe(pretrain, splits, test, config, out="run")  # doctest: +SKIP
    >>> result.finite, sorted(result.results)  # doctest: +SKIP
    (True, ['GD', 'GD+LD', 'random'])
    """

    plan: RecipePlan
    results: dict[str, dict[str, list[float]]]
    outcomes: list[CellOutcome] = field(default_factory=list)
    stages: dict[str, StageResult] = field(default_factory=dict)
    out: Path | None = None
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def finite(self) -> bool:
        """Whether every test Dice is a finite number."""
        import math

        return all(math.isfinite(v) for row in self.results.values() for vs in row.values()
                   for v in vs)


@contextlib.contextmanager
def threads_of(config: ExperimentConfig) -> Iterator[None]:
    """Use ``runtime.num_threads`` for the whole run (stages and evaluation); restore after."""
    before = torch.get_num_threads()
    try:
        if config.runtime.num_threads is not None:
            torch.set_num_threads(config.runtime.num_threads)
        yield
    finally:
        torch.set_num_threads(before)


def run_recipe(
    pretrain: Sequence[Volume],
    splits: FinetuneSplits,
    test: Sequence[Volume],
    config: ExperimentConfig,
    *,
    out: str | os.PathLike[str] | None = None,
    num_labelled: Sequence[int] | None = None,
    combinations: Sequence[int] | None = None,
    rows: Sequence[str] | None = None,
    resume: bool = True,
    plots: bool = True,
    tag_config: bool = False,
    data_tag: str = "",
    layout: Layout = RUN_LAYOUT,
    log: Log | None = None,
    on_cell: Callable[[CellOutcome], None] | None = None,
) -> RecipeResult:
    """Run the whole recipe on volumes in memory: pre-train, fine-tune every cell, evaluate.

    Parameters
    ----------
    pretrain : sequence of Volume
        Unlabelled pre-training volumes (stages 1 and 2).
    splits : mapping
        ``splits[|X_tr|][combination] = (train volumes, validation volumes)``; read only for
        the cells run, so a lazy mapping may load them on access.
    test : sequence of Volume
        Test volumes (with native labels for evaluation at native resolution).
    config : ExperimentConfig
        The settings.
    out : path, optional
        Output directory: ``config.json``, the stages' and cells' folders (`layout`),
        ``results.json`` / ``.md`` / ``.csv``, ``evaluation.json`` and ``plots/*.png``.
    num_labelled, combinations : sequence of int, optional
        Subsets of `splits` to run (default: all).
    rows : sequence of str, optional
        Rows to run (default: ``"random"`` and both pre-trained initialisations).
    resume : bool, default True
        Resume every stage and cell from its checkpoints (False: start afresh).
    plots : bool, default True
        Write the figures (with `out`).
    tag_config, data_tag : bool, str
        As in :func:`plan_cells`.
    layout : Layout, default RUN_LAYOUT
        Where the cells write.
    log : callable, optional
        Receives one line of text per finished step (rank 0 only).
    on_cell : callable, optional
        Called with each :class:`CellOutcome` as it finishes (rank 0 only).

    Returns
    -------
    RecipeResult
        The table, the per-cell outcomes and the files written.

    Raises
    ------
    ValueError
        If `num_labelled` / `combinations` are not in `splits`, or as the stages.

    Notes
    -----
    Stage 1 and 2 run once on the pre-training volumes; for every |X_tr| and combination the
    UNet is fine-tuned from the stage-1 encoder, from the encoder and l decoder blocks of stage
    2, and trained from random weights with augmentation (:func:`train_baseline`), each choosing
    its checkpoint on the validation volumes; all are scored on the test volumes (per-class 3D
    Dice at native resolution, and HD95). Under ``torchrun`` the process group is started here
    (:func:`~contrastlocal.training.init_distributed`) and rank 0 alone evaluates and writes.
    The thread count ``runtime.num_threads`` holds for the whole run and is restored after.

    Examples
    --------
    >>> from contrastlocal.training import run_recipe
    >>> result = run_recipe(pretrain, {1: {1: (train, val)}}, test, config,
    ...                     out="run")  # doctest: +SKIP
    >>> result.results["GD+LD"]["1"]  # doctest: +SKIP
    [0.41]
    """
    t0 = time.perf_counter()
    with threads_of(config):
        _distributed.init_distributed(config.runtime.device)
        main = _distributed.is_main()
        say = log if (log is not None and main) else _silent
        available = {n: sorted(v) for n, v in splits.items()}
        labelled = select_labelled(available, num_labelled, combinations)
        plan = plan_recipe(
            config,
            labelled,
            out=out,
            layout=layout,
            rows=rows,
            tag_config=tag_config,
            data_tag=data_tag,
        )
        root = open_run_directory(out, config)
        stages = _pretrain(plan, pretrain, resume, say)
        outcomes = _finetune_all(plan, splits, test, stages, resume, say, on_cell)
        result = RecipeResult(plan, {r: {} for r in plan.rows}, outcomes, stages, root)
        for o in outcomes:
            result.results[o.cell.init].setdefault(str(o.cell.num_labelled), []).append(
                o.evaluation.mean_dice
            )
        if main and root is not None:
            from .report import write_recipe_report

            result.files = write_recipe_report(result, pretrain, plots=plots, log=say)
        elif main:
            from .results import format_results_table

            say(format_results_table(result.results, title=_title(config)))
        result.seconds = time.perf_counter() - t0
        say(f"total {result.seconds:.0f} s")
    return result


def _title(config: ExperimentConfig) -> str:
    return f"{config.dataset}: test Dice (mean ± std over combinations)"


def _pretrain(
    plan: RecipePlan, volumes: Sequence[Volume], resume: bool, say: Log
) -> dict[str, StageResult]:
    g_cell, l_cell = plan.stages
    g_key, gl_key = init_keys(plan.config)
    t = time.perf_counter()
    g = run_stage(g_cell, volumes, resume=resume)
    say(
        f"stage 1 ({INIT_LABELS.get(g_key, g_key)}): {g.iterations} iterations, "
        f"{time.perf_counter() - t:.0f} s"
    )
    t = time.perf_counter()
    loc = run_stage(l_cell, volumes, encoder=g.network, resume=resume)
    say(
        f"stage 2 ({INIT_LABELS.get(gl_key, gl_key)}): {loc.iterations} iterations, "
        f"{time.perf_counter() - t:.0f} s"
    )
    return {"global": g, "local": loc}


def _finetune_all(
    plan: RecipePlan,
    splits: FinetuneSplits,
    test: Sequence[Volume],
    stages: Mapping[str, StageResult],
    resume: bool,
    say: Log,
    on_cell: Callable[[CellOutcome], None] | None,
) -> list[CellOutcome]:
    networks = {cell.key: stages[cell.kind].network for cell in plan.stages}
    main = _distributed.is_main()
    outcomes = []
    loaded: tuple[int, int] | None = None
    train: Sequence[Volume] = ()
    val: Sequence[Volume] = ()
    for cell in plan.cells:
        if loaded != (cell.num_labelled, cell.combination):  # load each labelled set once
            train, val = splits[cell.num_labelled][cell.combination]
            loaded = (cell.num_labelled, cell.combination)
        t = time.perf_counter()
        init = None if cell.source is None else networks[cell.source.key]
        res = run_cell(cell, train, val, init=init, resume=resume)
        if not main:
            continue
        ev = evaluate(
            res.network,
            test,
            num_classes=cell.config.model.num_classes,
            device=next(res.network.parameters()).device,
            dice_definition=DATASET_DICE_DEFINITIONS.get(cell.config.dataset),
        )
        outcome = CellOutcome(cell, res, ev, time.perf_counter() - t)
        outcomes.append(outcome)
        say(
            f"|X_tr| = {cell.num_labelled}, c{cell.combination}, "
            f"{INIT_LABELS.get(cell.init, cell.init)}: test Dice {ev.mean_dice:.3f} "
            f"({outcome.seconds:.0f} s)"
        )
        if on_cell is not None:
            on_cell(outcome)
    return outcomes
