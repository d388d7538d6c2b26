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
from .checkpoint import check_resume, latest_checkpoint, load_checkpoint
from .config import ExperimentConfig, ResolvedRuntime, config_to_dict, validate_for_run
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
from .stages import (
    StageResult,
    _check_volumes,
    finetune,
    pretrain_global,
    pretrain_local,
    train_baseline,
)

__all__ = [
    "CellOutcome",
    "FinetuneSplits",
    "RecipeResult",
    "open_run_directory",
    "run_cell",
    "run_lock",
    "run_recipe",
    "run_stage",
]

#: ``finetune[|X_tr|][combination] = (train volumes, validation volumes)``.
FinetuneSplits = Mapping[int, Mapping[int, tuple[Sequence[Volume], Sequence[Volume]]]]

Log = Callable[[str], None]


def _silent(_text: str) -> None:
    """Swallow a progress line (no logger given, or a rank other than 0)."""


# ------------------------------------------------------------------------------------ running
#: Where ``--fresh`` moves the previous run's files (with the list of what it moves) before
#: deleting them: its presence means an invalidation is under way and must be completed.
FRESH_TRASH = ".fresh-trash"
_REPORT_FILES = ("config.json", "results.json", "results.md", "results.csv", "evaluation.json",
                 "plots")
# run directories this process holds the lock of (nested run_lock calls are no-ops)
_HELD: set[Path] = set()


@contextlib.contextmanager
def run_lock(out: str | os.PathLike[str] | None) -> Iterator[None]:
    """Hold the lock of a run's output directory (rank 0; ``contrastlocal._lock``).

    A second run into the same directory is refused with one line naming the holder
    (``contrastlocal._lock.LockHeldError``, a :class:`RuntimeError`); a lock left by a killed
    process is taken over with a warning. Re-entrant within one process (``contrastlocal run``
    takes it before preparing the cache, :func:`run_recipe` again).

    Parameters
    ----------
    out : path or None
        The run's output directory (created if missing); None holds nothing.

    Yields
    ------
    None
        While the lock is held.

    Raises
    ------
    RuntimeError
        ``contrastlocal._lock.LockHeldError``, if a live process holds the directory's lock.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp, run_lock(tmp):
    ...     pass
    """
    if out is None or not _distributed.is_main():
        yield
        return
    from .._lock import DirectoryLock

    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    key = path.resolve()
    if key in _HELD:
        yield
        return
    with DirectoryLock(path, purpose=f"contrastlocal run into {os.fspath(path)!r}"):
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)


def _finish_fresh(root: Path) -> None:
    """Complete an invalidation: move every listed item into the trash, then delete it."""
    import shutil

    trash = root / FRESH_TRASH
    items = json.loads((trash / "items.json").read_text())
    for i, name in enumerate(items):
        item = root / name
        if item.exists() or item.is_symlink():
            os.replace(item, trash / f"{i:05d}")
    shutil.rmtree(trash)
    for name in items:  # folders left empty (``finetune/``)
        parent = (root / name).parent
        while parent != root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


def _invalidate(root: Path, plan: RecipePlan | None) -> None:
    """``--fresh``: remove everything a previous run left that this one would read, atomically.

    The list of items is written first and published by renaming its folder to
    :data:`FRESH_TRASH`; then each item is moved into it (a rename) and the folder deleted. A
    process killed before the publication leaves the old state whole; after it, the next run
    (fresh or not) completes the invalidation before reading anything, so nothing half-removed
    is ever resumed.
    """
    names = [n for n in _REPORT_FILES if (root / n).exists()]
    dirs: list[Path | None] = []
    if plan is not None:
        dirs = [c.directory for c in plan.stages] + [c.directory for c in plan.cells]
    for d in dirs:
        if d is not None and (d.exists() or d.is_symlink()):
            names.append(os.path.relpath(d, root))
    if not names:
        return
    staging = root / f"{FRESH_TRASH}.{os.getpid()}"
    staging.mkdir()
    (staging / "items.json").write_text(json.dumps(names))
    os.replace(staging, root / FRESH_TRASH)  # published: from here on it is completed
    _finish_fresh(root)


def _recover(root: Path) -> None:
    """Complete an interrupted ``--fresh`` and drop unpublished ones (before any reading)."""
    import shutil

    for staging in root.glob(f"{FRESH_TRASH}.*"):
        shutil.rmtree(staging, ignore_errors=True)
    if (root / FRESH_TRASH / "items.json").is_file():
        _finish_fresh(root)
    elif (root / FRESH_TRASH).exists():
        shutil.rmtree(root / FRESH_TRASH)


def _check_present(plan: RecipePlan, runtime: ResolvedRuntime) -> None:
    """Make the resume checks possible before any work, for each cell with a checkpoint.

    Compares what is known up front (seed, model, the stage's settings, device type and
    precision, the iterations done); the loop checks the rest (volumes, upstream weights).
    """
    cells: list[tuple[str, ExperimentConfig, Path | None, dict[str, Any]]] = []
    for st in plan.stages:
        section = "global_stage" if st.kind == "global" else "local_stage"
        cells.append((st.kind, st.config, st.directory, config_to_dict(getattr(st.config,
                                                                               section))))
    for cell in plan.cells:
        settings = config_to_dict(cell.config.finetune)
        if cell.source is None:
            settings["augment"] = True  # the baseline always augments
        cells.append(("finetune", cell.config, cell.directory, settings))
    for name, cfg, directory, settings in cells:
        latest = None if directory is None else latest_checkpoint(directory / "checkpoints")
        if latest is None:
            continue
        data = load_checkpoint(latest)
        saved = data.get("settings", {})
        current = {
            "seed": cfg.seed,
            "model": config_to_dict(cfg.model),
            **settings,
            "device_type": runtime.device_type,
            "precision": runtime.precision,
        }
        known = {k: v for k, v in current.items() if k in saved}
        check_resume(
            {k: saved[k] for k in known},
            known,
            done=int(data.get("iteration", 0)),
            iterations=int(settings["iterations"]),
            stage=name,
            source=latest,
        )


def open_run_directory(
    out: str | os.PathLike[str] | None,
    config: ExperimentConfig,
    *,
    resume: bool = True,
    plan: RecipePlan | None = None,
) -> Path | None:
    """Check a run's settings, open its output directory and record them, before any work.

    The one place where a recipe run's directory is opened (rank 0 writes). In order:
    :func:`~contrastlocal.training.config.validate_for_run` (device, precision, learning rates,
    region counts); an interrupted ``--fresh`` is completed; with ``resume=False`` the previous
    run's files are invalidated atomically (all or nothing, see ``FRESH_TRASH``); with
    ``resume=True`` the cells of `plan` already on disk are checked against these settings
    (a mismatch is refused, one line naming what changed); only then is ``config.json``
    written: :func:`~contrastlocal.training.config_to_dict` of `config`, with ``runtime.device``
    and ``runtime.amp`` replaced by the device and precision actually used (``"auto"``
    resolved).

    Parameters
    ----------
    out : path or None
        The directory (None: nothing is written; the settings are still checked).
    config : ExperimentConfig
        The run's settings.
    resume : bool, default True
        False: start afresh (``--fresh``), removing the previous run's stages, cells and
        reports first.
    plan : RecipePlan, optional
        The cells of the run (what is invalidated or checked).

    Returns
    -------
    Path or None
        `out` as a path.

    Raises
    ------
    ValueError
        From :func:`~contrastlocal.training.config.validate_for_run`, or
        :class:`~contrastlocal.training.checkpoint.ResumeRefusedError` when a cell on disk was
        made with other settings or more iterations.

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
    runtime = validate_for_run(config)
    if out is None:
        return None
    path = Path(out)
    main = _distributed.is_main()
    if main:
        path.mkdir(parents=True, exist_ok=True)
        _recover(path)
        if not resume:
            _invalidate(path, plan)
    _distributed.barrier()
    if resume and plan is not None:  # every rank: a refusal stops them all alike
        _check_present(plan, runtime)
    if main:
        record = config_to_dict(config)
        record["runtime"]["amp"] = _amp_used(config.runtime.amp, runtime)
        record["runtime"]["device"] = runtime.device
        _atomic_write(path / "config.json", json.dumps(record, indent=2) + "\n")
    _distributed.barrier()
    return path


def _amp_used(asked: str, runtime: ResolvedRuntime) -> str:
    """``runtime.amp`` as run: the precision in effect ("none" for fp32)."""
    if runtime.precision == "fp32":
        return "none" if asked in ("auto", "none") else asked
    return runtime.precision


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
        with run_lock(out):
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
            # every volume usable by both pre-training stages, before any training
            _check_volumes(pretrain, "pretrain", config, partitions=max(
                config.global_stage.num_partitions, config.local_stage.num_partitions))
            root = open_run_directory(out, config, resume=resume, plan=plan)
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
