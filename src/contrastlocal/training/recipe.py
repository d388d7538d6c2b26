"""The three-stage recipe as a Python API: plan, pre-train, fine-tune every cell, evaluate, report.

:func:`~contrastlocal.training.run_recipe` is the whole recipe on volumes already in memory
(``contrastlocal run``, the demo and the examples call it); its steps are public and keyed by
their settings, so that a caller running many configurations (a table of the paper) can share
what they have in common:

- :func:`~contrastlocal.training.plan_stages` gives the two pre-training
  :class:`~contrastlocal.training.StageCell` (stage 1, global loss; stage 2, local loss on the
  stage-1 encoder) and :func:`~contrastlocal.training.plan_cells` the
  :class:`~contrastlocal.training.FinetuneCell` of every (initialisation, |X_tr|, combination);
  each cell has a deterministic ``key`` computed from every setting that determines its result
  (a stage 2 includes its stage 1's key, a fine-tuning cell its initialising stage's key) and its
  own output directory, chosen by a :class:`~contrastlocal.training.Layout`;
- :func:`~contrastlocal.training.run_stage` and :func:`~contrastlocal.training.run_cell` run one
  cell (resuming from its checkpoints);
- :func:`~contrastlocal.training.open_run_directory` is the one place where a run's output
  directory is created and its settings recorded before any work starts.

Rows of the results: ``"random"`` is :func:`~contrastlocal.training.train_baseline` (random
weights, affine + elastic augmentation: the paper's baseline), ``"GD"`` (or ``"GR"``, ...) is
fine-tuning from the stage-1 encoder and ``"GD+LD"`` (...) from the stage-2 encoder and decoder
blocks; :data:`~contrastlocal.training.INIT_LABELS` has their printed names.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..data.volumes import Volume
from . import _distributed
from .config import ExperimentConfig, config_to_dict
from .evaluation import EvaluationResult, evaluate
from .results import INIT_LABELS
from .stages import StageResult, finetune, pretrain_global, pretrain_local, train_baseline

__all__ = [
    "RUN_LAYOUT",
    "CellOutcome",
    "FinetuneCell",
    "FinetuneSplits",
    "Layout",
    "RecipePlan",
    "RecipeResult",
    "StageCell",
    "init_keys",
    "open_run_directory",
    "plan_cells",
    "plan_recipe",
    "plan_stages",
    "run_cell",
    "run_recipe",
    "run_stage",
    "select_labelled",
    "settings_key",
]

#: ``finetune[|X_tr|][combination] = (train volumes, validation volumes)``.
FinetuneSplits = Mapping[int, Mapping[int, tuple[Sequence[Volume], Sequence[Volume]]]]

Log = Callable[[str], None]

RANDOM = "random"


def _silent(_text: str) -> None:
    """Swallow a progress line (no logger given, or a rank other than 0)."""


# ------------------------------------------------------------------------------------ keys
def settings_key(settings: Mapping[str, Any]) -> str:
    """Return a deterministic 16-hex-digit key of `settings` (canonical JSON, SHA-256).

    Parameters
    ----------
    settings : mapping
        JSON-serialisable settings (tuples are written as lists).

    Returns
    -------
    str
        The same key for the same settings, in every process and on every platform.

    Examples
    --------
    >>> settings_key({"b": 1, "a": [1, 2]}) == settings_key({"a": (1, 2), "b": 1})
    True
    """
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def init_keys(config: ExperimentConfig) -> tuple[str, str]:
    """Return the row keys of the two pre-trained initialisations of `config`.

    Parameters
    ----------
    config : ExperimentConfig
        Its global and local strategies name the rows.

    Returns
    -------
    (str, str)
        Stage 1's (``"GD"``, ``"GR"`` or ``"GD-"``) and stage 2's (e.g. ``"GD+LD"``).

    Examples
    --------
    >>> from contrastlocal.training import preset
    >>> init_keys(preset("acdc")), init_keys(preset("cityscapes"))
    (('GD', 'GD+LD'), ('GR', 'GR+LR'))
    """
    g = {"domain": "GD", "random": "GR", "domain_negatives": "GD-"}[config.global_stage.strategy]
    loc = {"domain": "LD", "random": "LR"}[config.local_stage.strategy]
    return g, f"{g}+{loc}"


# ------------------------------------------------------------------------------------ cells
@dataclass(frozen=True)
class StageCell:
    """One pre-training run: stage 1 (``"global"``) or stage 2 (``"local"``).

    Attributes
    ----------
    kind : {"global", "local"}
        The stage.
    config : ExperimentConfig
        Its settings.
    key : str
        :func:`settings_key` of the seed, the model, the stage's section and (stage 2) the key
        of the stage 1 it starts from.
    directory : Path or None
        Its output directory (None: nothing written).
    parent : StageCell or None
        Stage 2's stage 1.

    Examples
    --------
    >>> from contrastlocal.training import plan_stages, preset
    >>> g, loc = plan_stages(preset("acdc"))
    >>> g.kind, loc.kind, loc.parent.key == g.key, len(g.key)
    ('global', 'local', True, 16)
    """

    kind: Literal["global", "local"]
    config: ExperimentConfig
    key: str
    directory: Path | None = None
    parent: StageCell | None = None


@dataclass(frozen=True)
class FinetuneCell:
    """One fine-tuning run: an initialisation, |X_tr| and combination.

    Attributes
    ----------
    init : str
        Row key: ``"random"`` (:func:`train_baseline`) or a pre-trained initialisation
        (:func:`init_keys`).
    num_labelled, combination : int
        |X_tr| and the combination of the labelled set.
    config : ExperimentConfig
        Its settings.
    key : str
        :func:`settings_key` of everything that determines its result (settings, the data tag,
        |X_tr|, combination, the initialising stage's key).
    directory : Path or None
        Its output directory.
    source : StageCell or None
        The stage whose network initialises it (None: random weights).

    Examples
    --------
    >>> from contrastlocal.training import plan_recipe, preset
    >>> cell = plan_recipe(preset("acdc"), {2: [3]}, out="run").cells[1]
    >>> cell.name, cell.source.kind, cell.directory.as_posix()
    ('GD_n2_c3', 'global', 'run/finetune/GD_n2_c3')
    """

    init: str
    num_labelled: int
    combination: int
    config: ExperimentConfig
    key: str
    directory: Path | None = None
    source: StageCell | None = None

    @property
    def name(self) -> str:
        """``"<init>_n<|X_tr|>_c<combination>"``, the cell's name in tables and files."""
        return f"{self.init}_n{self.num_labelled}_c{self.combination}"


@dataclass(frozen=True)
class Layout:
    """Where each cell writes, relative to the run's output directory.

    Parameters
    ----------
    stage : callable
        ``stage(cell) -> relative path`` of a :class:`StageCell`.
    cell : callable
        ``cell(cell) -> relative path`` of a :class:`FinetuneCell`.

    Examples
    --------
    >>> from contrastlocal.training import Layout, plan_recipe, preset
    >>> flat = Layout(stage=lambda s: s.kind, cell=lambda c: c.name)
    >>> [c.directory.name for c in plan_recipe(preset("acdc"), {1: [1]}, out="r",
    ...                                         layout=flat).cells]
    ['random_n1_c1', 'GD_n1_c1', 'GD+LD_n1_c1']
    """

    stage: Callable[[StageCell], str]
    cell: Callable[[FinetuneCell], str]


#: ``contrastlocal run``'s layout: ``global/``, ``local/``, ``finetune/<init>_n<N>_c<C>/``.
RUN_LAYOUT = Layout(stage=lambda s: s.kind, cell=lambda c: f"finetune/{c.name}")

#: A layout keyed by settings, for callers sharing cells between runs:
#: ``stages/<kind>-<key>/``, ``cells/<key>/``.
KEYED_LAYOUT = Layout(stage=lambda s: f"stages/{s.kind}-{s.key}", cell=lambda c: f"cells/{c.key}")


def _model_key(config: ExperimentConfig) -> dict[str, Any]:
    return {"dataset": config.dataset, "seed": config.seed, "model": config_to_dict(config.model)}


def plan_stages(
    config: ExperimentConfig,
    *,
    out: str | os.PathLike[str] | None = None,
    layout: Layout = RUN_LAYOUT,
    data_tag: str = "",
) -> tuple[StageCell, StageCell]:
    """Return the two pre-training cells of `config`: stage 1 and stage 2 on its encoder.

    Parameters
    ----------
    config : ExperimentConfig
        Settings of both stages.
    out : path, optional
        The run's output directory (None: the cells write nothing).
    layout : Layout, default RUN_LAYOUT
        Where each cell writes inside `out`.
    data_tag : str, default ""
        Names the pre-training data (e.g. the dataset folder's splits) in the keys.

    Returns
    -------
    (StageCell, StageCell)
        Stage 1 and stage 2 (whose ``parent`` is stage 1).

    Examples
    --------
    >>> from contrastlocal.training import preset
    >>> g, loc = plan_stages(preset("acdc"), out="run")
    >>> g.directory.as_posix(), loc.directory.as_posix(), loc.parent is g
    ('run/global', 'run/local', True)
    """
    base = {**_model_key(config), "data": data_tag}
    g_key = settings_key(
        {**base, "stage": "global", "global_stage": config_to_dict(config.global_stage)}
    )
    g = StageCell("global", config, g_key)
    g = _placed(g, out, layout.stage(g))
    l_key = settings_key(
        {
            **base,
            "stage": "local",
            "local_stage": config_to_dict(config.local_stage),
            "encoder": g_key,
        }
    )
    loc = StageCell("local", config, l_key, parent=g)
    return g, _placed(loc, out, layout.stage(loc))


def _placed(cell: Any, out: str | os.PathLike[str] | None, rel: str) -> Any:
    from dataclasses import replace

    return replace(cell, directory=None if out is None else Path(out) / rel)


def plan_cells(
    config: ExperimentConfig,
    labelled: Mapping[int, Sequence[int]] | Sequence[tuple[int, Sequence[int]]],
    stages: tuple[StageCell, StageCell],
    *,
    out: str | os.PathLike[str] | None = None,
    layout: Layout = RUN_LAYOUT,
    rows: Sequence[str] | None = None,
    tag_config: bool = False,
    data_tag: str = "",
) -> tuple[FinetuneCell, ...]:
    """Return the fine-tuning cells: every row for every (|X_tr|, combination).

    Parameters
    ----------
    config : ExperimentConfig
        Fine-tuning settings (``config.finetune``, seed, model).
    labelled : mapping or sequence of pairs
        ``{|X_tr|: combinations}`` (or ``[(|X_tr|, combinations), ...]``), in the order to run.
    stages : (StageCell, StageCell)
        The pre-training cells initialising the two pre-trained rows (:func:`plan_stages`).
    out, layout : path, Layout, optional
        As in :func:`plan_stages`.
    rows : sequence of str, optional
        Rows to run, among ``"random"`` and :func:`init_keys` (default: all three, in that
        order).
    tag_config : bool, default False
        Record |X_tr| and the combination in each cell's config (``num_labelled``,
        ``combination``: the paper's splits).
    data_tag : str, default ""
        Names the labelled data in the keys (e.g. ``"paper"`` or ``"auto"`` splits).

    Returns
    -------
    tuple of FinetuneCell
        Ordered by |X_tr|, combination, row.

    Raises
    ------
    ValueError
        If a row is not one of the three.

    Examples
    --------
    >>> from contrastlocal.training import preset
    >>> cfg = preset("acdc")
    >>> cells = plan_cells(cfg, {1: [1, 2]}, plan_stages(cfg))
    >>> [c.name for c in cells]
    ['random_n1_c1', 'GD_n1_c1', 'GD+LD_n1_c1', 'random_n1_c2', 'GD_n1_c2', 'GD+LD_n1_c2']
    """
    g_key, gl_key = init_keys(config)
    sources = {RANDOM: None, g_key: stages[0], gl_key: stages[1]}
    wanted = tuple(sources) if rows is None else tuple(rows)
    unknown = [r for r in wanted if r not in sources]
    if unknown:
        msg = f"`rows` must be among {list(sources)}; got {unknown}."
        raise ValueError(msg)
    pairs = list(labelled.items()) if isinstance(labelled, Mapping) else list(labelled)
    cells = []
    for n, combos in pairs:
        for c in combos:
            cfg = config.replace(num_labelled=n, combination=c) if tag_config else config
            for row in wanted:
                source = sources[row]
                section = config_to_dict(cfg.finetune)
                if row == RANDOM:
                    section["augment"] = True  # the baseline always augments
                key = settings_key(
                    {
                        **_model_key(cfg),
                        "data": data_tag,
                        "num_labelled": n,
                        "combination": c,
                        "finetune": section,
                        "init": None if source is None else source.key,
                    }
                )
                cell = FinetuneCell(row, n, c, cfg, key, source=source)
                cells.append(_placed(cell, out, layout.cell(cell)))
    return tuple(cells)


@dataclass(frozen=True)
class RecipePlan:
    """The cells of one recipe run.

    Attributes
    ----------
    config : ExperimentConfig
        The settings.
    stages : (StageCell, StageCell)
        Stage 1 and stage 2.
    cells : tuple of FinetuneCell
        Every fine-tuning cell, in the order they run.
    rows : tuple of str
        Row keys of the results table, in order.

    Examples
    --------
    >>> from contrastlocal.training import plan_recipe, preset
    >>> plan = plan_recipe(preset("prostate"), {1: [1, 2]})
    >>> plan.rows, len(plan.cells), plan.stages[1].parent is plan.stages[0]
    (('random', 'GD', 'GD+LD'), 6, True)
    """

    config: ExperimentConfig
    stages: tuple[StageCell, StageCell]
    cells: tuple[FinetuneCell, ...]
    rows: tuple[str, ...]

    @property
    def labelled(self) -> list[tuple[int, list[int]]]:
        """``[(|X_tr|, [combinations])]`` in run order."""
        out: dict[int, list[int]] = {}
        for cell in self.cells:
            combos = out.setdefault(cell.num_labelled, [])
            if cell.combination not in combos:
                combos.append(cell.combination)
        return list(out.items())


def plan_recipe(
    config: ExperimentConfig,
    labelled: Mapping[int, Sequence[int]] | Sequence[tuple[int, Sequence[int]]],
    *,
    out: str | os.PathLike[str] | None = None,
    layout: Layout = RUN_LAYOUT,
    rows: Sequence[str] | None = None,
    tag_config: bool = False,
    data_tag: str = "",
) -> RecipePlan:
    """Plan a recipe run: :func:`plan_stages` and :func:`plan_cells` of one configuration.

    Parameters
    ----------
    config : ExperimentConfig
        The settings.
    labelled : mapping or sequence of pairs
        ``{|X_tr|: combinations}``, as in :func:`plan_cells`.
    out : path, optional
        The run's output directory.
    layout : Layout, default RUN_LAYOUT
        Where each cell writes.
    rows : sequence of str, optional
        Rows to run (default: all three).
    tag_config : bool, default False
        As in :func:`plan_cells`.
    data_tag : str, default ""
        Names the data in the keys.

    Returns
    -------
    RecipePlan
        The cells; nothing is run.

    Examples
    --------
    >>> from contrastlocal.training import preset
    >>> plan = plan_recipe(preset("acdc"), {1: [1], 8: [1, 2]})
    >>> len(plan.cells), plan.rows, plan.labelled
    (9, ('random', 'GD', 'GD+LD'), [(1, [1]), (8, [1, 2])])
    """
    stages = plan_stages(config, out=out, layout=layout, data_tag=data_tag)
    cells = plan_cells(
        config,
        labelled,
        stages,
        out=out,
        layout=layout,
        rows=rows,
        tag_config=tag_config,
        data_tag=data_tag,
    )
    row_keys = tuple(dict.fromkeys(c.init for c in cells)) or (RANDOM, *init_keys(config))
    return RecipePlan(config, stages, cells, row_keys)


def select_labelled(
    available: Mapping[int, Sequence[int]],
    num_labelled: Sequence[int] | None = None,
    combinations: Sequence[int] | None = None,
    *,
    where: str = "the splits",
    names: tuple[str, str] = ("num_labelled", "combinations"),
) -> list[tuple[int, list[int]]]:
    """Return the (|X_tr|, combinations) pairs to run among those `available`.

    Parameters
    ----------
    available : mapping of int to sequence of int
        ``{|X_tr|: combinations}`` of the splits.
    num_labelled, combinations : sequence of int, optional
        Wanted values (default: all available).
    where : str
        Names the splits in error messages.
    names : (str, str)
        How error messages name the two arguments (e.g. the command line's options).

    Returns
    -------
    list of (int, list of int)
        In the order of `num_labelled` (default: ascending).

    Raises
    ------
    ValueError
        If an |X_tr| is not available, or no wanted combination exists for one.

    Examples
    --------
    >>> select_labelled({1: [1, 2, 3], 2: [1, 2]}, [2], [2, 3])
    [(2, [2])]
    """
    ns = sorted(available) if num_labelled is None else list(dict.fromkeys(num_labelled))
    plan = []
    for n in ns:
        if n not in available:
            msg = f"`{names[0]}` must be among {sorted(available)} for {where}; got {n}."
            raise ValueError(msg)
        have = list(available[n])
        combos = have if combinations is None else [c for c in combinations if c in have]
        if not combos:
            msg = (
                f"`{names[1]}` {list(combinations or [])} has none of the combinations "
                f"{have} of |X_tr| = {n} for {where}."
            )
            raise ValueError(msg)
        plan.append((n, combos))
    return plan


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
