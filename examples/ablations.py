"""The paper's ablation grids (its Tables 2-5 and 7) on synthetic volumes, or as CLI commands.

Each grid changes one group of settings of the recipe and keeps the rest:

- ``batch``: stage-1 batch B = 40 / 250 / 450 slices, the paper's "batch size" (and the authors'
  ``--bt_size``): B = volumes per batch x S partitions, so 10 / 62 / 112 volumes x 4 (40 / 248 /
  448 slices; the loss sees two views of each). On ACDC's 52 pre-training volumes the last two
  cannot be built (each slice of a batch comes from its own volume and partition): the run
  stops before training and says so;
- ``partitions``: S = 3 / 4 / 6 partitions per volume (both pre-training stages);
- ``decoder``: l = 1...L decoder blocks pre-trained by the local loss x region size K = 1 / 3;
- ``joint``: one stage optimising L_g + lambda_l * L_l, lambda_l = 1 / 10 / 100 / 1000.

For every point the encoder (and decoder) are pre-trained on the unlabelled volumes, fine-tuned
on |X_tr| labelled volumes and scored on held-out volumes (mean foreground 3D Dice); one table
per grid is printed (rows = settings, columns = |X_tr|, mean ± std over seeds) and written to
``OUT/<grid>.md``. The data are synthetic phantoms sized for a CPU, so the numbers illustrate the
procedure, not the paper's values. To run a grid on a real dataset, ``--print-commands`` prints
the equivalent ``contrastlocal run`` command lines (one per point, with ``--set`` overrides).

Usage::

    python examples/ablations.py --grid partitions --out ablations   # minutes per point on CPU
    python examples/ablations.py --grid all --print-commands --dataset acdc --data ACDC/database
    python examples/ablations.py --smoke                              # one tiny point per grid
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contrastlocal.data.splits import SPLITS
from contrastlocal.data.volumes import Volume
from contrastlocal.training import (
    evaluate,
    finetune,
    format_results_table,
    preset,
    pretrain_global,
    pretrain_joint,
    pretrain_local,
    write_results,
)

GRIDS = ("batch", "partitions", "decoder", "joint")


def grid_points(grid: str, *, max_blocks: int = 4) -> list[tuple[str, dict[str, Any]]]:
    """(label, overrides) of every point of a grid; overrides are dotted setting keys."""
    if grid == "batch":
        s = 4  # B slices = volumes per batch x S (the config's one meaning of "batch size")
        return [
            (
                f"batch {b} ({b // s} vol x {s} = {b // s * s} slices)",
                {"global_stage.volumes_per_batch": b // s},
            )
            for b in (40, 250, 450)
        ]
    if grid == "partitions":
        return [
            (f"S = {s}", {"global_stage.num_partitions": s, "local_stage.num_partitions": s})
            for s in (3, 4, 6)
        ]
    if grid == "decoder":
        return [
            (
                f"l = {blocks}, K = {k}",
                {"local_stage.num_decoder_blocks": blocks, "local_stage.region_size": k},
            )
            for blocks in range(1, max_blocks + 1)
            for k in (1, 3)
        ]
    if grid == "joint":
        return [
            (f"joint, lambda_l = {lam}", {"local_stage.lambda_local": float(lam)})
            for lam in (1, 10, 100, 1000)
        ]
    msg = f"`grid` must be one of {GRIDS}; got {grid!r}."
    raise ValueError(msg)


def _volumes(seed: int, num: int, size: int) -> list[Volume]:
    from contrastlocal.data.preprocess import PreprocessConfig
    from contrastlocal.data.synthetic import make_synthetic_dataset

    cases = make_synthetic_dataset(
        num, seed=10_000 + seed, shape=(size, size), spacing=(1.5, 1.5, 8.0)
    )
    prep = PreprocessConfig(image_size=(size, size))
    return [Volume.from_case(c, prep) for c in cases]


def run_point(
    grid: str,
    overrides: dict[str, Any],
    base: Any,
    seed: int,
    num_labelled: Sequence[int],
    num_pretrain: int,
    out: Path | None,
) -> dict[int, float]:
    """Pre-train with one grid point's settings, fine-tune on each |X_tr|, return test Dice."""
    cfg = base.replace(seed=seed, **overrides)
    size = cfg.model.image_size[0]
    n_val, n_test = 2, 3
    vols = _volumes(seed, num_pretrain + max(num_labelled) + n_val + n_test, size)
    pre = vols[:num_pretrain]
    lab = vols[num_pretrain : num_pretrain + max(num_labelled)]
    val = vols[num_pretrain + max(num_labelled) : num_pretrain + max(num_labelled) + n_val]
    test = vols[-n_test:]
    sub = (lambda name: None) if out is None else (lambda name: out / name)
    if grid == "joint":
        init = pretrain_joint(pre, cfg, out=sub("joint"), resume=False).network
    else:
        g = pretrain_global(pre, cfg, out=sub("global"), resume=False)
        init = pretrain_local(pre, cfg, encoder=g.network, out=sub("local"), resume=False).network
    scores = {}
    for n in num_labelled:
        res = finetune(lab[:n], val, cfg, init=init, out=sub(f"finetune_n{n}"), resume=False)
        scores[n] = evaluate(
            res.network, test, num_classes=cfg.model.num_classes, compute_hd95=False
        ).mean_dice
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--grid", choices=(*GRIDS, "all"), default="all")
    parser.add_argument("--out", default=None, help="write <grid>.md/.csv and stage logs here")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-labelled", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--print-commands",
        action="store_true",
        help="print `contrastlocal run` commands for a real dataset instead",
    )
    parser.add_argument("--dataset", default="acdc", help="dataset of --print-commands")
    parser.add_argument("--data", default="DATA", help="dataset folder of --print-commands")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="the first point of every grid, tiny sizes, 1 seed, 1 iteration",
    )
    args = parser.parse_args()
    grids = GRIDS if args.grid == "all" else (args.grid,)

    if args.print_commands:
        for grid in grids:
            if grid == "joint":
                print(
                    "# joint (L_g + lambda_l L_l in one stage): use "
                    "contrastlocal.training.pretrain_joint (not a `run` stage)"
                )
                continue
            for label, overrides in grid_points(grid):
                sets = " ".join(f"--set {k}={v}" for k, v in overrides.items())
                name = "".join(c if c.isalnum() else "_" for c in label).strip("_")
                print(f"# {grid}: {label}")
                volumes = int(overrides.get("global_stage.volumes_per_batch", 0))
                if args.dataset in SPLITS and volumes > len(SPLITS[args.dataset].pretrain):
                    print(
                        f"# needs {volumes} distinct pre-training volumes per batch; "
                        f"{args.dataset} has {len(SPLITS[args.dataset].pretrain)}: this run "
                        "stops before training with that message"
                    )
                print(
                    f"contrastlocal run --dataset {args.dataset} --data "
                    f"{shlex.quote(args.data)} --out runs/ablation_{grid}/{name} {sets}"
                )
        return 0

    if args.smoke:
        base = preset(
            "synthetic",
            model={"channels": (4, 8, 16), "image_size": (32, 32), "global_hidden_features": 16},
            global_stage={"iterations": 1, "volumes_per_batch": 2, "log_every": 1},
            local_stage={
                "iterations": 1,
                "volumes_per_batch": 2,
                "num_decoder_blocks": 1,
                "log_every": 1,
            },
            finetune={"iterations": 1, "batch_size": 2, "validate_every": 1, "log_every": 1},
            runtime={"progress": False},
        )
        seeds, num_labelled, num_pretrain = [0], [1], 6
    else:
        base = preset(
            "synthetic",
            model={"image_size": (48, 48), "channels": (8, 16, 32, 32, 32)},
            **{
                "global_stage.iterations": 200,
                "local_stage.iterations": 200,
                "finetune.iterations": 200,
            },
        )
        seeds, num_labelled, num_pretrain = args.seeds, args.num_labelled, 8
    max_blocks = len(base.model.channels) - 1
    for grid in grids:
        points = grid_points(grid, max_blocks=max_blocks)
        if args.smoke:
            # the smallest point of each grid (the batch grid's 40 slices need 10 volumes)
            points = points[:1]
        results: dict[str, dict[int | str, list[float]]] = {}
        for label, overrides in points:
            need = max(num_pretrain, int(overrides.get("global_stage.volumes_per_batch", 0)))
            for seed in seeds:
                out = None if args.out is None else Path(args.out) / grid / label / f"seed{seed}"
                scores = run_point(grid, overrides, base, seed, num_labelled, need, out)
                for n, v in scores.items():
                    results.setdefault(label, {}).setdefault(n, []).append(v)
                print(
                    f"{grid}: {label}, seed {seed}: "
                    + ", ".join(f"|X_tr| = {n}: {v:.3f}" for n, v in scores.items()),
                    flush=True,
                )
        title = f"Ablation '{grid}' on synthetic volumes: test Dice, mean ± std over seeds"
        print(format_results_table(results, title=title))
        if args.out is not None:
            write_results(results, args.out, stem=grid, title=title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
