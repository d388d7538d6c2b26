"""The paper's reported Dice scores, shipped as data (Tables 1–8 of the supplement).

``results.csv`` (next to this module) holds every Dice score printed in the supplementary
material of Chaitanya, Erdil, Karani, Konukoglu, "Contrastive learning of global and local
features for medical image segmentation with limited annotations", NeurIPS 2020, one score a
row, transcribed from its Tables 1–8 as printed, the paper's own inconsistencies included
(ACDC, G^D, S = 4, batch 40, |X_tr| = 2 is 0.784 in Table 2 and 0.789 in Table 3; the text of its
§3.4 quotes 0.789 for a Table 6 cell that prints 0.787). These are facts to cite next to results,
not results of this package.

Not in the file: the main article's random-initialisation rows for ACDC, prostate and MM-WHS and
its comparisons with other methods (they are not in the supplement). In Table 6,
``encoder = "G^R", decoder = "random"`` is global pre-training only, not the random baseline.

This module needs only the standard library.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Literal

__all__ = ["TABLES", "PaperResult", "PaperTable", "paper_results", "paper_table"]

#: The supplement's table numbers held in the data, with what each one varies.
TABLES: dict[int, str] = {
    1: "ACDC, fully supervised benchmark (random initialisation, all labelled volumes)",
    2: "ACDC, encoder G^D (S = 4), decoder random: pre-training batch size 40 / 250 / 450",
    3: "ACDC, encoder G^D (batch 40), decoder random: S = 3 / 4 / 6 partitions",
    4: "ACDC, G^D + L^D: region size K = 1x1 / 3x3 and l = 1 ... 5 decoder blocks",
    5: "Prostate and MM-WHS, G^D + L^D, l = 3: region size K = 1x1 / 3x3",
    6: "Every medical dataset: encoder G^R / G^D, decoder random / L^R / L^D with l = 2, 3, 4",
    7: "ACDC, joint training of encoder and decoder (l = 3): weight lambda_l of the local loss",
    8: "Cityscapes (x4 downscaled), G^R + L^R and Mixup, and the fully supervised benchmark",
}

_DATASETS: tuple[str, ...] = ("acdc", "prostate", "mmwhs", "cityscapes")


@dataclass(frozen=True)
class PaperResult:
    """One Dice score the paper prints.

    Attributes
    ----------
    table : int
        The supplement's table number (1–8).
    dataset : str
        ``"acdc"``, ``"prostate"`` (Medical Decathlon Task05), ``"mmwhs"`` (MR) or
        ``"cityscapes"``.
    encoder : str
        How the encoder was initialised: ``"G^R"``, ``"G^D"``, ``"random"`` (no pre-training) or
        ``"joint G^D+L^D"`` (Table 7).
    decoder : str
        How the decoder was initialised: ``"random"``, ``"L^R"``, ``"L^D"`` or ``"joint"``.
    region : str or None
        Local region size K×K (``"1x1"``, ``"3x3"``); None where no local loss or not printed.
    decoder_blocks : int or None
        l, the number of pre-trained decoder blocks; None where no local loss.
    num_labelled : int or "all"
        |X_tr|: labelled training volumes (medical) or images (Cityscapes); ``"all"`` for
        Cityscapes' fully supervised benchmark.
    dice : float
        Mean Dice over the test set, foreground classes, as printed.
    batch_size : int or None
        Tables 2–3: the global pre-training batch size.
    partitions : int or None
        Tables 2–3: S, the partitions per volume.
    lambda_local : float or None
        Table 7: λ_l in L = L_g + λ_l L_l.
    mixup : bool or None
        Table 8: fine-tuning with Mixup (None where not stated).

    Examples
    --------
    >>> from contrastlocal.paper import paper_results
    >>> paper_results(table=1)[0]
    PaperResult(table=1, dataset='acdc', encoder='random', decoder='random', region=None, ...)
    """

    table: int
    dataset: str
    encoder: str
    decoder: str
    region: str | None
    decoder_blocks: int | None
    num_labelled: int | Literal["all"]
    dice: float
    batch_size: int | None
    partitions: int | None
    lambda_local: float | None
    mixup: bool | None


def _opt_int(text: str) -> int | None:
    return int(text) if text else None


def _parse(row: dict[str, str]) -> PaperResult:
    labelled: int | Literal["all"] = "all" if row["num_labelled"] == "all" else int(
        row["num_labelled"])
    mixup = {"yes": True, "no": False, "": None}[row["mixup"]]
    return PaperResult(
        table=int(row["table"]),
        dataset=row["dataset"],
        encoder=row["encoder"],
        decoder=row["decoder"],
        region=row["region"] or None,
        decoder_blocks=_opt_int(row["decoder_blocks"]),
        num_labelled=labelled,
        dice=float(row["dice"]),
        batch_size=_opt_int(row["batch_size"]),
        partitions=_opt_int(row["partitions"]),
        lambda_local=float(row["lambda_local"]) if row["lambda_local"] else None,
        mixup=mixup,
    )


@lru_cache(maxsize=1)
def _all_results() -> tuple[PaperResult, ...]:
    text = resources.files(__name__).joinpath("results.csv").read_text(encoding="utf-8")
    return tuple(_parse(row) for row in csv.DictReader(io.StringIO(text)))


def _check_table(table: object) -> int:
    if isinstance(table, bool) or not isinstance(table, int) or table not in TABLES:
        msg = (f"`table` must be one of the supplement's tables "
               f"{', '.join(str(t) for t in TABLES)}; got {table!r}.")
        raise ValueError(msg)
    return table


def paper_results(table: int | None = None, dataset: str | None = None) -> list[PaperResult]:
    """Return the paper's Dice scores, optionally of one table and/or one dataset.

    Parameters
    ----------
    table : int, optional
        The supplement's table number, 1–8 (:data:`TABLES`); all tables if None.
    dataset : {"acdc", "prostate", "mmwhs", "cityscapes"}, optional
        Only this dataset's scores; all datasets if None.

    Returns
    -------
    list of PaperResult
        In the order of the shipped file (the tables' printed order), one record per score.

    Raises
    ------
    ValueError
        If `table` or `dataset` is not one the data holds.

    See Also
    --------
    paper_table : One table laid out in rows and columns as printed.

    Examples
    --------
    >>> from contrastlocal.paper import paper_results
    >>> len(paper_results()), len(paper_results(table=6, dataset="acdc"))
    (195, 42)
    >>> [r.dice for r in paper_results(table=2) if r.num_labelled == 2]
    [0.784, 0.779, 0.77]
    """
    if table is not None:
        _check_table(table)
    if dataset is not None and dataset not in _DATASETS:
        msg = f"`dataset` must be one of {', '.join(map(repr, _DATASETS))}; got {dataset!r}."
        raise ValueError(msg)
    return [r for r in _all_results()
            if (table is None or r.table == table) and (dataset is None or r.dataset == dataset)]


# --------------------------------------------------------------------------------------------
# the printed layouts: which row and which column every score goes to
# --------------------------------------------------------------------------------------------


def _init_label(r: PaperResult) -> str:
    """``G^D``, ``G^D + L^D d_3``, ``random``, ``G^R + L^R`` (no l printed)..."""
    if r.decoder == "random":
        return r.encoder
    blocks = f" d_{r.decoder_blocks}" if r.decoder_blocks is not None else ""
    return f"{r.encoder} + {r.decoder}{blocks}"


def _row_col(table: int, r: PaperResult) -> tuple[str, str]:
    n = str(r.num_labelled)
    if table == 1:
        return "random init. (benchmark)", n
    if table == 2:
        return f"batch size {r.batch_size}", n
    if table == 3:
        return f"S = {r.partitions}", n
    if table == 4:
        return f"d_{r.decoder_blocks}", f"{r.region} / {n}"
    if table == 5:
        return f"K = {r.region}", n
    if table == 6:
        return _init_label(r), n
    if table == 7:
        return f"lambda_l = {r.lambda_local:g}", n
    label = "random init. (benchmark)" if r.num_labelled == "all" else _init_label(r)
    if r.mixup:
        label += " + Mixup"
    return label, n


_HEADERS: dict[int, tuple[str, str]] = {
    1: ("initialisation", "|X_tr|"),
    2: ("pre-training", "|X_tr|"),
    3: ("partitions", "|X_tr|"),
    4: ("decoder blocks", "K / |X_tr|"),
    5: ("region size", "|X_tr|"),
    6: ("initialisation", "|X_tr|"),
    7: ("joint training", "|X_tr|"),
    8: ("initialisation", "labelled images"),
}


@dataclass(frozen=True)
class PaperTable:
    """One table of the supplement (one dataset), in its printed rows and columns.

    Attributes
    ----------
    table : int
        The supplement's table number.
    dataset : str
        The dataset of the scores.
    row_header, column_header : str
        What the rows and the columns vary (e.g. ``"initialisation"``, ``"|X_tr|"``).
    rows : tuple of str
        Row labels in printed order (Table 6: ``"G^R"``, ``"G^R + L^R d_2"``, ...).
    columns : tuple of str
        Column labels in printed order (|X_tr| values; Table 4: ``"1x1 / 1"`` = K / |X_tr|).
    values : tuple of tuple of (float or None)
        ``values[i][j]`` is the printed Dice of row i, column j (None: no score printed there).

    Examples
    --------
    >>> from contrastlocal.paper import paper_table
    >>> t = paper_table(3)
    >>> t.rows, t.columns
    (('S = 3', 'S = 4', 'S = 6'), ('1', '2', '8'))
    >>> t.cell("S = 4", "2")
    0.789
    """

    table: int
    dataset: str
    row_header: str
    column_header: str
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    values: tuple[tuple[float | None, ...], ...]

    def cell(self, row: str, column: str) -> float | None:
        """Return the printed score at (`row`, `column`), None where the table prints none.

        Parameters
        ----------
        row, column : str
            A label of ``rows`` and one of ``columns``.

        Returns
        -------
        float or None
            The Dice score as printed.

        Raises
        ------
        KeyError
            If `row` or `column` is not a label of this table.
        """
        if row not in self.rows or column not in self.columns:
            msg = (f"no cell ({row!r}, {column!r}) in Table {self.table} ({self.dataset}); rows "
                   f"{self.rows}, columns {self.columns}.")
            raise KeyError(msg)
        return self.values[self.rows.index(row)][self.columns.index(column)]

    def to_markdown(self) -> str:
        """Render the table as Markdown, scores with three decimals as printed.

        Returns
        -------
        str
            A Markdown pipe table (header, separator, one line per row), ``–`` in empty cells,
            symbols as dollar math (``$G^D$ + $L^D$ $d_3$``).
        """
        header = f"| {self.row_header} | " + " | ".join(
            f"{self.column_header} = {c}" if i == 0 else c for i, c in enumerate(self.columns)
        ) + " |"
        lines = [header.replace("|X_tr|", "$\\lvert X_{tr}\\rvert$"),
                 "|---" * (len(self.columns) + 1) + "|"]
        for label, row in zip(self.rows, self.values, strict=True):
            cells = ["–" if v is None else f"{v:.3f}" for v in row]
            lines.append(f"| {_math(label)} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _math(label: str) -> str:
    """``G^D + L^D d_3`` → ``$G^D$ + $L^D$ $d_3$`` (Markdown with dollar math)."""
    label = re.sub(r"([GL])\^([RD])", r"$\1^\2$", label)
    label = re.sub(r"\bd_(\d)", r"$d_\1$", label)
    return label.replace("lambda_l", "$\\lambda_l$")


def paper_table(table: int, dataset: str | None = None) -> PaperTable:
    """Lay out one of the supplement's tables in its printed rows and columns.

    Parameters
    ----------
    table : int
        The supplement's table number, 1–8.
    dataset : str, optional
        The dataset; required for the tables that cover several (5: prostate, mmwhs; 6: acdc,
        prostate, mmwhs), otherwise the table's only dataset.

    Returns
    -------
    PaperTable
        Rows and columns in printed order. Rows: Table 1 the benchmark; 2 the pre-training batch
        size; 3 S; 4 the number of decoder blocks d_l; 5 the region size K; 6 the
        initialisation (``"G^D"`` = global pre-training only, ``"G^D + L^D d_3"``...); 7 λ_l;
        8 the initialisation (``"G^R + L^R + Mixup"``, and the fully supervised benchmark).
        Columns: |X_tr| (Table 4: K and |X_tr|; Table 8: labelled images, ``"all"`` for the
        benchmark).

    Raises
    ------
    ValueError
        If `table` is unknown, or `dataset` is missing or not one the table covers.

    See Also
    --------
    paper_results : The scores as flat records.

    Examples
    --------
    >>> from contrastlocal.paper import paper_table
    >>> t = paper_table(6, "acdc")
    >>> [t.cell("G^D + L^D d_3", n) for n in ("1", "2", "8")]
    [0.725, 0.787, 0.874]
    """
    table = _check_table(table)
    results = paper_results(table=table)
    covered = tuple(dict.fromkeys(r.dataset for r in results))
    if dataset is None:
        if len(covered) > 1:
            msg = (f"`dataset` is required for Table {table}, which covers "
                   f"{', '.join(map(repr, covered))}.")
            raise ValueError(msg)
        dataset = covered[0]
    if dataset not in covered:
        msg = (f"`dataset` must be one Table {table} covers ({', '.join(map(repr, covered))}); "
               f"got {dataset!r}.")
        raise ValueError(msg)
    cells: dict[tuple[str, str], float] = {}
    for r in results:
        if r.dataset == dataset:
            cells[_row_col(table, r)] = r.dice
    rows = tuple(dict.fromkeys(k[0] for k in cells))
    columns = tuple(dict.fromkeys(k[1] for k in cells))
    values = tuple(tuple(cells.get((row, col)) for col in columns) for row in rows)
    row_header, column_header = _HEADERS[table]
    return PaperTable(table, dataset, row_header, column_header, rows, columns, values)
