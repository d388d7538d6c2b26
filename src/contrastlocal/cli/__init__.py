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
import contextlib
import errno
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
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


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the command stops, keeping every finished file."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def _on_terminate(signum: int, _frame: object) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def _terminate_like_interrupt() -> Iterator[None]:
    """Turn SIGTERM into an exception (main thread only), restoring the handler after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _os_error_line(err: OSError) -> str:
    """One line for a file-system failure: what, where, and for a full disk the free space."""
    text = _one_line(err) if err.strerror is None else " ".join(err.strerror.split())
    filename = None if err.filename is None else os.fsdecode(err.filename)
    if filename is not None and filename not in text:
        text += f": {filename!r}"
    if err.errno == errno.ENOSPC and "free" not in text and filename is not None:
        where = Path(filename)
        while not where.exists() and where != where.parent:
            where = where.parent
        with contextlib.suppress(OSError):
            free = shutil.disk_usage(where).free
            text += f" ({free / 2**20:.1f} MiB free on that file system)"
    return text


def _fresh_hint(text: str) -> str:
    """Library messages name the ``resume`` argument; on the command line it is ``--fresh``."""
    return text.replace("(--fresh, or resume=False in Python)", "(--fresh)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``contrastlocal`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status: 0 on success; 1 if the work failed (non-finite loss or scores, a
        file-system error such as a full disk or a read-only folder, the output or cache folder
        in use by another process); 2 for bad arguments, settings or input; 128 + the signal
        number when stopped by a signal (130 for Ctrl-C / SIGINT, 143 for SIGTERM), after
        keeping every finished checkpoint and cache part. Every failure is one line on
        standard error, never a traceback.

    Examples
    --------
    >>> main(["--version"])  # doctest: +SKIP
    contrastlocal 0.1.0.dev0
    """
    from contrastlocal._lock import LockHeldError

    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    name = f"contrastlocal {args.command}"
    try:
        with _terminate_like_interrupt():
            return func(args)
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError, ImportError) as err:
        print(f"{name}: error: {_fresh_hint(_one_line(err))}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        print(f"{name}: training failed: {_one_line(err)}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"{name}: error: {_os_error_line(err)}", file=sys.stderr)
        return 1
    except LockHeldError as err:
        print(f"{name}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        signum = int(getattr(err, "signum", signal.SIGINT))
        if type(err) in (KeyboardInterrupt, Terminated):
            what = "interrupted" if signum == signal.SIGINT else _one_line(err)
            text = f"{what}; finished files are kept (rerun the same command to resume)"
        else:  # its own message (prepare: how many cases are kept)
            text = _one_line(err)
        print(f"{name}: {text}", file=sys.stderr)
        return 128 + signum
