"""The ``contrastlocal`` command line.

Every sub-command is a thin layer over the library: arguments are parsed and checked here, the
work is done by :mod:`contrastlocal.training` (the recipe:
:func:`~contrastlocal.training.run_recipe`) and :mod:`contrastlocal.data`. Bad arguments give a
one-line message on standard error and exit status 2, never a traceback.

Sub-commands: ``demo`` (the recipe on synthetic data, CPU, no download), ``run`` (a dataset as
distributed: prepare, three stages, baseline, table, plots), one per stage (``pretrain-global``,
``pretrain-local``, ``finetune``, ``baseline``, ``evaluate``) and ``prepare`` (the cache only).
The package holds the parser (``_parser``), the commands (``_commands``), the settings
(``_settings``: preset, TOML, ``--set``) and the dataset folder of a command (``_data``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ._parser import build_parser
from ._settings import parse_set_option

__all__ = ["build_parser", "main", "parse_set_option"]


def __getattr__(name: str) -> Any:
    if name == "demo_plots":  # moved to contrastlocal.training.report; kept importable here
        from contrastlocal.training.report import demo_plots

        return demo_plots
    msg = f"module 'contrastlocal.cli' has no attribute {name!r}"
    raise AttributeError(msg)


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
