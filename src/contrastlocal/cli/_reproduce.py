"""``contrastlocal reproduce TABLE``: one of the paper's tables, its runs shared and resumed."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ._settings import UsageError, experiment, parse_set_option

__all__ = ["add_reproduce", "cmd_reproduce"]


def _table(text: str) -> int:
    from contrastlocal.training.tables import REPRODUCIBLE_TABLES

    try:
        value = int(text)
    except ValueError:
        value = -1
    if value not in REPRODUCIBLE_TABLES:
        msg = (f"TABLE must be one of {', '.join(map(str, REPRODUCIBLE_TABLES))} (the "
               f"supplement's table numbers); got {text!r}")
        raise argparse.ArgumentTypeError(msg)
    return value


def _iteration_ms(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or any(not p > 0 for p in parts):
        msg = f"expected three positive numbers STAGE1,STAGE2,FINETUNE (ms); got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return parts  # type: ignore[return-value]


def add_reproduce(sub: Any, add_common: Any, positive_int: Any) -> None:
    """Add the ``reproduce`` sub-command to the parser's sub-parsers."""
    p = sub.add_parser(
        "reproduce",
        help="one of the paper's tables: every run it needs, shared and resumed, vs the paper",
        description="Plan the runs a table of the supplement needs (one stage 1 per global "
        "configuration, one stage 2 per (global, local strategy, l, K), every fine-tuning run "
        "once, keyed by its settings under OUT/stages and OUT/cells, shared with the other "
        "tables run in the same OUT), run the unfinished ones (a finished run is never "
        "recomputed, an interrupted one resumes) and write OUT/table<N>_<dataset>.md/.csv/.json "
        "and .png: our mean ± std over the combinations, the paper's number and the difference "
        "in the paper's layout. --dry-run prints the plan and its projected time.",
    )
    p.add_argument("table", type=_table, metavar="TABLE",
                   help="the supplement's table: 1 (fully supervised benchmark), 2 ... 8")
    add_common(p, out_help="the run directory shared by the tables (stages, cells, tables)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (runs, how many done, projected time) and stop")
    p.add_argument("--concurrent", type=positive_int, default=None, metavar="K",
                   help="fine-tuning runs trained at once in one grouped network (default: "
                   "1 on the CPU, else as many as the device's memory holds, at most 8)")
    p.add_argument("--fidelity", choices=("paper", "authors"), default="paper",
                   help="the paper's definitions (default) or the authors' code; items by "
                   "--set fidelity.ITEM=VALUE")
    p.add_argument("--num-labelled", type=positive_int, nargs="+", default=None, metavar="N",
                   help="only these |X_tr| columns (default: all the table prints)")
    p.add_argument("--combinations", type=positive_int, nargs="+", default=None, metavar="C",
                   help="only these combinations (default: all of the splits)")
    p.add_argument("--rows", nargs="+", default=None, metavar="ROW",
                   help="only these rows, labels as printed (e.g. 'batch size 40')")
    p.add_argument("--iteration-ms", type=_iteration_ms, default=None,
                   metavar="S1,S2,FT",
                   help="ms per iteration of stage 1, stage 2 and fine-tuning for the "
                   "projection (default for cuda: one H200's, docs/benchmarks.md)")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args: argparse.Namespace) -> int:
    """``contrastlocal reproduce``: :func:`~contrastlocal.training.reproduce_table`."""
    from contrastlocal.training.tables import REPRODUCIBLE_TABLES, reproduce_table

    covered = REPRODUCIBLE_TABLES[args.table]
    if args.dataset not in covered:
        msg = (f"--dataset {args.dataset!r} is not covered by Table {args.table}; it covers "
               f"{', '.join(covered)}.")
        raise UsageError(msg)
    if args.fresh:
        msg = ("--fresh is not accepted by reproduce: finished runs are kept by design; "
               "use a new --out to start afresh.")
        raise UsageError(msg)
    items = parse_set_option(args.set)
    fidelity = {k: v for k, v in items.items() if k.startswith("fidelity.")}
    args.set = [s for s in args.set if not s.strip().startswith("fidelity.")]
    device = args.device
    if args.dry_run:  # planning for a device this machine may not have
        args.device = None
    cfg = experiment(args, args.dataset)
    result = reproduce_table(
        args.table,
        dataset=args.dataset,
        data=args.data,
        out=args.out,
        config=cfg,
        overrides=fidelity,
        fidelity=args.fidelity,
        device=device,
        concurrent=args.concurrent,
        dry_run=args.dry_run,
        splits=args.splits,
        cache=args.cache,
        n4=args.n4,
        workers=args.workers,
        num_labelled=args.num_labelled,
        combinations=args.combinations,
        rows=args.rows,
        iteration_ms=args.iteration_ms,
        plots=not args.no_plots,
        log=lambda text: print(text, flush=True),
    )
    if args.dry_run:
        return 0
    from contrastlocal.training.tables import TableResult

    assert isinstance(result, TableResult)
    print(result.to_markdown(), flush=True)
    finite = all(math.isfinite(v) for vs in result.values.values() for v in vs)
    return 0 if finite else 1
