"""Plans of the recipe: the cells of a run, each keyed by its settings, and where they write.

A recipe run is two pre-training cells (:class:`~contrastlocal.training.StageCell`: stage 1 and
stage 2) and one fine-tuning cell (:class:`~contrastlocal.training.FinetuneCell`) per
(initialisation, |X_tr|, combination). Every cell has a deterministic ``key``
(:func:`~contrastlocal.training.settings_key` of every setting that determines its result; a
stage 2 includes its stage 1's key, a fine-tuning cell its initialising stage's key) and its own
output directory, chosen by a :class:`~contrastlocal.training.Layout`. Callers running many
configurations share a cell wherever two plans hold the same key. Nothing here trains:
:mod:`contrastlocal.training.recipe` runs the cells.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from .config import ExperimentConfig, config_to_dict

__all__ = [
    "KEYED_LAYOUT",
    "RUN_LAYOUT",
    "FinetuneCell",
    "Layout",
    "RecipePlan",
    "StageCell",
    "init_keys",
    "plan_cells",
    "plan_finetune",
    "plan_joint",
    "plan_recipe",
    "plan_stages",
    "select_labelled",
    "settings_key",
]

#: Row key of the random-initialisation baseline (:func:`~contrastlocal.training.train_baseline`).
RANDOM = "random"


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
    """One pre-training run: stage 1 (``"global"``), stage 2 (``"local"``) or both at once.

    Attributes
    ----------
    kind : {"global", "local", "joint"}
        The stage (``"joint"``: :func:`~contrastlocal.training.pretrain_joint`, encoder and
        decoder blocks in one stage, :func:`plan_joint`).
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

    kind: Literal["global", "local", "joint"]
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
    key = {"dataset": config.dataset, "seed": config.seed, "model": config_to_dict(config.model)}
    fidelity = getattr(config, "fidelity", None)  # a fidelity section, where the config has one
    if fidelity is not None:
        key["fidelity"] = _plain(fidelity)
    return key


def _plain(section: Any) -> Any:
    if isinstance(section, str):
        return section
    to_dict = getattr(section, "to_dict", None)
    return to_dict() if callable(to_dict) else config_to_dict(section)


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
    return replace(cell, directory=None if out is None else Path(out) / rel)


def plan_joint(
    config: ExperimentConfig,
    *,
    out: str | os.PathLike[str] | None = None,
    layout: Layout = RUN_LAYOUT,
    data_tag: str = "",
) -> StageCell:
    """Return the cell of joint pre-training (encoder and l decoder blocks at once, Table 7).

    Parameters
    ----------
    config : ExperimentConfig
        ``global_stage`` (iterations, batch, global loss) and ``local_stage`` (local loss, l,
        ``lambda_local``) of :func:`~contrastlocal.training.pretrain_joint`.
    out : path, optional
        The run's output directory (None: the cell writes nothing).
    layout : Layout, default RUN_LAYOUT
        Where the cell writes inside `out`.
    data_tag : str, default ""
        Names the pre-training data in the key.

    Returns
    -------
    StageCell
        ``kind == "joint"``, keyed by both sections.

    Examples
    --------
    >>> from contrastlocal.training import plan_joint, preset
    >>> a = plan_joint(preset("acdc", **{"local_stage.lambda_local": 10.0}))
    >>> b = plan_joint(preset("acdc", **{"local_stage.lambda_local": 100.0}))
    >>> a.kind, a.key != b.key
    ('joint', True)
    """
    key = settings_key(
        {
            **_model_key(config),
            "data": data_tag,
            "stage": "joint",
            "global_stage": config_to_dict(config.global_stage),
            "local_stage": config_to_dict(config.local_stage),
        }
    )
    cell = StageCell("joint", config, key)
    placed: StageCell = _placed(cell, out, layout.stage(cell))
    return placed


def plan_finetune(
    config: ExperimentConfig,
    num_labelled: int,
    combination: int,
    source: StageCell | None,
    *,
    init: str | None = None,
    out: str | os.PathLike[str] | None = None,
    layout: Layout = RUN_LAYOUT,
    tag_config: bool = False,
    data_tag: str = "",
) -> FinetuneCell:
    """Return one fine-tuning cell: |X_tr|, combination and the stage initialising it.

    Parameters
    ----------
    config : ExperimentConfig
        Fine-tuning settings.
    num_labelled, combination : int
        The labelled set.
    source : StageCell or None
        The initialising pre-training cell (None: the random-initialisation baseline, always
        augmented).
    init : str, optional
        The row key (default: ``"random"`` without a source, else :func:`init_keys` of the
        source's kind, ``"joint"`` for a joint stage).
    out : path, optional
        The run's output directory (None: the cell writes nothing).
    layout : Layout, default RUN_LAYOUT
        Where the cell writes inside `out`.
    tag_config : bool, default False
        Record |X_tr| and the combination in the cell's config.
    data_tag : str, default ""
        Names the data in the key.

    Returns
    -------
    FinetuneCell
        Keyed by everything that determines its result; the same key as :func:`plan_cells`
        gives the same cell.

    Examples
    --------
    >>> from contrastlocal.training import plan_cells, plan_finetune, plan_stages, preset
    >>> cfg = preset("acdc")
    >>> stages = plan_stages(cfg)
    >>> plan_finetune(cfg, 1, 2, stages[1]).key == plan_cells(cfg, {1: [2]}, stages)[2].key
    True
    """
    cfg = config.replace(num_labelled=num_labelled, combination=combination) if tag_config \
        else config
    if init is None:
        if source is None:
            init = RANDOM
        elif source.kind == "joint":
            init = "joint"
        else:
            init = init_keys(cfg)[0 if source.kind == "global" else 1]
    section = config_to_dict(cfg.finetune)
    if source is None:
        section["augment"] = True  # the baseline always augments
    key = settings_key(
        {
            **_model_key(cfg),
            "data": data_tag,
            "num_labelled": num_labelled,
            "combination": combination,
            "finetune": section,
            "init": None if source is None else source.key,
        }
    )
    cell = FinetuneCell(init, num_labelled, combination, cfg, key, source=source)
    placed: FinetuneCell = _placed(cell, out, layout.cell(cell))
    return placed


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
            for row in wanted:
                cells.append(
                    plan_finetune(
                        config, n, c, sources[row], init=row, out=out, layout=layout,
                        tag_config=tag_config, data_tag=data_tag,
                    )
                )
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
