"""Shared driver of the ``*_full.py`` examples: the paper's full recipe on one dataset.

Not an example by itself (its name starts with ``_``): ``acdc_full.py``, ``prostate_full.py``,
``mmwhs_full.py`` and ``cityscapes_full.py`` call :func:`main` with their dataset. The recipe is
that of ``contrastlocal run`` (see ``contrastlocal run --help``), called through the Python API:
:func:`contrastlocal.data.open_dataset` prepares the cache and resolves the splits,
:func:`contrastlocal.training.run_recipe` runs everything below.

1. prepare the cache from the dataset folder as distributed (once; reused after);
2. stage 1: encoder + g_1 with the global loss (G^D; Cityscapes G^R) on the pre-training volumes;
3. stage 2: l decoder blocks + g_2 with the local loss (L^D; Cityscapes L^R), encoder frozen;
4. for each |X_tr| and combination: fine-tune from G, from G + L, and train the random-init
   baseline, each keeping the checkpoint with the best validation Dice;
5. evaluate on the test volumes (3D Dice per class at native resolution, HD95), write the table
   ``OUT/results.md`` (rows = initialisation, columns = |X_tr|, mean ± std over combinations),
   ``OUT/results.json``, ``OUT/evaluation.json`` and the figures ``OUT/plots/*.png``.

With ``--smoke`` a tiny fixture tree in the dataset's real layout is generated in a temporary
folder and the whole pipeline runs a couple of iterations per stage on it (seconds): it checks
that everything is wired, the numbers mean nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contrastlocal.cli import parse_set_option
from contrastlocal.data import open_dataset
from contrastlocal.training import load_config, preset, run_recipe

# a few iterations on 32x32 slices with a 3-level UNet: the pipeline, not the numbers
_SMOKE_SETTINGS: dict[str, Any] = {
    "model.channels": [4, 8, 16],
    "model.global_hidden_features": 16,
    "global_stage.iterations": 2,
    "global_stage.volumes_per_batch": 2,
    "global_stage.log_every": 1,
    "local_stage.iterations": 2,
    "local_stage.volumes_per_batch": 2,
    "local_stage.num_decoder_blocks": 1,
    "local_stage.log_every": 1,
    "finetune.iterations": 2,
    "finetune.batch_size": 2,
    "finetune.validate_every": 1,
    "finetune.log_every": 1,
    "runtime.progress": False,
}


def _write_fixture(dataset: str, root: Path) -> tuple[Path, dict[str, Any]]:
    """Write a tiny tree in the layout of `dataset`; return it and its extra settings."""
    from contrastlocal.data import fixtures

    if dataset == "acdc":
        path = fixtures.write_acdc_fixture(root, num_patients=5, num_testing=0)
    elif dataset == "prostate":
        path = fixtures.write_prostate_fixture(root, num_cases=5, num_test=0)
    elif dataset == "mmwhs":
        path = fixtures.write_mmwhs_fixture(root, num_cases=5, num_test=0)
    else:
        path = fixtures.write_cityscapes_fixture(root, images_per_city=2)
        # Cityscapes images are read at 1/4 resolution: the 64x128 fixture gives 16x32 slices
        return path, {"model.image_size": [16, 32], "model.channels": [4, 8]}
    return path, {"model.image_size": [32, 32]}


def build_parser(dataset: str, description: str) -> argparse.ArgumentParser:
    """Arguments of a ``*_full.py`` example."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", help="the dataset folder as distributed (not needed with --smoke)")
    p.add_argument("--out", default=f"runs/{dataset}", help="output folder (default: %(default)s)")
    p.add_argument("--cache", default=None, help="cache root (default: OUT/cache)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--num-labelled", nargs="+", default=None, help="|X_tr| values")
    p.add_argument("--combinations", nargs="+", default=None, help="combinations c1..c5")
    p.add_argument("--config", default=None, help="TOML settings file")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting (repeatable), e.g. global_stage.iterations=2000",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="run a few iterations on a generated fixture tree (seconds, CPU)",
    )
    return p


def _ints(values: Sequence[str] | None) -> list[int] | None:
    return None if not values else [int(v) for v in values]


def main(dataset: str, description: str, argv: Sequence[str] | None = None) -> int:
    """Run the full recipe (or its smoke test) on `dataset`; return the exit status."""
    args = build_parser(dataset, description).parse_args(argv)
    cfg = load_config(args.config) if args.config else preset(dataset)
    cfg = cfg.replace(**parse_set_option(args.set)).replace(runtime={"device": args.device})
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix=f"{dataset}_smoke_") as tmp:
            root, extra = _write_fixture(dataset, Path(tmp) / "raw")
            device = "cpu" if args.device == "auto" else args.device
            cfg = cfg.replace(**{**_SMOKE_SETTINGS, **extra, **parse_set_option(args.set)})
            cfg = cfg.replace(runtime={"device": device})
            out = Path(tmp) / "run"
            data = open_dataset(dataset, root, out / "cache", image_size=cfg.model.image_size,
                                n4="none", splits="auto", num_labelled=[1], workers=0,
                                progress=False)  # fmt: skip
            result = run_recipe(data.pretrain_volumes(), data.finetune_volumes(),
                                data.test_volumes(), cfg, out=out, num_labelled=[1],
                                combinations=[1], log=print)  # fmt: skip
            missing = [
                name
                for name in ("results.json", "results.md", "plots/results.png")
                if not (out / name).is_file()
            ]
            if missing:
                print(f"smoke test: missing outputs {missing}", file=sys.stderr)
                return 1
            print(f"smoke test passed ({dataset}): every stage ran end to end")
            return 0 if result.finite else 1
    if args.data is None:
        print(f"{dataset}_full.py: error: --data is required (or use --smoke)", file=sys.stderr)
        return 2
    cache = Path(args.cache) if args.cache else Path(args.out) / "cache"
    data = open_dataset(dataset, args.data, cache, image_size=cfg.model.image_size,
                        n4="legacy" if cfg.fidelity.n4 else None)
    result = run_recipe(
        data.pretrain_volumes(),
        data.finetune_volumes(),
        data.test_volumes(),
        cfg,
        out=args.out,
        num_labelled=_ints(args.num_labelled),
        combinations=_ints(args.combinations),
        tag_config=dataset != "cityscapes",
        log=print,
    )
    return 0 if result.finite else 1
