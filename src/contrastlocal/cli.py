"""The ``contrastlocal`` command line.

Every sub-command is a thin layer over the library: arguments are parsed and checked here, the
work is done by :mod:`contrastlocal.training` and :mod:`contrastlocal.data`. Bad arguments give a
one-line message on standard error and exit status 2, never a traceback.

Sub-commands: ``demo`` (the recipe on synthetic data, CPU, no download), ``run`` (a dataset as
distributed: prepare, three stages, baseline, table, plots), one per stage (``pretrain-global``,
``pretrain-local``, ``finetune``, ``baseline``, ``evaluate``) and ``prepare`` (the cache only).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from contrastlocal.data.splits import DatasetSplits
    from contrastlocal.training import ExperimentConfig, Volume

__all__ = ["build_parser", "demo_plots", "main", "parse_set_option"]

_DATASETS: tuple[str, ...] = ("acdc", "prostate", "mmwhs", "cityscapes")

_DESCRIPTION = """\
Global and local contrastive pre-training for medical image segmentation with limited
annotations (Chaitanya et al., NeurIPS 2020, arXiv:2006.10511).

Typical use:
  contrastlocal demo --out demo_out
      the whole recipe on synthetic data (CPU, minutes, no download): random init vs G^D vs
      G^D + L^D fine-tuned on 1 and 2 labelled volumes, table + plots in demo_out/
  contrastlocal run --dataset acdc --data ACDC/database --out runs/acdc --device cuda
      prepare the cache, stage 1 (G^D), stage 2 (L^D), fine-tune and baseline on every
      |X_tr| and combination of the paper's splits, evaluate, write the table and plots
  contrastlocal pretrain-global --dataset acdc --data ACDC/database --out runs/acdc/global
      one stage at a time (then pretrain-local, finetune, baseline, evaluate)

Settings: every stage setting has the paper's value by default (see `contrastlocal run --help`);
change them with --config FILE.toml and/or --set section.key=value.
"""

_SET_HELP = (
    "override a setting, e.g. --set global_stage.iterations=2000 --set finetune.mixup=true "
    "(sections: model, global_stage, local_stage, finetune, runtime; values are TOML literals, "
    "bare words are strings); repeatable"
)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class _UsageError(ValueError):
    """A bad argument found after parsing (reported like a parser error)."""


# ------------------------------------------------------------------------------------ settings
def parse_set_option(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``--set key=value`` items into a mapping of dotted keys to values.

    Parameters
    ----------
    items : sequence of str
        Each ``"section.key=value"``; the value is read as a TOML literal (``10``, ``1e-3``,
        ``true``, ``[16, 32]``, ``"text"``); a value that is not valid TOML is kept as a string.

    Returns
    -------
    dict
        ``{"section.key": value}``, in order (a later item wins).

    Raises
    ------
    ValueError
        If an item has no ``=`` or an empty key.

    Examples
    --------
    >>> parse_set_option(["finetune.iterations=50", "runtime.device=cpu", "model.channels=[4, 8]"])
    {'finetune.iterations': 50, 'runtime.device': 'cpu', 'model.channels': [4, 8]}
    """
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            msg = f"`--set` expects section.key=value; got {item!r}."
            raise ValueError(msg)
        try:
            value: Any = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        out[key] = value
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib

    if not path.is_file():
        msg = f"`--config` {os.fspath(path)!r} does not exist or is not a file."
        raise _UsageError(msg)
    try:
        with path.open("rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        msg = f"`--config` {os.fspath(path)!r} is not valid TOML: {err}."
        raise _UsageError(msg) from None
    except UnicodeDecodeError:
        msg = f"`--config` {os.fspath(path)!r} is not a UTF-8 text file."
        raise _UsageError(msg) from None
    return data


def _check_device(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            msg = f"`--device {device}` was asked for but CUDA is not available on this machine."
            raise _UsageError(msg)


def _experiment(args: argparse.Namespace, dataset: str) -> ExperimentConfig:
    """Build the settings: preset of `dataset`, TOML file, ``--set``, ``--device``."""
    from contrastlocal.training import preset

    cfg = preset(dataset)
    if getattr(args, "config", None) is not None:
        data = _read_toml(Path(args.config))
        named = data.pop("preset", data.get("dataset", dataset))
        if named != dataset:
            msg = (
                f"`--config` {os.fspath(args.config)!r} is for dataset {named!r}, but "
                f"--dataset is {dataset!r}."
            )
            raise _UsageError(msg)
        try:
            cfg = cfg.replace(**data)
        except (ValueError, TypeError) as err:
            msg = f"`--config` {os.fspath(args.config)!r}: {err}"
            raise _UsageError(msg) from None
    overrides = parse_set_option(getattr(args, "set", None) or [])
    if overrides:
        try:
            cfg = cfg.replace(**overrides)
        except (ValueError, TypeError) as err:
            msg = f"`--set`: {err}"
            raise _UsageError(msg) from None
    if cfg.dataset != dataset:
        msg = f"the settings name dataset {cfg.dataset!r}, but --dataset is {dataset!r}."
        raise _UsageError(msg)
    device = getattr(args, "device", None)
    if device is not None:
        cfg = cfg.replace(runtime={"device": device})
    _check_device(cfg.runtime.device)
    if getattr(args, "no_progress", False):
        cfg = cfg.replace(runtime={"progress": False})
    return cfg


# ------------------------------------------------------------------------------------ splits
def _auto_splits(ids: Sequence[str], wanted: Sequence[int]) -> DatasetSplits:
    """Split the cases found, for small folders (fixtures, subsets of a release)."""
    from contrastlocal.data.splits import DatasetSplits

    ids = sorted(ids)
    n = len(ids)
    if n < 3:
        msg = f"`--splits auto` needs at least 3 cases (train, validation, test); found {n}."
        raise _UsageError(msg)
    num_test = max(1, n // 5)
    num_val = 1 if n < 10 else 2
    test = tuple(ids[n - num_test :])
    val = tuple(ids[n - num_test - num_val : n - num_test])
    pool = ids[: n - num_test - num_val]
    finetune: dict[int, dict[int, tuple[tuple[str, ...], tuple[str, ...]]]] = {}
    for k in wanted:
        if k > len(pool):
            continue
        combos = min(5, max(1, len(pool) // k))
        finetune[k] = {c + 1: (tuple((pool * 2)[c * k : c * k + k]), val) for c in range(combos)}
    return DatasetSplits(pretrain=tuple(ids[: n - num_test]), test=test, finetune=finetune)


def _paper_labelled(dataset: str) -> dict[int, tuple[int, ...]]:
    if dataset == "cityscapes":
        from contrastlocal.data.splits import CITYSCAPES_FINETUNE_SIZES

        return dict.fromkeys(CITYSCAPES_FINETUNE_SIZES, (1, 2, 3, 4, 5))
    from contrastlocal.data.splits import SPLITS

    return {k: tuple(sorted(v)) for k, v in SPLITS[dataset].finetune.items()}


def _check_labelled(
    available: Mapping[int, Sequence[int]],
    num_labelled: Sequence[int] | None,
    combinations: Sequence[int] | None,
    where: str,
) -> list[tuple[int, list[int]]]:
    """Pairs (|X_tr|, combinations) to run; one-line errors for values the splits lack."""
    ns = sorted(available) if num_labelled is None else list(dict.fromkeys(num_labelled))
    plan = []
    for n in ns:
        if n not in available:
            msg = f"`--num-labelled` must be among {sorted(available)} for {where}; got {n}."
            raise _UsageError(msg)
        have = list(available[n])
        combos = have if combinations is None else [c for c in combinations if c in have]
        if not combos:
            msg = (
                f"`--combinations` {list(combinations or [])} has none of the combinations "
                f"{have} of |X_tr| = {n} for {where}."
            )
            raise _UsageError(msg)
        plan.append((n, combos))
    return plan


@dataclass
class _Data:
    dataset: str
    root: Path
    cache: Path
    splits: DatasetSplits

    def volumes(self, ids: Sequence[str], *, native: bool) -> list[Volume]:
        from contrastlocal.training import load_volumes

        labels = None
        if native and self.dataset != "cityscapes":
            from contrastlocal.data.readers import get_reader

            reader = get_reader(self.dataset, self.root)
            labels = {}
            for cid in ids:
                case = reader.read(cid)
                if case.label is not None:
                    labels[cid] = case.label
        return load_volumes(self.cache, list(ids), native_labels=labels)


def _prepare(
    args: argparse.Namespace, cfg: ExperimentConfig, wanted: Sequence[int] | None
) -> _Data:
    """Prepare (or reuse) the cache of the dataset and resolve the splits on what it holds."""
    from dataclasses import replace

    from contrastlocal.data.cache import open_cache
    from contrastlocal.data.prepare import prepare_dataset
    from contrastlocal.data.preprocess import PREPROCESS_PRESETS
    from contrastlocal.data.splits import make_cityscapes_split

    dataset = cfg.dataset
    root = Path(args.data)
    if not root.is_dir():
        msg = f"`--data` {os.fspath(root)!r} does not exist or is not a folder."
        raise _UsageError(msg)
    prep = replace(PREPROCESS_PRESETS[dataset], image_size=cfg.model.image_size)
    if getattr(args, "n4", None) is not None:
        prep = replace(prep, n4=args.n4)
    cache_root = Path(args.cache) if args.cache is not None else Path(args.out) / "cache"
    path = prepare_dataset(
        dataset,
        root,
        cache_root,
        split="all",
        config=prep,
        workers=args.workers,
        progress=cfg.runtime.progress,
    )
    ids = [str(c) for c in open_cache(path).case_ids]
    if args.splits == "auto":
        splits = _auto_splits(ids, wanted or (1, 2, 8))
    elif dataset == "cityscapes":
        splits = make_cityscapes_split(ids)
    else:
        from contrastlocal.data.splits import SPLITS

        splits = SPLITS[dataset]
        missing = sorted(set(splits.all_ids()) - set(ids))
        if missing:
            shown = ", ".join(missing[:6]) + (", ..." if len(missing) > 6 else "")
            msg = (
                f"`--data` {os.fspath(root)!r} lacks {len(missing)} case(s) of the paper's "
                f"{dataset} splits ({shown}); use the complete release or `--splits auto`."
            )
            raise _UsageError(msg)
    return _Data(dataset, root, path, splits)


# ------------------------------------------------------------------------------------ helpers
def _init_keys(cfg: ExperimentConfig) -> tuple[str, str]:
    g = {"domain": "GD", "random": "GR", "domain_negatives": "GD-"}[cfg.global_stage.strategy]
    loc = {"domain": "LD", "random": "LR"}[cfg.local_stage.strategy]
    return g, f"{g}+{loc}"


def _say(text: str) -> None:
    print(text, flush=True)


def _quiet(_text: str) -> None:
    """Swallow a progress line (ranks other than 0 under torchrun)."""


def _finite(values: Sequence[float]) -> bool:
    return all(math.isfinite(v) for v in values)


def _class_names(dataset: str, num_classes: int) -> list[str]:
    names = {
        "acdc": ["RV", "Myo", "LV"],
        "synthetic": ["RV", "Myo", "LV"],
        "prostate": ["PZ", "TZ"],
        "mmwhs": ["Myo", "LA", "LV", "RA", "RV", "AA", "PA"],
    }.get(dataset)
    if names is None or len(names) != num_classes - 1:
        return [f"class {k}" for k in range(1, num_classes)]
    return names


def _global_embeddings(
    network: Any, volumes: Sequence[Any], num_partitions: int, device: str = "cpu"
) -> tuple[Any, Any]:
    """g_1 embeddings of every slice of `volumes` and each slice's partition id."""
    import numpy as np
    import torch

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
                parts.append((np.arange(z) * num_partitions) // z)
    finally:
        network.train(was)
    return np.concatenate(rows), np.concatenate(parts)


def _global_network(cfg: ExperimentConfig, checkpoint: Path | None) -> Any:
    import torch

    from contrastlocal.models import GlobalPretrainNetwork
    from contrastlocal.training import build_unet, load_weights

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


def _pretrain_plots(
    cfg: ExperimentConfig,
    volumes: Sequence[Any],
    global_final: Path | None,
    plots: Path,
    label: str,
    names: Sequence[str] | None = None,
) -> list[Path]:
    """Partition grid of the pre-training volumes and embeddings before/after stage 1."""
    from contrastlocal.training.plots import plot_embedding_projection, plot_partition_grid

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
                class_names=_class_names(cfg.dataset, cfg.model.num_classes),
            )
        )
    if global_final is not None and sum(v.num_slices for v in volumes) >= 2:
        sample = list(volumes)[:12]
        before, pid = _global_embeddings(_global_network(cfg, None), sample, max(s, 1))
        after, _ = _global_embeddings(_global_network(cfg, global_final), sample, max(s, 1))
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


# ------------------------------------------------------------------------------------ demo
def _cmd_demo(args: argparse.Namespace) -> int:
    from contrastlocal.training.demo import run_demo

    seeds = list(args.seeds)
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        msg = f"`--seeds` must be distinct non-negative integers; got {seeds}."
        raise _UsageError(msg)
    out = None if args.out is None else Path(args.out)
    if out is not None and out.exists() and not out.is_dir():
        msg = f"`--out` {os.fspath(out)!r} exists and is not a folder."
        raise _UsageError(msg)
    t0 = time.perf_counter()
    results = run_demo(
        out, seeds=tuple(seeds), quick=args.quick, progress=not args.no_progress, log=_say
    )
    if out is not None and not args.no_plots:
        for p in demo_plots(out, results, seeds=seeds, quick=args.quick):
            _say(f"wrote {p}")
    _say(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return 0


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
    import numpy as np

    from contrastlocal.training import build_unet, evaluate, load_weights
    from contrastlocal.training.demo import _volumes, demo_settings
    from contrastlocal.training.plots import (
        plot_dice_per_class,
        plot_loss_curves,
        plot_results_summary,
    )
    from contrastlocal.training.results import INIT_LABELS

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
    first = root / f"seed{seeds[0]}"

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
            INIT_LABELS.get(k, k): first / f"finetune_{k}_n{n}" / "metrics.jsonl" for k in results
        }
    panels = {k: {a: b for a, b in v.items() if b.is_file()} for k, v in panels.items()}
    panels = {k: v for k, v in panels.items() if v}
    if panels:
        written.append(
            plot_loss_curves(panels, plots / "loss_curves.png", title="Synthetic demo: training")
        )
    # per-class test Dice of the selected checkpoints (best.pt), re-evaluated on each seed's
    # held-out test volumes, which the demo regenerates deterministically from the seed
    n_max = max(settings.num_labelled)
    scores: dict[str, list[Any]] = {k: [] for k in results}
    test_volumes: list[Any] = []
    test_names: list[str] = []
    for s in seeds:
        test = _volumes(s, settings)["test"]
        test_volumes += test
        test_names += [f"seed {s}, test {i + 1}" for i in range(len(test))]
        for key in results:
            best = root / f"seed{s}" / f"finetune_{key}_n{n_max}" / "best.pt"
            if not best.is_file():
                continue
            net = build_unet(cfg)
            load_weights(net, best)
            res = evaluate(net, test, num_classes=cfg.model.num_classes, compute_hd95=False)
            scores[key].append(res.dice[:, 1:])
    if all(scores.values()):
        written.append(
            plot_dice_per_class(
                {INIT_LABELS.get(k, k): np.concatenate(v) for k, v in scores.items()},
                plots / "dice_per_class.png",
                class_names=_class_names("synthetic", cfg.model.num_classes),
                title=f"Synthetic demo: test Dice per class, |X_tr| = {n_max}, "
                f"{len(seeds)} seed(s)",
                unit="test volume and seed",
            )
        )
    finals = [root / "pretrain" / "global" / "final.pt", first / "global" / "final.pt"]
    final = next((f for f in finals if f.is_file()), None)
    # partitions and embeddings of held-out volumes (never seen in pre-training)
    written += _pretrain_plots(cfg, test_volumes, final, plots, "G^D", names=test_names)
    return written


# ------------------------------------------------------------------------------------ run
def _run_recipe(
    args: argparse.Namespace, cfg: ExperimentConfig, *, log: Callable[[str], None] = _say
) -> dict[str, dict[int | str, list[float]]]:
    """Run the whole recipe on a dataset as distributed (``contrastlocal run``).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed ``run`` arguments (``data``, ``out``, ``cache``, ``workers``, ``n4``,
        ``splits``, ``num_labelled``, ``combinations``, ``fresh``, ``no_plots``).
    cfg : ExperimentConfig
        The settings (preset, TOML file, ``--set``, ``--device`` applied).
    log : callable, default print
        Receives one line per finished step.

    Returns
    -------
    dict
        ``{initialisation: {"|X_tr|": [test Dice per combination]}}``, also written to
        ``<out>/results.json`` with the table (``results.md``/``.csv``), per-volume metrics
        (``evaluation.json``) and plots (``plots/*.png``).

    Notes
    -----
    Stage 1 and 2 run once on the pre-training volumes; for every |X_tr| and combination the
    UNet is fine-tuned from the stage-1 encoder (row G), from the encoder and l decoder blocks
    of stage 2 (row G + L), and trained from random weights with augmentation (the baseline),
    each choosing its checkpoint on the validation volumes; all are scored on the test volumes
    (per-class 3D Dice at native resolution, and HD95). Every stage resumes after a kill
    unless ``--fresh`` is given.
    """
    from contrastlocal.training import (
        config_to_dict,
        evaluate,
        finetune,
        format_results_table,
        pretrain_global,
        pretrain_local,
        train_baseline,
        write_results,
    )
    from contrastlocal.training.results import INIT_LABELS

    out = Path(args.out)
    resume = not args.fresh
    if args.splits == "paper":
        _check_labelled(
            _paper_labelled(cfg.dataset),
            args.num_labelled,
            args.combinations,
            f"{cfg.dataset!r} (the paper's splits)",
        )
    t0 = time.perf_counter()
    # under torchrun: the process group first; rank 0 prepares the cache, the others reuse it,
    # and only rank 0 evaluates and writes files (the stages write on rank 0 only)
    from contrastlocal.training import _distributed, init_distributed

    init_distributed(cfg.runtime.device)
    main = _distributed.is_main()
    if not main:
        log = _quiet  # one report per run: rank 0 prints, as it alone writes the files
        _distributed.barrier()
    data = _prepare(args, cfg, args.num_labelled)
    if main:
        _distributed.barrier()
    plan = _check_labelled(
        {k: sorted(v) for k, v in data.splits.finetune.items()},
        args.num_labelled,
        args.combinations,
        f"{cfg.dataset!r} ({args.splits} splits of {os.fspath(data.root)!r})",
    )
    log(f"cache ready: {data.cache} ({time.perf_counter() - t0:.0f} s)")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n")
    pretrain = data.volumes(data.splits.pretrain, native=False)
    test = data.volumes(data.splits.test, native=True)
    g_key, gl_key = _init_keys(cfg)
    t = time.perf_counter()
    g = pretrain_global(pretrain, cfg, out=out / "global", resume=resume)
    log(
        f"stage 1 ({INIT_LABELS.get(g_key, g_key)}): {g.iterations} iterations, "
        f"{time.perf_counter() - t:.0f} s"
    )
    t = time.perf_counter()
    loc = pretrain_local(pretrain, cfg, encoder=g.network, out=out / "local", resume=resume)
    log(
        f"stage 2 ({INIT_LABELS.get(gl_key, gl_key)}): {loc.iterations} iterations, "
        f"{time.perf_counter() - t:.0f} s"
    )
    rows = ("random", g_key, gl_key)
    results: dict[str, dict[int | str, list[float]]] = {k: {} for k in rows}
    per_volume: dict[str, Any] = {}
    dice_at: dict[str, list[Any]] = {k: [] for k in rows}
    for n, combos in plan:
        for c in combos:
            train_ids, val_ids = data.splits.finetune[n][c]
            run_cfg = (
                cfg.replace(num_labelled=n, combination=c)
                if args.splits == "paper" and cfg.dataset != "cityscapes"
                else cfg
            )
            train = data.volumes(train_ids, native=False)
            val = data.volumes(val_ids, native=True)
            for key in rows:
                t = time.perf_counter()
                folder = out / "finetune" / f"{key}_n{n}_c{c}"
                if key == "random":
                    res = train_baseline(train, val, run_cfg, out=folder, resume=resume)
                else:
                    init = g.network if key == g_key else loc.network
                    res = finetune(train, val, run_cfg, init=init, out=folder, resume=resume)
                if not main:
                    continue
                ev = evaluate(
                    res.network,
                    test,
                    num_classes=cfg.model.num_classes,
                    device=next(res.network.parameters()).device,
                )
                results[key].setdefault(str(n), []).append(ev.mean_dice)
                dice_at[key].append((n, ev.dice[:, 1:]))
                per_volume[f"{key}_n{n}_c{c}"] = {
                    "summary": ev.summary(),
                    "volumes": ev.per_volume(),
                    "best_iteration": res.best_iteration,
                    "best_validation_dice": res.best_score,
                }
                log(
                    f"|X_tr| = {n}, c{c}, {INIT_LABELS.get(key, key)}: test Dice "
                    f"{ev.mean_dice:.3f} ({time.perf_counter() - t:.0f} s)"
                )
    if not main:
        return results  # empty: rank 0 reports
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "evaluation.json").write_text(json.dumps(per_volume, indent=2) + "\n")
    title = f"{cfg.dataset}: test Dice (mean ± std over combinations)"
    write_results(results, out, stem="results", title=title)
    log(format_results_table(results, title=title))
    if not args.no_plots:
        for p in _run_plots(cfg, out, results, dice_at, pretrain, plan, rows):
            log(f"wrote {p}")
    log(f"total {time.perf_counter() - t0:.0f} s")
    return results


def _run_plots(
    cfg: ExperimentConfig,
    out: Path,
    results: Mapping[str, Mapping[int | str, Sequence[float]]],
    dice_at: Mapping[str, Sequence[tuple[int, Any]]],
    pretrain: Sequence[Any],
    plan: Sequence[tuple[int, Sequence[int]]],
    rows: Sequence[str],
) -> list[Path]:
    import numpy as np

    from contrastlocal.training.plots import (
        plot_dice_per_class,
        plot_loss_curves,
        plot_results_summary,
    )
    from contrastlocal.training.results import INIT_LABELS

    plots = out / "plots"
    g_key, gl_key = rows[1], rows[2]
    written = [
        plot_results_summary(
            results,
            plots / "results.png",
            labels=INIT_LABELS,
            title=f"{cfg.dataset}: test Dice, mean ± std over combinations",
        )
    ]
    panels: dict[str, dict[str, Path]] = {
        f"stage 1: {INIT_LABELS.get(g_key, g_key)}": {"loss": out / "global" / "metrics.jsonl"},
        f"stage 2: {gl_key.split('+')[1].replace('L', 'L^')} on the stage-1 encoder": {
            "loss": out / "local" / "metrics.jsonl"
        },
    }
    n0, combos0 = plan[0]
    panels[f"fine-tuning |X_tr| = {n0}, c{combos0[0]}"] = {
        INIT_LABELS.get(k, k): out / "finetune" / f"{k}_n{n0}_c{combos0[0]}" / "metrics.jsonl"
        for k in rows
    }
    panels = {k: {a: b for a, b in v.items() if b.is_file()} for k, v in panels.items()}
    written.append(
        plot_loss_curves(
            {k: v for k, v in panels.items() if v},
            plots / "loss_curves.png",
            title=f"{cfg.dataset}: training",
        )
    )
    n_last = plan[-1][0]
    scores = {
        INIT_LABELS.get(k, k): np.concatenate([d for n, d in dice_at[k] if n == n_last])
        for k in rows
    }
    written.append(
        plot_dice_per_class(
            scores,
            plots / "dice_per_class.png",
            class_names=_class_names(cfg.dataset, cfg.model.num_classes),
            title=f"{cfg.dataset}: test Dice per class, |X_tr| = {n_last}, all combinations",
            unit="test volume and combination",
        )
    )
    final = out / "global" / "final.pt"
    written += _pretrain_plots(
        cfg, pretrain, final if final.is_file() else None, plots, INIT_LABELS.get(g_key, g_key)
    )
    return written


def _cmd_run(args: argparse.Namespace) -> int:
    cfg = _experiment(args, args.dataset)
    results = _run_recipe(args, cfg)
    bad = [k for k, row in results.items() for v in row.values() if not _finite(v)]
    return 1 if bad else 0


# ------------------------------------------------------------------------------------ stages
def _single_plan(args: argparse.Namespace, data: _Data) -> tuple[tuple[str, ...], tuple[str, ...]]:
    available = {k: sorted(v) for k, v in data.splits.finetune.items()}
    _check_labelled(
        available,
        [args.num_labelled],
        [args.combination],
        f"{data.dataset!r} ({args.splits} splits)",
    )
    train, val = data.splits.finetune[args.num_labelled][args.combination]
    return tuple(train), tuple(val)


def _existing_file(path: str | None, option: str) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        msg = f"`{option}` {path!r} does not exist or is not a file."
        raise _UsageError(msg)
    return p


def _cmd_pretrain_global(args: argparse.Namespace) -> int:
    from contrastlocal.training import pretrain_global

    cfg = _experiment(args, args.dataset)
    data = _prepare(args, cfg, None)
    volumes = data.volumes(data.splits.pretrain, native=False)
    out = Path(args.out)
    res = pretrain_global(volumes, cfg, out=out, resume=not args.fresh)
    _say(
        f"stage 1 done: {res.iterations} iterations, {res.seconds:.0f} s; weights in "
        f"{out / 'final.pt'}"
    )
    if not args.no_plots:
        from contrastlocal.training.plots import plot_loss_curves

        plot_loss_curves(
            {"stage 1 (global)": {"loss": out / "metrics.jsonl"}}, out / "plots" / "loss_curves.png"
        )
        _pretrain_plots(cfg, volumes, out / "final.pt", out / "plots", "stage 1")
    return 0


def _cmd_pretrain_local(args: argparse.Namespace) -> int:
    from contrastlocal.training import pretrain_local

    encoder = _existing_file(args.encoder, "--encoder")
    cfg = _experiment(args, args.dataset)
    data = _prepare(args, cfg, None)
    volumes = data.volumes(data.splits.pretrain, native=False)
    out = Path(args.out)
    res = pretrain_local(volumes, cfg, encoder=encoder, out=out, resume=not args.fresh)
    _say(
        f"stage 2 done: {res.iterations} iterations, {res.seconds:.0f} s; weights in "
        f"{out / 'final.pt'}" + ("" if encoder else " (encoder: random, no --encoder given)")
    )
    if not args.no_plots:
        from contrastlocal.training.plots import plot_loss_curves

        plot_loss_curves(
            {"stage 2 (local)": {"loss": out / "metrics.jsonl"}}, out / "plots" / "loss_curves.png"
        )
    return 0


def _evaluate_and_report(
    network: Any,
    cfg: ExperimentConfig,
    data: _Data,
    ids: Sequence[str],
    out: Path,
    label: str,
    plots: bool,
) -> float:
    from contrastlocal.training import evaluate

    volumes = data.volumes(ids, native=True)
    ev = evaluate(network, volumes, num_classes=cfg.model.num_classes)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(
        json.dumps({"summary": ev.summary(), "volumes": ev.per_volume()}, indent=2) + "\n"
    )
    s = ev.summary()
    _say(
        f"{label}: Dice {s['dice_mean']:.3f} ± {s['dice_std']:.3f} over {len(ids)} volume(s)"
        + (f", HD95 {s['hd95_mean']:.2f} mm" if "hd95_mean" in s else "")
    )
    if plots:
        from contrastlocal.training.plots import plot_dice_per_class

        plot_dice_per_class(
            {label: ev.dice[:, 1:]},
            out / "plots" / "dice_per_class.png",
            class_names=_class_names(cfg.dataset, cfg.model.num_classes),
            title=f"{cfg.dataset}: Dice per class ({label})",
        )
    return ev.mean_dice


def _cmd_finetune(args: argparse.Namespace, *, baseline: bool = False) -> int:
    from contrastlocal.training import finetune, train_baseline

    init = None if baseline else _existing_file(args.init, "--init")
    cfg = _experiment(args, args.dataset)
    data = _prepare(args, cfg, [args.num_labelled])
    train_ids, val_ids = _single_plan(args, data)
    if args.splits == "paper" and cfg.dataset != "cityscapes":
        cfg = cfg.replace(num_labelled=args.num_labelled, combination=args.combination)
    train = data.volumes(train_ids, native=False)
    val = data.volumes(val_ids, native=True)
    out = Path(args.out)
    if baseline:
        res = train_baseline(train, val, cfg, out=out, resume=not args.fresh)
    else:
        res = finetune(train, val, cfg, init=init, out=out, resume=not args.fresh)
    _say(
        f"{'baseline' if baseline else 'fine-tuning'} done: best validation Dice "
        f"{res.best_score if res.best_score is not None else float('nan'):.3f} at iteration "
        f"{res.best_iteration}; weights in {out / 'best.pt'}"
    )
    if not args.no_plots:
        from contrastlocal.training.plots import plot_loss_curves

        plot_loss_curves(
            {"fine-tuning": {"loss": out / "metrics.jsonl"}}, out / "plots" / "loss_curves.png"
        )
    _evaluate_and_report(res.network, cfg, data, data.splits.test, out, "test", not args.no_plots)
    return 0


def _cmd_baseline(args: argparse.Namespace) -> int:
    return _cmd_finetune(args, baseline=True)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from contrastlocal.training import build_unet, load_weights

    ckpt = _existing_file(args.checkpoint, "--checkpoint")
    assert ckpt is not None
    cfg = _experiment(args, args.dataset)
    data = _prepare(args, cfg, None)
    if args.split == "test":
        ids: Sequence[str] = data.splits.test
    elif args.split == "pretrain":
        ids = data.splits.pretrain
    else:
        ids = [s.strip() for s in args.split.split(",") if s.strip()]
        from contrastlocal.data.cache import open_cache

        have = set(open_cache(data.cache).case_ids)
        unknown = [i for i in ids if i not in have]
        if unknown or not ids:
            msg = f"`--split` must be test, pretrain or case ids of the dataset; unknown {unknown}."
            raise _UsageError(msg)
    net = build_unet(cfg)
    load_weights(net, ckpt)
    _evaluate_and_report(net, cfg, data, ids, Path(args.out), args.split, not args.no_plots)
    return 0


# ------------------------------------------------------------------------------------ parser
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        msg = f"expected a positive integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if value < 1:
        msg = f"expected a positive integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        msg = f"expected a non-negative integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if value < 0:
        msg = f"expected a non-negative integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _add_common(p: argparse.ArgumentParser, *, out_help: str) -> None:
    p.add_argument("--dataset", required=True, choices=_DATASETS, help="which dataset")
    p.add_argument(
        "--data",
        required=True,
        metavar="PATH",
        help="the dataset folder as distributed (e.g. ACDC/database)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help=out_help)
    p.add_argument(
        "--cache",
        default=None,
        metavar="DIR",
        help="root of the pre-processed caches (default: OUT/cache); prepared on "
        "first use, reused after (pass the same one to every stage)",
    )
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE.toml",
        help="settings file (TOML tables model, global_stage, local_stage, finetune, "
        "runtime) applied over the dataset's preset",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)
    p.add_argument(
        "--device",
        default=None,
        metavar="{cpu,cuda,cuda:N,auto}",
        type=_device,
        help="where to train (default: the settings', cpu)",
    )
    p.add_argument(
        "--splits",
        choices=("paper", "auto"),
        default="paper",
        help="paper: the splits of the paper (needs the whole release; Cityscapes: "
        "drawn from the images found); auto: split the cases found (small folders)",
    )
    p.add_argument(
        "--n4",
        choices=("none", "default", "legacy"),
        default=None,
        help="N4 bias correction when preparing (default: the dataset's preset)",
    )
    p.add_argument(
        "--workers",
        type=_non_negative_int,
        default=None,
        help="processes for preparing the cache (default: one per CPU; 0: none)",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="start stages afresh instead of resuming from their checkpoints",
    )
    p.add_argument("--no-plots", action="store_true", help="write no PNG figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _device(text: str) -> str:
    if (
        text in ("cpu", "auto")
        or text == "cuda"
        or (text.startswith("cuda:") and text[5:].isdigit())
    ):
        return text
    msg = f"expected cpu, cuda, cuda:N or auto, got {text!r}"
    raise argparse.ArgumentTypeError(msg)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``contrastlocal`` command.

    Returns
    -------
    argparse.ArgumentParser
        The parser, with one sub-command per task.

    Examples
    --------
    >>> parser = build_parser()
    >>> parser.parse_args(["demo", "--quick"]).command
    'demo'
    >>> args = parser.parse_args(["run", "--dataset", "acdc", "--data", "ACDC", "--out", "r",
    ...                           "--num-labelled", "1", "2"])
    >>> args.num_labelled, args.splits
    ([1, 2], 'paper')
    """
    parser = _Parser(
        prog="contrastlocal",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from contrastlocal import __version__

    parser.add_argument("--version", action="version", version=f"contrastlocal {__version__}")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_Parser, title="commands"
    )
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="the three-stage recipe on synthetic data (CPU, minutes, no download)",
        description="Pre-train with G^D, then G^D + L^D, on synthetic cardiac phantoms; "
        "fine-tune random init, G^D and G^D + L^D on 1 and 2 labelled volumes with the same "
        "budget; score held-out volumes; print the table (mean ± std over the seeds). With "
        "--out: results.json, results.md/.csv, run.json, per-stage logs and plots/*.png.",
    )
    demo.add_argument(
        "--out", default=None, metavar="DIR", help="write results.json, tables, logs and plots here"
    )
    demo.add_argument(
        "--seeds",
        type=_non_negative_int,
        nargs="+",
        default=[0, 1, 2],
        metavar="SEED",
        help="one full run per seed (default: 0 1 2)",
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, a few iterations (seconds; numbers meaningless)",
    )
    demo.add_argument("--no-plots", action="store_true", help="write no PNG figures")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(func=_cmd_demo)

    run = sub.add_parser(
        "run",
        help="the whole recipe on a dataset: prepare, 3 stages, baseline, table, plots",
        description="Prepare the cache if needed, pre-train the encoder (stage 1, global loss) "
        "and the decoder (stage 2, local loss) on the pre-training volumes, then for each "
        "|X_tr| and combination fine-tune from G, from G + L, and train the random-init "
        "baseline; evaluate on the test volumes (3D Dice per class at native resolution, "
        "HD95); write OUT/results.{json,md,csv}, OUT/evaluation.json and OUT/plots/*.png. "
        "Stages resume after a kill.",
    )
    _add_common(run, out_help="output folder (stages, tables, plots)")
    run.add_argument(
        "--num-labelled",
        type=_positive_int,
        nargs="+",
        default=None,
        metavar="N",
        help="|X_tr| values (default: all of the splits: 1 2 8; Cityscapes 100 200 400)",
    )
    run.add_argument(
        "--combinations",
        type=_positive_int,
        nargs="+",
        default=None,
        metavar="C",
        help="combinations c1..c5 to run (default: all)",
    )
    run.set_defaults(func=_cmd_run)

    pg = sub.add_parser(
        "pretrain-global",
        help="stage 1: encoder + g_1 with a global loss",
        description="Stage 1 on the pre-training volumes; writes OUT/final.pt, "
        "OUT/metrics.jsonl, checkpoints and plots.",
    )
    _add_common(pg, out_help="stage folder")
    pg.set_defaults(func=_cmd_pretrain_global)

    pl = sub.add_parser(
        "pretrain-local",
        help="stage 2: l decoder blocks + g_2 with a local loss (frozen encoder)",
        description="Stage 2 on the pre-training volumes, encoder from stage 1 "
        "(--encoder); writes OUT/final.pt, OUT/metrics.jsonl and checkpoints.",
    )
    _add_common(pl, out_help="stage folder")
    pl.add_argument(
        "--encoder",
        default=None,
        metavar="CKPT",
        help="stage-1 weights (its final.pt); default: a random encoder",
    )
    pl.set_defaults(func=_cmd_pretrain_local)

    for name, helptext, func in (
        ("finetune", "stage 3: fine-tune the UNet on |X_tr| labelled volumes", _cmd_finetune),
        (
            "baseline",
            "the random-init baseline (augmented), same budget as fine-tuning",
            _cmd_baseline,
        ),
    ):
        p = sub.add_parser(
            name,
            help=helptext,
            description=helptext[0].upper() + helptext[1:] + "; the checkpoint "
            "with the best validation Dice is kept (OUT/best.pt) and scored on "
            "the test volumes (OUT/evaluation.json).",
        )
        _add_common(p, out_help="stage folder")
        p.add_argument(
            "--num-labelled", type=_positive_int, default=1, metavar="N", help="|X_tr| (default 1)"
        )
        p.add_argument(
            "--combination",
            type=_positive_int,
            default=1,
            metavar="C",
            help="combination c1..c5 (default 1)",
        )
        if name == "finetune":
            p.add_argument(
                "--init",
                default=None,
                metavar="CKPT",
                help="final.pt of stage 1 (encoder) or stage 2 (encoder + decoder "
                "blocks); default: random",
            )
        p.set_defaults(func=func)

    ev = sub.add_parser(
        "evaluate",
        help="score a trained UNet (best.pt) on labelled volumes",
        description="Per-class 3D Dice at native resolution and HD95 (mm) of a "
        "UNet checkpoint; writes OUT/evaluation.json and a plot.",
    )
    _add_common(ev, out_help="output folder")
    ev.add_argument(
        "--checkpoint",
        required=True,
        metavar="CKPT",
        help="a UNet checkpoint (best.pt / final.pt of finetune or baseline)",
    )
    ev.add_argument(
        "--split", default="test", help="test (default), pretrain, or comma-separated case ids"
    )
    ev.set_defaults(func=_cmd_evaluate)

    _add_prepare(sub)
    return parser


def _add_prepare(sub: Any) -> None:
    try:
        from contrastlocal.data.prepare import add_prepare_arguments, run_prepare
    except ImportError:  # the medical extra is not installed
        return
    prepare = sub.add_parser(
        "prepare",
        help="pre-process a dataset as distributed into the training cache",
        description="Read a dataset in its as-distributed layout, pre-process every case "
        "(optional N4, percentile normalisation, in-plane resampling, crop/pad) and write the "
        "memory-mapped cache. Resumes after a kill; a second run does nothing.",
    )
    add_prepare_arguments(prepare)
    prepare.set_defaults(func=run_prepare)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``contrastlocal`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status: 0 on success, 1 if training failed (non-finite loss or scores),
        2 for bad arguments or input, 130 on interrupt.

    Examples
    --------
    >>> main(["--version"])  # doctest: +SKIP
    contrastlocal 0.1.0.dev0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError, ImportError) as err:
        print(f"contrastlocal {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        print(f"contrastlocal {args.command}: training failed: {_one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"contrastlocal {args.command}: interrupted", file=sys.stderr)
        return 130
