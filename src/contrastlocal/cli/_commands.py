"""The sub-commands: each parses nothing, checks what the parser cannot, and calls the library."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._data import prepare
from ._settings import UsageError, experiment

if TYPE_CHECKING:
    from contrastlocal.data.volumes import PreparedDataset
    from contrastlocal.training import ExperimentConfig

__all__ = [
    "cmd_baseline",
    "cmd_demo",
    "cmd_evaluate",
    "cmd_finetune",
    "cmd_pretrain_global",
    "cmd_pretrain_local",
    "cmd_run",
]


def say(text: str) -> None:
    """Print one progress line (the commands' logger)."""
    print(text, flush=True)


def _plots_wanted(args: argparse.Namespace) -> bool:
    """Whether to draw: not ``--no-plots`` and matplotlib installed (else warn now, skip them)."""
    if args.no_plots:
        return False
    import warnings

    from contrastlocal._deps import optional

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = optional("matplotlib", extra="torch", purpose="the plots")
    for w in caught:
        print(f"contrastlocal {args.command}: warning: {w.message}", file=sys.stderr, flush=True)
    return found is not None


def _out_folder(path: str | os.PathLike[str] | None) -> Path | None:
    """``--out`` as a folder: refuse a path that names an existing file (one line)."""
    if path is None:
        return None
    out = Path(path)
    if out.exists() and not out.is_dir():
        msg = f"`--out` {os.fspath(out)!r} exists and is not a folder."
        raise UsageError(msg)
    return out


def _checked(cfg: ExperimentConfig) -> None:
    """Refuse settings that could only fail (or be ignored) later, before any work."""
    from contrastlocal.training.config import validate_for_run

    _usage(validate_for_run, cfg)


# ------------------------------------------------------------------------------------ demo
def cmd_demo(args: argparse.Namespace) -> int:
    """``contrastlocal demo``: the recipe on synthetic phantoms, table and plots."""
    from contrastlocal.training.demo import run_demo
    from contrastlocal.training.report import demo_plots

    seeds = list(args.seeds)
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        msg = f"`--seeds` must be distinct non-negative integers; got {seeds}."
        raise UsageError(msg)
    out = _out_folder(args.out)
    plots = _plots_wanted(args)  # a missing matplotlib is said now, not after the training
    t0 = time.perf_counter()
    results = run_demo(
        out, seeds=tuple(seeds), quick=args.quick, progress=not args.no_progress, log=say
    )
    if out is not None and plots:
        for p in demo_plots(out, results, seeds=seeds, quick=args.quick):
            say(f"wrote {p}")
    say(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return 0


# ------------------------------------------------------------------------------------ run
def cmd_run(args: argparse.Namespace) -> int:
    """``contrastlocal run``: prepare the dataset, then :func:`run_recipe` on it."""
    from contrastlocal.data.registry import get_dataset
    from contrastlocal.training import (
        init_distributed,
        is_main_process,
        main_process_first,
        run_lock,
        run_recipe,
        select_labelled,
    )

    cfg = experiment(args, args.dataset)
    _out_folder(args.out)
    _checked(cfg)  # device, precision, learning rates, region counts: before any work
    plots = _plots_wanted(args)
    names = ("--num-labelled", "--combinations")
    if args.splits == "paper":  # fail before preparing anything
        _usage(
            select_labelled,
            get_dataset(cfg.dataset).paper_labelled(),
            args.num_labelled,
            args.combinations,
            where=f"{cfg.dataset!r} (the paper's splits)",
            names=names,
        )
    t0 = time.perf_counter()
    # under torchrun: the process group first; rank 0 prepares the cache, the others reuse it
    init_distributed(cfg.runtime.device)
    main = is_main_process()
    with run_lock(args.out):  # one run per output folder (rank 0 holds it), the cache too
        with main_process_first():
            data = prepare(args, cfg, args.num_labelled)
        _usage(
            select_labelled,
            data.labelled(),
            args.num_labelled,
            args.combinations,
            where=f"{cfg.dataset!r} ({args.splits} splits of {os.fspath(data.root)!r})",
            names=names,
        )
        log = say if main else _quiet  # one report per run: rank 0 prints, as it alone writes
        log(f"cache ready: {data.cache} ({time.perf_counter() - t0:.0f} s)")
        paper = args.splits == "paper" and cfg.dataset != "cityscapes"
        result = run_recipe(
            data.pretrain_volumes(),
            data.finetune_volumes(),
            data.test_volumes(),
            cfg,
            out=args.out,
            num_labelled=args.num_labelled,
            combinations=args.combinations,
            resume=not args.fresh,
            plots=plots,
            tag_config=paper,
            data_tag=f"{args.splits}:{data.cache.name}",
            log=log,
        )
    return 0 if result.finite else 1


def _quiet(_text: str) -> None:
    """Swallow a progress line (ranks other than 0 under torchrun)."""


def _usage(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Call `func`; its ValueError becomes a usage error (exit status 2, one line)."""
    try:
        return func(*args, **kwargs)
    except ValueError as err:
        raise UsageError(str(err)) from None


# ------------------------------------------------------------------------------------ stages
def _single_set(
    args: argparse.Namespace, data: PreparedDataset
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    from contrastlocal.training import select_labelled

    _usage(
        select_labelled,
        data.labelled(),
        [args.num_labelled],
        [args.combination],
        where=f"{data.dataset!r} ({args.splits} splits)",
        names=("--num-labelled", "--combinations"),
    )
    train, val = data.splits.finetune[args.num_labelled][args.combination]
    return tuple(train), tuple(val)


def _existing_file(path: str | None, option: str) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        msg = f"`{option}` {path!r} does not exist or is not a file."
        raise UsageError(msg)
    return p


def cmd_pretrain_global(args: argparse.Namespace) -> int:
    """``contrastlocal pretrain-global``: stage 1 alone."""
    from contrastlocal.training import pretrain_global
    from contrastlocal.training.report import pretrain_plots

    cfg = experiment(args, args.dataset)
    plots = _plots_wanted(args)
    _checked(cfg)
    data = prepare(args, cfg, None)
    volumes = data.volumes(data.splits.pretrain, native=False)
    out = Path(args.out)
    res = pretrain_global(volumes, cfg, out=out, resume=not args.fresh)
    say(
        f"stage 1 done: {res.iterations} iterations, {res.seconds:.0f} s; weights in "
        f"{out / 'final.pt'}"
    )
    if plots:
        _loss_plot("stage 1 (global)", out)
        pretrain_plots(cfg, volumes, out / "final.pt", out / "plots", "stage 1")
    return 0


def _loss_plot(name: str, out: Path) -> None:
    from contrastlocal.training.plots import plot_loss_curves

    plot_loss_curves({name: {"loss": out / "metrics.jsonl"}}, out / "plots" / "loss_curves.png")


def cmd_pretrain_local(args: argparse.Namespace) -> int:
    """``contrastlocal pretrain-local``: stage 2 alone."""
    from contrastlocal.training import pretrain_local

    encoder = _existing_file(args.encoder, "--encoder")
    cfg = experiment(args, args.dataset)
    plots = _plots_wanted(args)
    _checked(cfg)
    data = prepare(args, cfg, None)
    volumes = data.volumes(data.splits.pretrain, native=False)
    out = Path(args.out)
    res = pretrain_local(volumes, cfg, encoder=encoder, out=out, resume=not args.fresh)
    say(
        f"stage 2 done: {res.iterations} iterations, {res.seconds:.0f} s; weights in "
        f"{out / 'final.pt'}" + ("" if encoder else " (encoder: random, no --encoder given)")
    )
    if plots:
        _loss_plot("stage 2 (local)", out)
    return 0


def _evaluate_and_report(
    network: Any,
    cfg: ExperimentConfig,
    data: PreparedDataset,
    ids: Sequence[str],
    out: Path,
    label: str,
    plots: bool,
) -> float:
    from contrastlocal.data.registry import class_names
    from contrastlocal.training import evaluate

    volumes = data.volumes(ids, native=True)
    ev = evaluate(network, volumes, num_classes=cfg.model.num_classes)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(
        json.dumps({"summary": ev.summary(), "volumes": ev.per_volume()}, indent=2) + "\n"
    )
    s = ev.summary()
    say(
        f"{label}: Dice {s['dice_mean']:.3f} ± {s['dice_std']:.3f} over {len(ids)} volume(s)"
        + (f", HD95 {s['hd95_mean']:.2f} mm" if "hd95_mean" in s else "")
    )
    if plots:
        from contrastlocal.training.plots import plot_dice_per_class

        plot_dice_per_class(
            {label: ev.dice[:, 1:]},
            out / "plots" / "dice_per_class.png",
            class_names=class_names(cfg.dataset, cfg.model.num_classes),
            title=f"{cfg.dataset}: Dice per class ({label})",
        )
    return ev.mean_dice


def cmd_finetune(args: argparse.Namespace, *, baseline: bool = False) -> int:
    """``contrastlocal finetune`` (and ``baseline``): one fine-tuning run, then its test scores."""
    from contrastlocal.training import finetune, train_baseline

    init = None if baseline else _existing_file(args.init, "--init")
    cfg = experiment(args, args.dataset)
    plots = _plots_wanted(args)
    _checked(cfg)
    data = prepare(args, cfg, [args.num_labelled])
    train_ids, val_ids = _single_set(args, data)
    if args.splits == "paper" and cfg.dataset != "cityscapes":
        cfg = cfg.replace(num_labelled=args.num_labelled, combination=args.combination)
    train = data.volumes(train_ids, native=False)
    val = data.volumes(val_ids, native=True)
    out = Path(args.out)
    if baseline:
        res = train_baseline(train, val, cfg, out=out, resume=not args.fresh)
    else:
        res = finetune(train, val, cfg, init=init, out=out, resume=not args.fresh)
    say(
        f"{'baseline' if baseline else 'fine-tuning'} done: best validation Dice "
        f"{res.best_score if res.best_score is not None else float('nan'):.3f} at iteration "
        f"{res.best_iteration}; weights in {out / 'best.pt'}"
    )
    if plots:
        from contrastlocal.training.plots import plot_loss_curves

        plot_loss_curves(
            {"fine-tuning": {"loss": out / "metrics.jsonl"}}, out / "plots" / "loss_curves.png"
        )
    _evaluate_and_report(res.network, cfg, data, data.splits.test, out, "test", plots)
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    """``contrastlocal baseline``: the random-initialisation baseline."""
    return cmd_finetune(args, baseline=True)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``contrastlocal evaluate``: score a UNet checkpoint."""
    from contrastlocal.training import build_unet, load_weights

    ckpt = _existing_file(args.checkpoint, "--checkpoint")
    assert ckpt is not None
    cfg = experiment(args, args.dataset)
    plots = _plots_wanted(args)
    data = prepare(args, cfg, None)
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
            raise UsageError(msg)
    net = build_unet(cfg)
    load_weights(net, ckpt)
    _evaluate_and_report(net, cfg, data, ids, Path(args.out), args.split, plots)
    return 0
