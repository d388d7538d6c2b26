"""The ``contrastlocal`` command line.

Every sub-command is a thin layer over the library: arguments are parsed here, the work is done
by :mod:`contrastlocal.training` and :mod:`contrastlocal.data`. Bad arguments give a one-line
message on standard error and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

__all__ = ["build_parser", "main"]

_DESCRIPTION = """\
Global and local contrastive pre-training for medical image segmentation with limited
annotations (Chaitanya et al., NeurIPS 2020).

Typical use:
  contrastlocal demo --out demo_out          the whole recipe on synthetic data, CPU, minutes
  contrastlocal prepare acdc --root ACDC --out cache
  contrastlocal run --dataset acdc --data ACDC --out runs/acdc --device cuda
"""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _cmd_demo(args: argparse.Namespace) -> int:
    from contrastlocal.training.demo import run_demo

    run_demo(args.out, seeds=tuple(args.seeds), quick=args.quick, progress=not args.no_progress)
    return 0


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
    """
    parser = _Parser(
        prog="contrastlocal",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from contrastlocal import __version__

    parser.add_argument("--version", action="version", version=f"contrastlocal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="run the three-stage recipe on embedded synthetic data (CPU, no download)",
        description="Pre-train with G^D, then G^D + L^D, fine-tune on 1 and 2 labelled synthetic "
        "volumes, compare with random initialisation over several seeds, print the table.",
    )
    demo.add_argument("--out", default=None, help="write results.json, tables and plots here")
    demo.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (≥ 3)")
    demo.add_argument("--quick", action="store_true", help="a few iterations only (seconds)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(func=_cmd_demo)

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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``contrastlocal`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status: 0 on success, 2 for bad arguments or input, 130 on interrupt.

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
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError) as err:
        print(f"contrastlocal {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"contrastlocal {args.command}: interrupted", file=sys.stderr)
        return 130
