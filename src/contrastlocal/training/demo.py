"""The CPU demo: the whole recipe on synthetic cardiac phantoms, random init vs G^D vs G^D + L^D.

The encoder is pre-trained with G^D and the decoder with L^D once, on an unlabelled pool of
synthetic volumes (shared by all seeds, to fit the CPU budget). For each seed a fresh synthetic
dataset of labelled, validation and test volumes is generated (disjoint from the pool), then
three initialisations — random (the baseline of ``contrastlocal run``:
:func:`~contrastlocal.training.train_baseline`), G^D (encoder), G^D + L^D (encoder and l
decoder blocks) — are fine-tuned with the *same* budget, batch, augmentation and validation-based
checkpoint selection on |X_tr| = 1 and 2 labelled volumes and scored on held-out test volumes
(mean foreground 3D Dice). No seed is selected or dropped. A fully supervised benchmark row
(random initialisation fine-tuned on all labelled phantom volumes: the pre-training pool with its
labels) gives the ceiling to compare against, and per pre-trained initialisation the table of
paired differences to random initialisation (same seed, same data) shows the mean difference, its
standard error over seeds and how many seeds it won. The stages and cells are those of
:mod:`contrastlocal.training.recipe` (:func:`~contrastlocal.training.plan_stages`,
:func:`~contrastlocal.training.plan_cells`), so every row
means what it means in ``contrastlocal run``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.volumes import Volume
from .config import ExperimentConfig, preset
from .evaluation import evaluate
from .plan import Layout, plan_cells, plan_stages
from .recipe import run_cell, run_stage, threads_of
from .results import format_results_table, write_results

__all__ = [
    "DEMO_BENCHMARK",
    "DEMO_INITIALISATIONS",
    "DEMO_LAYOUT",
    "DemoSettings",
    "demo_cell_dir",
    "demo_settings",
    "demo_volumes",
    "format_paired_table",
    "paired_differences",
    "run_demo",
]

#: Row keys of the demo's results, in order.
DEMO_INITIALISATIONS: tuple[str, ...] = ("random", "GD", "GD+LD")
#: Row key of the fully supervised benchmark (column ``"all"``: every labelled phantom volume).
DEMO_BENCHMARK = "benchmark"


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo.

    Attributes
    ----------
    image_size : int
        Side of the square slices.
    num_pretrain, num_val, num_test : int
        Unlabelled pre-training volumes, validation and test volumes per seed.
    num_labelled : tuple of int
        |X_tr| values compared.
    config : ExperimentConfig
        Network and stage settings.

    Examples
    --------
    >>> from contrastlocal.training.demo import demo_settings
    >>> settings = demo_settings()
    >>> settings.image_size, settings.num_labelled, settings.config.global_stage.iterations
    (48, (1, 2), 300)
    """

    image_size: int
    num_pretrain: int
    num_val: int
    num_test: int
    num_labelled: tuple[int, ...]
    config: ExperimentConfig


def demo_settings(*, quick: bool = False) -> DemoSettings:
    """Return the demo's sizes (``quick=True``: a few iterations, for tests).

    Parameters
    ----------
    quick : bool, default False
        Tiny sizes that run in seconds (the numbers are then meaningless).

    Returns
    -------
    DemoSettings
        The settings :func:`run_demo` uses.

    Examples
    --------
    >>> from contrastlocal.training.demo import demo_settings
    >>> s = demo_settings()
    >>> s.image_size, s.num_labelled, s.config.finetune.iterations
    (48, (1, 2), 450)
    """
    if quick:
        size = 32
        cfg = preset(
            "synthetic",
            model={
                "channels": (4, 8, 16),
                "image_size": (size, size),
                "global_hidden_features": 16,
            },
            global_stage={"iterations": 1, "volumes_per_batch": 2, "log_every": 1},
            local_stage={
                "iterations": 1,
                "volumes_per_batch": 2,
                "num_decoder_blocks": 1,
                "log_every": 1,
            },
            finetune={"iterations": 1, "batch_size": 2, "validate_every": 1, "log_every": 1},
            runtime={"progress": False, "num_threads": 1},
        )
        return DemoSettings(size, 2, 1, 1, (1, 2), cfg)
    size = 48
    cfg = preset(
        "synthetic",
        model={
            "channels": (8, 16, 32, 32),
            "image_size": (size, size),
            "global_hidden_features": 64,
        },
        # Pre-training is cheap here (about 0.05 s per iteration): 300 iterations of each stage
        # on 16 unlabelled volumes. Fine-tuning runs 450 iterations: at 150 the validation Dice
        # of all three initialisations was still rising steeply, so the comparison measured how
        # fast each starts rather than where fine-tuning ends up.
        global_stage={"iterations": 300, "volumes_per_batch": 4, "log_every": 10},
        local_stage={
            "iterations": 300,
            "volumes_per_batch": 3,
            "num_decoder_blocks": 2,
            "log_every": 10,
        },
        finetune={
            "iterations": 450,
            "batch_size": 8,
            "validate_every": 30,
            "log_every": 10,
        },
        # One intra-op thread: these tensors are tiny, and on a shared 2-core CPU torch's
        # thread pool spends more time synchronising than computing (measured ~8x slower wall).
        runtime={"num_threads": 1},
    )
    return DemoSettings(size, 16, 2, 4, (1, 2), cfg)


def _make(n: int, seed: int, settings: DemoSettings) -> list[Volume]:
    from ..data.preprocess import PreprocessConfig
    from ..data.synthetic import make_synthetic_dataset

    size = settings.image_size
    cases = make_synthetic_dataset(n, seed=seed, shape=(size, size), spacing=(1.5, 1.5, 8.0))
    prep = PreprocessConfig(image_size=(size, size))
    return [Volume.from_case(c, prep) for c in cases]


def demo_volumes(seed: int, settings: DemoSettings) -> dict[str, list[Volume]]:
    """Return the labelled, validation and test volumes of one seed (a dataset of their own).

    Parameters
    ----------
    seed : int
        The demo seed (the volumes are generated from ``20000 + seed``).
    settings : DemoSettings
        Sizes (:func:`demo_settings`).

    Returns
    -------
    dict
        ``{"labelled": [...], "val": [...], "test": [...]}``.

    Examples
    --------
    >>> from contrastlocal.training.demo import demo_settings, demo_volumes
    >>> data = demo_volumes(0, demo_settings(quick=True))
    >>> {k: len(v) for k, v in data.items()}
    {'labelled': 2, 'val': 1, 'test': 1}
    """
    s = settings
    vols = _make(max(s.num_labelled) + s.num_val + s.num_test, 20_000 + seed, s)
    b = max(s.num_labelled)
    c = b + s.num_val
    return {"labelled": vols[:b], "val": vols[b:c], "test": vols[c:]}


def demo_cell_dir(seed: int, init: str, num_labelled: int) -> str:
    """Return the folder (relative to the demo's output) of one fine-tuning run.

    Parameters
    ----------
    seed : int
        The demo seed.
    init : str
        The row (``"random"``, ``"GD"``, ``"GD+LD"``).
    num_labelled : int
        |X_tr|.

    Returns
    -------
    str
        ``"seed<seed>/finetune_<init>_n<num_labelled>"``.

    Examples
    --------
    >>> demo_cell_dir(1, "GD+LD", 2)
    'seed1/finetune_GD+LD_n2'
    """
    return f"seed{seed}/finetune_{init}_n{num_labelled}"


#: The demo's layout: shared pre-training in ``pretrain/``, fine-tuning per seed.
DEMO_LAYOUT = Layout(
    stage=lambda s: f"pretrain/{s.kind}",
    cell=lambda c: demo_cell_dir(c.config.seed, c.init, c.num_labelled),
)

#: The benchmark's fine-tuning folder, ``seed<seed>/benchmark_n<volumes>``.
_BENCHMARK_LAYOUT = Layout(
    stage=DEMO_LAYOUT.stage,
    cell=lambda c: f"seed{c.config.seed}/benchmark_n{c.num_labelled}",
)



def run_demo(
    out: str | os.PathLike[str] | None = None,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    quick: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Run the demo and return ``{"random"|"GD"|"GD+LD": {"1"|"2": [test Dice per seed]}}``.

    The returned mapping also holds ``"benchmark": {"all": [test Dice per seed]}``: random
    initialisation fine-tuned on all labelled phantom volumes (the pre-training pool with its
    labels), with the same settings.

    Parameters
    ----------
    out : path, optional
        Folder for ``results.json`` (exactly the returned mapping), ``results.md`` /
        ``results.csv`` (the table; ``results.md`` also the paired differences),
        ``paired.json`` (:func:`paired_differences`), ``run.json`` (timings, settings) and
        per-stage logs.
    seeds : sequence of int, default (0, 1, 2)
        One full run (data, pre-training, fine-tuning) per seed; all are reported.
    quick : bool, default False
        Tiny sizes that run in seconds (for tests; the numbers are meaningless).
    progress : bool, default True
        Progress bars (on a terminal only).
    log : callable, optional
        Receives one line of text per finished step (e.g. ``print``).

    Returns
    -------
    dict
        Test Dice (mean over foreground classes and test volumes) of every seed, per
        initialisation and |X_tr| (string keys).

    Raises
    ------
    ValueError
        If `seeds` is empty.

    Notes
    -----
    Pre-training (G^D, then L^D from it) runs once and is shared by all seeds and |X_tr|; the
    seeds vary the labelled/validation/test volumes, the fresh weights, the batches and the
    augmentation of fine-tuning.
    All three initialisations use the same fine-tuning settings (iterations, batch, affine +
    elastic augmentation, validation-based checkpoint selection). The stages run with one torch
    thread (tiny tensors: more threads only add synchronisation); wall and CPU seconds and the
    load average are written to ``run.json``.

    Examples
    --------
    A full run takes minutes on a CPU (``quick=True``: about a minute), so it is not executed
    here; ``contrastlocal demo`` calls it:

    >>> from contrastlocal.training.demo import run_demo
    >>> results = run_demo("demo_out", seeds=(0,), quick=True, log=print)  # doctest: +SKIP
    >>> sorted(results), sorted(results["GD+LD"])  # doctest: +SKIP
    (['GD', 'GD+LD', 'random'], ['1', '2'])
    """
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        msg = "`seeds` must hold at least one seed; got an empty sequence."
        raise ValueError(msg)
    # the demo's thread count (runtime.num_threads) for the whole run, the caller's after
    with threads_of(demo_settings(quick=quick).config):
        return _run_demo(out, seeds=seeds, quick=quick, progress=progress, log=log)


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on every platform
        return None


def _run_demo(
    out: str | os.PathLike[str] | None,
    *,
    seeds: tuple[int, ...],
    quick: bool,
    progress: bool,
    log: Callable[[str], None] | None,
) -> dict[str, dict[str, list[float]]]:
    settings = demo_settings(quick=quick)
    say = log if log is not None else (lambda _msg: None)
    root = None if out is None else Path(out)
    results: dict[str, dict[str, list[float]]] = {
        k: {str(n): [] for n in settings.num_labelled} for k in DEMO_INITIALISATIONS
    }
    results[DEMO_BENCHMARK] = {"all": []}
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    c0 = time.process_time()  # CPU seconds (user + system) of this process
    load_start = _load_average()
    # pre-training once, on an unlabelled pool disjoint from every seed's labelled/test data
    cfg0 = settings.config.replace(seed=0, runtime={"progress": progress})
    stages = plan_stages(cfg0, out=root, layout=DEMO_LAYOUT)
    pool = _make(settings.num_pretrain, 10_000, settings)
    t, c = time.perf_counter(), time.process_time()
    g = run_stage(stages[0], pool, resume=False)
    loc = run_stage(stages[1], pool, encoder=g.network, resume=False)
    networks = {stages[0].key: g.network, stages[1].key: loc.network}
    timings["pretrain_s"] = time.perf_counter() - t
    timings["pretrain_cpu_s"] = time.process_time() - c
    say(
        f"pre-training (G^D then L^D) done in {timings['pretrain_s']:.0f} s wall, "
        f"{timings['pretrain_cpu_s']:.0f} s CPU"
    )
    for seed in seeds:
        cfg = settings.config.replace(seed=seed, runtime={"progress": progress})
        data = demo_volumes(seed, settings)
        labelled = [(n, [1]) for n in settings.num_labelled]
        for cell in plan_cells(cfg, labelled, stages, out=root, layout=DEMO_LAYOUT):
            n, key = cell.num_labelled, cell.init
            t, c = time.perf_counter(), time.process_time()
            init = None if cell.source is None else networks[cell.source.key]
            res = run_cell(cell, data["labelled"][:n], data["val"], init=init, resume=False)
            score = evaluate(
                res.network,
                data["test"],
                num_classes=cfg.model.num_classes,
                compute_hd95=False,
            ).mean_dice
            results[key][str(n)].append(score)
            timings[f"seed{seed}/{key}/n{n}_s"] = time.perf_counter() - t
            timings[f"seed{seed}/{key}/n{n}_cpu_s"] = time.process_time() - c
            say(f"seed {seed}: {key:6s} |X_tr| = {n}: test Dice {score:.3f}")
        # the fully supervised benchmark: random init on every labelled phantom volume (the pool)
        t, c = time.perf_counter(), time.process_time()
        (bench,) = plan_cells(
            cfg, [(len(pool), [1])], stages, out=root, layout=_BENCHMARK_LAYOUT, rows=["random"]
        )
        res = run_cell(bench, pool, data["val"], resume=False)
        score = evaluate(
            res.network, data["test"], num_classes=cfg.model.num_classes, compute_hd95=False
        ).mean_dice
        results[DEMO_BENCHMARK]["all"].append(score)
        timings[f"seed{seed}/benchmark_s"] = time.perf_counter() - t
        timings[f"seed{seed}/benchmark_cpu_s"] = time.process_time() - c
        say(f"seed {seed}: benchmark, all {len(pool)} labelled volumes: test Dice {score:.3f}")
    timings["total_s"] = time.perf_counter() - t0
    timings["total_cpu_s"] = time.process_time() - c0
    load = {"start": load_start, "end": _load_average()}
    if root is not None:
        _write_demo_files(root, results, settings, seeds, quick, timings, load)
    say(format_results_table(results) + "\n\n" + format_paired_table(paired_differences(results)))
    say(
        f"total {timings['total_s']:.0f} s wall, {timings['total_cpu_s']:.0f} s CPU"
        + ("" if load["end"] is None else f" (1-min load average at the end {load['end']:.1f})")
    )
    return results


def _write_demo_files(
    root: Path,
    results: dict[str, dict[str, list[float]]],
    settings: DemoSettings,
    seeds: tuple[int, ...],
    quick: bool,
    timings: dict[str, float],
    load: dict[str, float | None],
) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    title = (
        f"Synthetic demo: test Dice (mean ± std over {len(seeds)} seed(s)), "
        f"{'quick mode' if quick else 'CPU'}"
    )
    write_results(results, root, stem="results", title=title)
    paired = paired_differences(results)
    with (root / "results.md").open("a") as fh:
        fh.write("\n" + format_paired_table(paired) + "\n")
    (root / "paired.json").write_text(json.dumps(paired, indent=2) + "\n")
    (root / "run.json").write_text(
        json.dumps(
            {
                "seeds": list(seeds),
                "quick": quick,
                "timings": timings,
                "load_average_1min": load,
                "torch_threads": settings.config.runtime.num_threads,
                "image_size": settings.image_size,
                "num_pretrain": settings.num_pretrain,
                "num_val": settings.num_val,
                "num_test": settings.num_test,
            },
            indent=2,
        )
        + "\n"
    )


def paired_differences(
    results: dict[str, dict[str, list[float]]], *, baseline: str = "random"
) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """Paired difference of every initialisation to `baseline`, seed by seed.

    Parameters
    ----------
    results : dict
        ``{initialisation: {|X_tr|: [score per seed]}}`` (as :func:`run_demo` returns); seeds
        are paired by position. Rows without a `baseline` column (the benchmark) are skipped.
    baseline : str, default "random"
        The row every other is compared with.

    Returns
    -------
    dict
        ``{initialisation: {|X_tr|: {"mean", "se", "wins", "n"}}}``: mean of the differences
        d_s = score_s - baseline_s, its standard error std(d, ddof=1) / sqrt(n) (None for one
        seed), the number of seeds with d_s > 0, and n.

    Raises
    ------
    ValueError
        If `baseline` is not a row, or a row has a different number of seeds than it.

    Examples
    --------
    >>> r = {"random": {"1": [0.5, 0.6, 0.7]}, "GD": {"1": [0.6, 0.6, 0.9]}}
    >>> d = paired_differences(r)["GD"]["1"]
    >>> round(d["mean"], 3), round(d["se"], 3), d["wins"], d["n"]
    (0.1, 0.058, 2, 3)
    """
    if baseline not in results:
        msg = f"`baseline` {baseline!r} is not a row of `results` (rows: {sorted(results)})."
        raise ValueError(msg)
    out: dict[str, dict[str, dict[str, float | int | None]]] = {}
    base = results[baseline]
    for key, row in results.items():
        if key == baseline:
            continue
        cells: dict[str, dict[str, float | int | None]] = {}
        for col, values in row.items():
            if col not in base:
                continue
            if len(values) != len(base[col]):
                msg = (f"row {key!r} has {len(values)} seed(s) at |X_tr| = {col}, "
                       f"{baseline!r} has {len(base[col])}: they cannot be paired.")
                raise ValueError(msg)
            d = np.asarray(values, dtype=np.float64) - np.asarray(base[col], dtype=np.float64)
            se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else None
            cells[col] = {"mean": float(d.mean()) if d.size else float("nan"), "se": se,
                          "wins": int((d > 0).sum()), "n": int(d.size)}
        if cells:
            out[key] = cells
    return out


def format_paired_table(
    paired: dict[str, dict[str, dict[str, float | int | None]]], *, digits: int = 3
) -> str:
    """Markdown table of :func:`paired_differences`: mean ± standard error, seeds won.

    Parameters
    ----------
    paired : dict
        The output of :func:`paired_differences`.
    digits : int, default 3
        Decimals shown.

    Returns
    -------
    str
        One row per initialisation, one column per |X_tr|; a cell reads
        ``+0.012 ± 0.004 (won 3/3)``; the standard error is "–" for one seed.

    Examples
    --------
    >>> print(format_paired_table({"GD": {"1": {"mean": 0.1, "se": 0.05, "wins": 2, "n": 3}}}))
    | difference to random init (paired by seed) | |X_tr| = 1 |
    |---|---|
    | G^D | +0.100 ± 0.050 (won 2/3) |
    """
    from .results import INIT_LABELS

    cols = sorted({c for row in paired.values() for c in row}, key=lambda c: (len(c), c))
    lines = ["| difference to random init (paired by seed) | "
             + " | ".join(f"|X_tr| = {c}" for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for key, row in paired.items():
        cells = []
        for c in cols:
            cell = row.get(c)
            if cell is None:
                cells.append("–")
                continue
            se = "–" if cell["se"] is None else f"{cell['se']:.{digits}f}"
            cells.append(f"{cell['mean']:+.{digits}f} ± {se} (won {cell['wins']}/{cell['n']})")
        lines.append(f"| {INIT_LABELS.get(key, key)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
