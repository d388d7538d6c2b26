"""The report of a recipe run and of the demo: result tables, per-volume metrics and figures.

:func:`write_recipe_report` writes what ``contrastlocal run`` leaves in its output folder
(``results.json`` / ``.md`` / ``.csv``, ``evaluation.json``, ``plots/*.png``), :func:`demo_plots`
the demo's figures, :func:`pretrain_plots` the partition grid and the embeddings before and after
stage 1. The drawing itself is :mod:`contrastlocal.training.plots`; the tables are
:func:`~contrastlocal.training.write_results`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch

from ..data.registry import class_names
from ..data.volumes import Volume
from ..samplers import slice_partition
from .config import ExperimentConfig
from .results import INIT_LABELS, format_results_table, write_results

if TYPE_CHECKING:
    from .recipe import RecipeResult

__all__ = ["demo_plots", "global_embeddings", "pretrain_plots", "write_recipe_report"]


def write_recipe_report(
    result: RecipeResult,
    pretrain: Sequence[Volume],
    *,
    plots: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write the tables, per-volume metrics and figures of a finished recipe run.

    Parameters
    ----------
    result : RecipeResult
        From :func:`~contrastlocal.training.run_recipe` (with an output directory).
    pretrain : sequence of Volume
        The pre-training volumes (partition grid, embeddings).
    plots : bool, default True
        Write the figures too.
    log : callable, optional
        Receives the table and one line per figure.

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    ValueError
        If `result` has no output directory.

    Examples
    --------
    >>> from contrastlocal.training import run_recipe
    >>> from contrastlocal.training.report import write_recipe_report
    >>> result = run_recipe(pretrain, splits, test, config, out="run")  # doctest: +SKIP
    >>> [p.name for p in write_recipe_report(result, pretrain, plots=False)]  # doctest: +SKIP
    ['results.json', 'evaluation.json', 'results.md', 'results.csv']
    """
    say = log if log is not None else (lambda _text: None)
    if result.out is None:
        msg = "`result` has no output directory to write the report into."
        raise ValueError(msg)
    out = result.out
    cfg = result.plan.config
    written = [out / "results.json", out / "evaluation.json"]
    written[0].write_text(json.dumps(result.results, indent=2) + "\n")
    per_volume = {o.cell.name: o.record() for o in result.outcomes}
    written[1].write_text(json.dumps(per_volume, indent=2) + "\n")
    title = f"{cfg.dataset}: test Dice (mean ± std over combinations)"
    write_results(result.results, out, stem="results", title=title)
    written += [out / "results.md", out / "results.csv"]
    say(format_results_table(result.results, title=title))
    if plots:
        for p in _run_plots(result, pretrain):
            say(f"wrote {p}")
            written.append(p)
    return written


def _run_plots(result: RecipeResult, pretrain: Sequence[Volume]) -> list[Path]:
    from .plots import plot_dice_per_class, plot_loss_curves, plot_results_summary

    cfg = result.plan.config
    out = result.out
    assert out is not None
    plots = out / "plots"
    rows = result.plan.rows
    g_cell, l_cell = result.plan.stages
    written = [
        plot_results_summary(
            result.results,
            plots / "results.png",
            labels=INIT_LABELS,
            title=f"{cfg.dataset}: test Dice, mean ± std over combinations",
        )
    ]
    g_key, gl_key = rows[1], rows[2]
    panels: dict[str, dict[str, Path]] = {
        f"stage 1: {INIT_LABELS.get(g_key, g_key)}": _log_of(g_cell.directory),
        f"stage 2: {gl_key.split('+')[1].replace('L', 'L^')} on the stage-1 encoder": _log_of(
            l_cell.directory
        ),
    }
    first = result.outcomes[0].cell
    panels[f"fine-tuning |X_tr| = {first.num_labelled}, c{first.combination}"] = {
        INIT_LABELS.get(o.cell.init, o.cell.init): o.cell.directory / "metrics.jsonl"
        for o in result.outcomes
        if o.cell.directory is not None
        and (o.cell.num_labelled, o.cell.combination) == (first.num_labelled, first.combination)
    }
    panels = {k: {a: b for a, b in v.items() if b.is_file()} for k, v in panels.items()}
    written.append(
        plot_loss_curves(
            {k: v for k, v in panels.items() if v},
            plots / "loss_curves.png",
            title=f"{cfg.dataset}: training",
        )
    )
    n_last = result.outcomes[-1].cell.num_labelled
    scores = {
        INIT_LABELS.get(k, k): np.concatenate(
            [
                o.evaluation.dice[:, 1:]
                for o in result.outcomes
                if o.cell.init == k and o.cell.num_labelled == n_last
            ]
        )
        for k in rows
    }
    written.append(
        plot_dice_per_class(
            scores,
            plots / "dice_per_class.png",
            class_names=class_names(cfg.dataset, cfg.model.num_classes),
            title=f"{cfg.dataset}: test Dice per class, |X_tr| = {n_last}, all combinations",
            unit="test volume and combination",
        )
    )
    final = None if g_cell.directory is None else g_cell.directory / "final.pt"
    written += pretrain_plots(
        cfg,
        pretrain,
        final if final is not None and final.is_file() else None,
        plots,
        INIT_LABELS.get(g_key, g_key),
    )
    return written


def _log_of(directory: Path | None) -> dict[str, Path]:
    return {} if directory is None else {"loss": directory / "metrics.jsonl"}


def global_embeddings(
    network: torch.nn.Module,
    volumes: Sequence[Volume],
    num_partitions: int,
    device: str = "cpu",
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Return the g_1 embeddings of every slice of `volumes` and each slice's partition.

    Parameters
    ----------
    network : nn.Module
        A :class:`~contrastlocal.models.GlobalPretrainNetwork`.
    volumes : sequence of Volume
        Volumes whose slices are embedded, in order.
    num_partitions : int
        S, for the partition of each slice (:func:`~contrastlocal.samplers.slice_partition`).
    device : str, default "cpu"
        Where to run the network.

    Returns
    -------
    (ndarray of shape (N, D), ndarray of shape (N,))
        Embeddings and partitions of the N slices.

    Examples
    --------
    >>> import numpy as np
    >>> from contrastlocal.models import GlobalPretrainNetwork, UNet
    >>> from contrastlocal.training import Volume
    >>> net = GlobalPretrainNetwork(UNet(channels=(4, 8)), (16, 16), 8, 4)
    >>> vols = [Volume(np.zeros((6, 16, 16), np.float32))]
    >>> emb, parts = global_embeddings(net, vols, num_partitions=3)
    >>> emb.shape, parts.tolist()
    ((6, 4), [0, 0, 1, 1, 2, 2])
    """
    rows, parts = [], []
    was = network.training
    network.eval()
    try:
        with torch.no_grad():
            for v in volumes:
                img = np.asarray(v.image, dtype=np.float32)
                x = torch.from_numpy(img[:, None] if img.ndim == 3 else img).to(device)
                rows.append(network(x).float().cpu().numpy())
                z = img.shape[0]
                parts.append(slice_partition(np.arange(z), z, num_partitions))
    finally:
        network.train(was)
    return np.concatenate(rows), np.concatenate(parts)


def _global_network(cfg: ExperimentConfig, checkpoint: Path | None) -> torch.nn.Module:
    from ..models import GlobalPretrainNetwork
    from .checkpoint import load_weights
    from .stages import build_unet

    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left alone
        torch.manual_seed(cfg.seed)
        net = GlobalPretrainNetwork(
            build_unet(cfg),
            cfg.model.image_size,
            cfg.model.global_hidden_features,
            cfg.model.global_out_features,
        )
    if checkpoint is not None:
        load_weights(net, checkpoint)
    return net


def pretrain_plots(
    cfg: ExperimentConfig,
    volumes: Sequence[Volume],
    global_final: Path | None,
    plots: Path,
    label: str,
    names: Sequence[str] | None = None,
) -> list[Path]:
    """Write the partition grid of `volumes` and their embeddings before/after stage 1.

    Parameters
    ----------
    cfg : ExperimentConfig
        The settings (S, the model, the dataset's class names).
    volumes : sequence of Volume
        Volumes to show (the first 6 with at least S slices in the grid, 12 embedded).
    global_final : Path or None
        Stage 1's ``final.pt`` (None: no embeddings figure).
    plots : Path
        Folder of the figures.
    label : str
        Names stage 1 in the embeddings figure.
    names : sequence of str, optional
        Row names of the grid (default: ``"volume <case id>"``).

    Returns
    -------
    list of Path
        ``partitions.png`` and ``embeddings.png`` (those written).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from contrastlocal.training import Volume, preset
    >>> vols = [Volume(np.random.default_rng(i).random((8, 16, 16), dtype=np.float32))
    ...         for i in range(2)]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     [p.name for p in pretrain_plots(preset("acdc"), vols, None, Path(tmp), "G^D")]
    ['partitions.png']
    """
    from .plots import plot_embedding_projection, plot_partition_grid

    s = cfg.global_stage.num_partitions
    keep = [i for i, v in enumerate(volumes) if v.num_slices >= s][:6]
    shown = [volumes[i] for i in keep]
    rows = [f"volume {v.case_id}" for v in shown] if names is None else [names[i] for i in keep]
    written = []
    if shown and s > 1:
        written.append(
            plot_partition_grid(
                [v.image for v in shown],
                plots / "partitions.png",
                num_partitions=s,
                labels=[v.label for v in shown],
                names=rows,
                class_names=class_names(cfg.dataset, cfg.model.num_classes),
            )
        )
    if global_final is not None and sum(v.num_slices for v in volumes) >= 2:
        sample = list(volumes)[:12]
        before, pid = global_embeddings(_global_network(cfg, None), sample, max(s, 1))
        after, _ = global_embeddings(_global_network(cfg, global_final), sample, max(s, 1))
        written.append(
            plot_embedding_projection(
                {"random encoder + g_1": before, f"after stage 1 ({label})": after},
                pid,
                plots / "embeddings.png",
                title=f"Global embeddings of the slices of {len(sample)} volumes, "
                "PCA of L2-normalised g_1 outputs",
            )
        )
    return written


def demo_plots(
    out: str | os.PathLike[str],
    results: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    seeds: Sequence[int],
    quick: bool = False,
) -> list[Path]:
    """Write the demo's figures into ``<out>/plots`` from the files the demo wrote.

    Parameters
    ----------
    out : path
        The folder given to :func:`contrastlocal.training.demo.run_demo`.
    results : mapping
        Its return value (``{"random"|"GD"|"GD+LD": {"1"|"2": [Dice per seed]}}``).
    seeds : sequence of int
        The seeds it ran.
    quick : bool, default False
        Whether it ran in quick mode (same sizes must be rebuilt).

    Returns
    -------
    list of Path
        The PNG files written: ``results.png``, ``loss_curves.png``, ``dice_per_class.png``,
        ``partitions.png`` and ``embeddings.png``.

    Examples
    --------
    >>> from contrastlocal.training.demo import run_demo
    >>> results = run_demo("demo_out", quick=True, seeds=(0,))  # doctest: +SKIP
    >>> [p.name for p in demo_plots("demo_out", results, seeds=[0], quick=True)]  # doctest: +SKIP
    ['results.png', 'loss_curves.png', 'dice_per_class.png', 'partitions.png', 'embeddings.png']
    """
    from .demo import demo_cell_dir, demo_settings
    from .plots import plot_loss_curves, plot_results_summary

    root = Path(out)
    plots = root / "plots"
    settings = demo_settings(quick=quick)
    cfg = settings.config
    written = [
        plot_results_summary(
            results,
            plots / "results.png",
            labels=INIT_LABELS,
            title=f"Synthetic demo: test Dice, mean ± std over {len(seeds)} seed(s)",
        )
    ]

    def stage_logs(stage: str) -> dict[str, Path]:
        # pre-training shared by all seeds (root/pretrain/<stage>) or one per seed
        shared = root / "pretrain" / stage / "metrics.jsonl"
        if shared.is_file():
            return {"shared by all seeds": shared}
        return {f"seed {s}": root / f"seed{s}" / stage / "metrics.jsonl" for s in seeds}

    panels: dict[str, dict[str, Path]] = {
        "stage 1: G^D (encoder + g_1)": stage_logs("global"),
        "stage 2: L^D (decoder + g_2, frozen G^D encoder)": stage_logs("local"),
    }
    for n in settings.num_labelled:
        panels[f"fine-tuning |X_tr| = {n} (seed {seeds[0]})"] = {
            INIT_LABELS.get(k, k): root / demo_cell_dir(seeds[0], k, n) / "metrics.jsonl"
            for k in results
        }
    panels = {k: {a: b for a, b in v.items() if b.is_file()} for k, v in panels.items()}
    panels = {k: v for k, v in panels.items() if v}
    if panels:
        written.append(
            plot_loss_curves(panels, plots / "loss_curves.png", title="Synthetic demo: training")
        )
    test_volumes, test_names, dice = _demo_test_scores(root, results, seeds, settings)
    n_max = max(settings.num_labelled)
    if all(dice.values()):
        from .plots import plot_dice_per_class

        written.append(
            plot_dice_per_class(
                {INIT_LABELS.get(k, k): np.concatenate(v) for k, v in dice.items()},
                plots / "dice_per_class.png",
                class_names=class_names("synthetic", cfg.model.num_classes),
                title=f"Synthetic demo: test Dice per class, |X_tr| = {n_max}, "
                f"{len(seeds)} seed(s)",
                unit="test volume and seed",
            )
        )
    first = root / f"seed{seeds[0]}"
    finals = [root / "pretrain" / "global" / "final.pt", first / "global" / "final.pt"]
    final = next((f for f in finals if f.is_file()), None)
    # partitions and embeddings of held-out volumes (never seen in pre-training)
    written += pretrain_plots(cfg, test_volumes, final, plots, "G^D", names=test_names)
    return written


def _demo_test_scores(
    root: Path,
    results: Mapping[str, Any],
    seeds: Sequence[int],
    settings: Any,
) -> tuple[list[Volume], list[str], dict[str, list[Any]]]:
    """Per-class test Dice of each seed's selected checkpoints (best.pt) at the largest |X_tr|.

    The demo regenerates each seed's held-out test volumes deterministically from the seed.
    """
    from .checkpoint import load_weights
    from .demo import demo_cell_dir, demo_volumes
    from .evaluation import evaluate
    from .stages import build_unet

    cfg = settings.config
    n_max = max(settings.num_labelled)
    scores: dict[str, list[Any]] = {k: [] for k in results if k != "benchmark"}  # per |X_tr|
    test_volumes: list[Volume] = []
    test_names: list[str] = []
    for s in seeds:
        test = demo_volumes(s, settings)["test"]
        test_volumes += test
        test_names += [f"seed {s}, test {i + 1}" for i in range(len(test))]
        for key in scores:
            best = root / demo_cell_dir(s, key, n_max) / "best.pt"
            if not best.is_file():
                continue
            net = build_unet(cfg)
            load_weights(net, best)
            res = evaluate(net, test, num_classes=cfg.model.num_classes, compute_hd95=False)
            scores[key].append(res.dice[:, 1:])
    return test_volumes, test_names, scores
