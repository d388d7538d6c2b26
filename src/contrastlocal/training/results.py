"""Results tables in the layout of the paper: rows = initialisation, columns = |X_tr|.

A results mapping is ``{initialisation: {num_labelled: [score, ...]}}`` — one score (mean
foreground test Dice) per combination c1…c5 or per seed — exactly the shape of the demo's
``results.json`` (keys may be ints or strings). Cells show ``mean ± std`` over the list.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["INIT_LABELS", "format_results_table", "results_to_csv", "write_results"]

#: Display names of the initialisations (keys not listed are shown as they are).
INIT_LABELS: dict[str, str] = {
    "random": "random init",
    "GR": "G^R",
    "GD-": "G^{D-}",
    "GD": "G^D",
    "GR+LR": "G^R + L^R",
    "GD+LR": "G^D + L^R",
    "GD+LD": "G^D + L^D",
    "joint": "L_g + λ_l·L_l",
    "benchmark": "fully supervised (all labelled)",
}

Results = Mapping[str, Mapping[Any, Sequence[float]]]


def _columns(results: Results) -> list[str]:
    cols: set[str] = set()
    for row in results.values():
        cols.update(str(k) for k in row)
    return sorted(cols, key=lambda c: (0, int(c)) if c.isdigit() else (1, c))


def _cell(values: Sequence[float] | None, digits: int) -> tuple[str, float, float, int]:
    if values is None or len(values) == 0:
        return "–", math.nan, math.nan, 0
    arr = np.asarray(values, dtype=np.float64)
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}", mean, std, int(arr.size)


def _row(results: Results, key: str) -> dict[str, Sequence[float]]:
    return {str(k): v for k, v in results[key].items()}


def format_results_table(
    results: Results, *, digits: int = 3, title: str | None = None, metric: str = "Dice"
) -> str:
    """Markdown table: one row per initialisation, one column per |X_tr|, cells mean ± std.

    Parameters
    ----------
    results : mapping
        ``{initialisation: {num_labelled: [score per combination or seed, ...]}}``.
    digits : int, default 3
        Decimals shown.
    title : str, optional
        A line printed above the table.
    metric : str, default "Dice"
        Name of the score, for the header.

    Returns
    -------
    str
        The Markdown table (std is the sample standard deviation, ddof = 1; 0 for one value).

    Examples
    --------
    >>> from contrastlocal.training import format_results_table
    >>> print(format_results_table({"random": {1: [0.5, 0.7]}, "GD+LD": {1: [0.8, 0.8]}}))
    | initialisation | |X_tr| = 1 (Dice) |
    |---|---|
    | random init | 0.600 ± 0.141 |
    | G^D + L^D | 0.800 ± 0.000 |
    """
    cols = _columns(results)
    lines = [] if title is None else [title, ""]
    head = [f"|X_tr| = {c} ({metric})" if c.isdigit() else c for c in cols]
    lines.append("| initialisation | " + " | ".join(head) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for key in results:
        row = _row(results, key)
        cells = [_cell(row.get(c), digits)[0] for c in cols]
        lines.append(f"| {INIT_LABELS.get(key, key)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_to_csv(results: Results) -> str:
    """CSV text with one line per (initialisation, |X_tr|): mean, std, n and the values.

    Parameters
    ----------
    results : mapping
        As for :func:`format_results_table`.

    Returns
    -------
    str
        CSV with header ``initialisation,num_labelled,mean,std,n,values`` (values joined by
        ``;``).

    Examples
    --------
    >>> from contrastlocal.training import results_to_csv
    >>> print(results_to_csv({"GD": {"2": [0.5, 0.6]}}).strip())
    initialisation,num_labelled,mean,std,n,values
    GD,2,0.55,0.0707107,2,0.5;0.6
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["initialisation", "num_labelled", "mean", "std", "n", "values"])
    for key in results:
        row = _row(results, key)
        for col in _columns(results):
            if col not in row:
                continue
            _, mean, std, n = _cell(row[col], 6)
            values = ";".join(f"{float(v):.6g}" for v in row[col])
            writer.writerow([key, col, f"{mean:.6g}", f"{std:.6g}", n, values])
    return buf.getvalue()


def write_results(
    results: Results, out: str | Path, *, stem: str = "results", title: str | None = None
) -> tuple[Path, Path]:
    """Write the table as ``<out>/<stem>.md`` and ``<out>/<stem>.csv``.

    Parameters
    ----------
    results : mapping
        As for :func:`format_results_table`.
    out : str or Path
        Folder (created if needed).
    stem : str, default "results"
        File name without suffix.
    title : str, optional
        Heading line of the Markdown file.

    Returns
    -------
    tuple of Path
        The Markdown and CSV files.

    Examples
    --------
    >>> import tempfile
    >>> from contrastlocal.training import write_results
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     md, csv = write_results({"random": {1: [0.5, 0.7]}}, tmp, title="ACDC")
    ...     names, first = (md.name, csv.name), md.read_text().splitlines()[0]
    >>> names, first
    (('results.md', 'results.csv'), 'ACDC')
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    md = folder / f"{stem}.md"
    cs = folder / f"{stem}.csv"
    md.write_text(format_results_table(results, title=title) + "\n")
    cs.write_text(results_to_csv(results))
    return md, cs
