"""The argument parser of the ``contrastlocal`` command: one sub-parser per command."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from . import _commands as commands

__all__ = ["build_parser"]

def _datasets() -> tuple[str, ...]:
    """``--dataset`` choices: the datasets of the registry read from files."""
    from contrastlocal.data.registry import PREPARABLE

    return PREPARABLE


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
    p.add_argument("--dataset", required=True, choices=_datasets(), help="which dataset")
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
    _add_demo(sub)
    _add_run(sub)
    _add_pretrain(sub)
    _add_finetune(sub)
    _add_evaluate(sub)
    _add_prepare(sub)
    from ._reproduce import add_reproduce

    add_reproduce(sub, _add_common, _positive_int)
    return parser


def _add_demo(sub: Any) -> None:
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
    demo.set_defaults(func=commands.cmd_demo)


def _add_run(sub: Any) -> None:
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
    run.set_defaults(func=commands.cmd_run)


def _add_pretrain(sub: Any) -> None:
    pg = sub.add_parser(
        "pretrain-global",
        help="stage 1: encoder + g_1 with a global loss",
        description="Stage 1 on the pre-training volumes; writes OUT/final.pt, "
        "OUT/metrics.jsonl, checkpoints and plots.",
    )
    _add_common(pg, out_help="stage folder")
    pg.set_defaults(func=commands.cmd_pretrain_global)

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
    pl.set_defaults(func=commands.cmd_pretrain_local)


def _add_finetune(sub: Any) -> None:
    for name, helptext, func in (
        (
            "finetune",
            "stage 3: fine-tune the UNet on |X_tr| labelled volumes",
            commands.cmd_finetune,
        ),
        (
            "baseline",
            "the random-init baseline (augmented), same budget as fine-tuning",
            commands.cmd_baseline,
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


def _add_evaluate(sub: Any) -> None:
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
    ev.set_defaults(func=commands.cmd_evaluate)


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
