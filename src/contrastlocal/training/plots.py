"""Figures of a run, written as PNG files: loss curves, Dice per class, partitions, embeddings.

Every function draws with Matplotlib's object-oriented API on an Agg canvas (no ``pyplot``, no
global backend switch, no window), takes plain arrays or the files the stages write (the
``metrics.jsonl`` logs), saves one PNG and returns its path. Only NumPy and Matplotlib are
needed: the 2-D projection of the embeddings is a PCA computed with an SVD (:func:`pca_2d`).

- :func:`plot_loss_curves`: training loss against iterations, one panel per stage, one line per
  run, plus a validation-Dice panel for fine-tuning runs.
- :func:`plot_dice_per_class`: per-class test Dice (one box and the points of every volume or
  run) for each initialisation.
- :func:`plot_results_summary`: the results table as bars (mean ± std, the points on top).
- :func:`plot_partition_grid`: the paper's Figure 1, a grid of slices with rows = volumes and
  columns = partitions, showing that a partition holds similar anatomy across volumes.
- :func:`plot_embedding_projection`: the global embeddings of slices projected on their first
  two principal components, coloured by partition.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..samplers import slice_partition

__all__ = [
    "pca_2d",
    "plot_dice_per_class",
    "plot_embedding_projection",
    "plot_loss_curves",
    "plot_partition_grid",
    "plot_results_summary",
]

PathLike = str | os.PathLike[str]
Records = Sequence[Mapping[str, Any]]

# colour-blind-safe qualitative palette (Okabe-Ito), then tab10 for more entries
_PALETTE: tuple[str, ...] = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#000000",
)


def _colour(i: int) -> str:
    return _PALETTE[i % len(_PALETTE)]


def _figure(width: float, height: float) -> Any:
    """Create a Matplotlib figure on an Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, out: PathLike) -> Path:
    path = Path(out)
    if path.suffix.lower() != ".png":
        msg = f"`out` must be a .png file path; got {os.fspath(out)!r}."
        raise ValueError(msg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path


def _records(source: PathLike | Records) -> list[dict[str, Any]]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            msg = f"metrics log {os.fspath(path)!r} does not exist."
            raise ValueError(msg)
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [dict(r) for r in source]


def _series(records: Records, key: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    pts = [
        (float(r["iteration"]), float(r[key]))
        for r in records
        if key in r and r[key] is not None and "iteration" in r
    ]
    if not pts:
        return np.zeros(0), np.zeros(0)
    arr = np.asarray(pts, dtype=np.float64)
    return arr[:, 0], arr[:, 1]


def plot_loss_curves(
    panels: Mapping[str, Mapping[str, PathLike | Records]],
    out: PathLike,
    *,
    title: str | None = None,
    ncols: int = 3,
) -> Path:
    """Plot training losses (and validation Dice) of stages against iterations.

    Parameters
    ----------
    panels : mapping of str to mapping of str to path or sequence of dict
        ``{panel title: {line label: metrics}}``, where metrics is a stage's ``metrics.jsonl``
        path or its records (``{"iteration", "loss"}`` training records and
        ``{"iteration", "val_dice"}`` validation records). Each panel shows the training loss of
        its lines; a panel whose lines have validation records gets a second panel with the
        validation Dice right after it.
    out : path
        The PNG file to write.
    title : str, optional
        Figure title.
    ncols : int, default 3
        Panels per row.

    Returns
    -------
    Path
        `out`.

    Raises
    ------
    ValueError
        If `panels` is empty, a log file is missing, or `out` is not a ``.png`` path.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> recs = [{"iteration": i, "loss": 1.0 / i} for i in range(1, 6)]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = plot_loss_curves({"stage 1": {"seed 0": recs}}, pathlib.Path(tmp) / "loss.png")
    ...     p.name, p.stat().st_size > 0
    ('loss.png', True)
    """
    if not panels:
        msg = "`panels` must hold at least one panel; got none."
        raise ValueError(msg)
    if ncols < 1:
        msg = f"`ncols` must be >= 1; got {ncols}."
        raise ValueError(msg)
    loaded = {name: {k: _records(v) for k, v in lines.items()} for name, lines in panels.items()}
    specs: list[tuple[str, dict[str, list[dict[str, Any]]], str]] = []
    for name, lines in loaded.items():
        specs.append((name, lines, "loss"))
        if any(_series(recs, "val_dice")[0].size for recs in lines.values()):
            specs.append((name, lines, "val_dice"))
    from matplotlib.ticker import MaxNLocator

    n = len(specs)
    cols = min(ncols, n)
    rows = math.ceil(n / cols)
    fig = _figure(4.2 * cols, 3.2 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, (name, lines, key) in enumerate(specs):
        ax = axes[i // cols][i % cols]
        for j, (label, recs) in enumerate(lines.items()):
            x, y = _series(recs, key)
            if x.size:
                ax.plot(
                    x, y, color=_colour(j), lw=1.4, label=label, marker="." if x.size < 30 else None
                )
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if key == "loss":
            ax.set_ylabel("training loss")
            ax.set_title(name, fontsize=10)
        else:
            ax.set_ylabel("validation Dice (foreground mean)")
            ax.set_title(f"{name}: validation", fontsize=10)
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=7, frameon=False)
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, out)


def plot_dice_per_class(
    scores: Mapping[str, npt.ArrayLike],
    out: PathLike,
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    unit: str = "test volume",
) -> Path:
    """Box plot of per-class Dice for each initialisation, every value shown as a point.

    Parameters
    ----------
    scores : mapping of str to array_like of shape (V, C)
        ``{initialisation: dice}``: the Dice of each of V volumes (or runs) for each of the C
        foreground classes (background excluded).
    out : path
        The PNG file to write.
    class_names : sequence of str, optional
        C names (default ``class 1`` … ``class C``); a last group "mean" is always added.
    title : str, optional
        Figure title.
    unit : str, default "test volume"
        What one value is, for the legend note.

    Returns
    -------
    Path
        `out`.

    Raises
    ------
    ValueError
        If `scores` is empty, the arrays are not 2-D with the same number of classes, or
        `class_names` has the wrong length.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> s = {"random": np.full((3, 2), 0.5), "GD+LD": np.full((3, 2), 0.7)}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     plot_dice_per_class(s, pathlib.Path(tmp) / "dice.png", class_names=["a", "b"]).name
    'dice.png'
    """
    if not scores:
        msg = "`scores` must hold at least one initialisation; got none."
        raise ValueError(msg)
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in scores.items()}
    shapes = {k: a.shape for k, a in arrays.items()}
    if any(a.ndim != 2 or a.shape[1] < 1 for a in arrays.values()):
        msg = f"`scores` arrays must be 2-D with shape (V, C); got shapes {shapes}."
        raise ValueError(msg)
    num_classes = {a.shape[1] for a in arrays.values()}
    if len(num_classes) != 1:
        msg = f"`scores` arrays must share the number of classes C; got shapes {shapes}."
        raise ValueError(msg)
    c = num_classes.pop()
    names = [f"class {i + 1}" for i in range(c)] if class_names is None else list(class_names)
    if len(names) != c:
        msg = f"`class_names` must have {c} entries (one per foreground class); got {len(names)}."
        raise ValueError(msg)
    groups = [*names, "mean"]
    k = len(arrays)
    width = 0.8 / k
    fig = _figure(max(5.0, 1.1 * len(groups) * max(1.0, k / 2.5) + 1.5), 3.8)
    ax = fig.subplots()
    rng = np.random.default_rng(0)
    for j, (label, arr) in enumerate(arrays.items()):
        data = np.concatenate([arr, arr.mean(axis=1, keepdims=True)], axis=1)
        pos = np.arange(len(groups)) - 0.4 + width * (j + 0.5)
        colour = _colour(j)
        cols = [data[:, g][np.isfinite(data[:, g])] for g in range(len(groups))]
        ax.boxplot(
            cols,
            positions=pos,
            widths=width * 0.8,
            patch_artist=True,
            showfliers=False,
            medianprops={"color": "black", "lw": 1.2},
            boxprops={"facecolor": colour, "alpha": 0.35, "edgecolor": colour},
            whiskerprops={"color": colour},
            capprops={"color": colour},
        )
        for g, values in enumerate(cols):
            jitter = rng.uniform(-0.25, 0.25, size=values.size) * width
            ax.scatter(
                np.full(values.size, pos[g]) + jitter,
                values,
                s=10,
                color=colour,
                zorder=3,
                label=label if g == 0 else None,
            )
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylabel("Dice")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(axis="y", alpha=0.3)
    n_vals = next(iter(arrays.values())).shape[0]
    ax.legend(
        title=f"one point per {unit} (n = {n_vals})",
        fontsize=8,
        title_fontsize=8,
        frameon=False,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )
    ax.set_title(title or "Dice per class", fontsize=11)
    return _save(fig, out)


def plot_results_summary(
    results: Mapping[str, Mapping[Any, Sequence[float]]],
    out: PathLike,
    *,
    title: str | None = None,
    labels: Mapping[str, str] | None = None,
    metric: str = "test Dice",
) -> Path:
    """Bar chart of a results table: one group per |X_tr|, one bar per initialisation.

    Parameters
    ----------
    results : mapping
        ``{initialisation: {num_labelled: [score per seed or combination, ...]}}`` (the shape of
        the demo's ``results.json``).
    out : path
        The PNG file to write.
    title : str, optional
        Figure title.
    labels : mapping of str to str, optional
        Display names of the initialisations.
    metric : str, default "test Dice"
        Y-axis label.

    Returns
    -------
    Path
        `out`.

    Raises
    ------
    ValueError
        If `results` is empty.

    Notes
    -----
    Bars are means, error bars the sample standard deviation (ddof = 1), and every score is
    drawn as a point, so a mean over three seeds is never shown without its spread.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> res = {"random": {"1": [0.4, 0.5, 0.45]}, "GD+LD": {"1": [0.6, 0.7, 0.65]}}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     plot_results_summary(res, pathlib.Path(tmp) / "results.png").name
    'results.png'
    """
    if not results:
        msg = "`results` must hold at least one initialisation; got none."
        raise ValueError(msg)
    names = dict(labels or {})
    cols = sorted({str(c) for row in results.values() for c in row}, key=lambda s: (len(s), s))
    k = len(results)
    width = 0.8 / k
    fig = _figure(max(4.5, 1.6 * len(cols) * max(1.0, k / 3) + 1.5), 3.6)
    ax = fig.subplots()
    for j, (key, row) in enumerate(results.items()):
        row_s = {str(c): np.asarray(v, dtype=np.float64) for c, v in row.items()}
        x = np.arange(len(cols)) - 0.4 + width * (j + 0.5)
        means = [float(row_s[c].mean()) if c in row_s and row_s[c].size else np.nan for c in cols]
        stds = [
            float(row_s[c].std(ddof=1)) if c in row_s and row_s[c].size > 1 else 0.0 for c in cols
        ]
        colour = _colour(j)
        ax.bar(
            x,
            means,
            width * 0.9,
            yerr=stds,
            color=colour,
            alpha=0.45,
            capsize=3,
            label=names.get(key, key),
            edgecolor=colour,
        )
        for i, c in enumerate(cols):
            if c in row_s:
                ax.scatter(np.full(row_s[c].size, x[i]), row_s[c], s=12, color=colour, zorder=3)
    ax.set_xticks(np.arange(len(cols)), [f"|X_tr| = {c}" for c in cols])
    ax.set_ylabel(metric)
    ax.set_ylim(0.0, 1.0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title or "Results: mean ± std, one point per seed / combination", fontsize=10)
    return _save(fig, out)


def _partition_slices(num_slices: int, num_partitions: int) -> list[tuple[int, int]]:
    """[start, stop) of each partition: slice z is in partition floor(z * S / Z)."""
    p = slice_partition(np.arange(num_slices), num_slices, num_partitions)
    out = []
    for s in range(num_partitions):
        idx = np.flatnonzero(p == s)
        out.append((int(idx[0]), int(idx[-1]) + 1) if idx.size else (-1, -1))
    return out


def plot_partition_grid(
    volumes: Sequence[npt.ArrayLike],
    out: PathLike,
    *,
    num_partitions: int = 4,
    labels: Sequence[npt.ArrayLike | None] | None = None,
    names: Sequence[str] | None = None,
    title: str | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Draw the paper's Figure 1: a slice of each partition (columns) of each volume (rows).

    Parameters
    ----------
    volumes : sequence of array_like of shape (Z, H, W) or (Z, C, H, W)
        Processed volumes (slice axis first); RGB slices are shown in colour.
    out : path
        The PNG file to write.
    num_partitions : int, default 4
        S; slice z of a volume of Z slices is in partition ``floor(z * S / Z)``.
    labels : sequence of (array_like of shape (Z, H, W) or None), optional
        Label volumes; their class boundaries are drawn over the slices.
    names : sequence of str, optional
        Row titles (default ``volume 1`` …).
    title : str, optional
        Figure title.
    class_names : sequence of str, optional
        Names of the foreground classes 1, 2, ... for the legend of the label contours.

    Returns
    -------
    Path
        `out`.

    Raises
    ------
    ValueError
        If `volumes` is empty, a volume has fewer slices than partitions or a bad shape, or
        `labels`/`names` have the wrong length.

    Notes
    -----
    The slice shown for a partition is the middle one of its slice range; the column title
    gives the range as a fraction of the volume, the same for every row, which is what makes
    slices of one column correspond across volumes.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> vols = [np.random.default_rng(i).uniform(size=(8, 16, 16)) for i in range(2)]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     plot_partition_grid(vols, pathlib.Path(tmp) / "partitions.png").name
    'partitions.png'
    """
    vols, labs, rows_names = _check_partition_grid(volumes, num_partitions, labels, names)
    s = num_partitions
    cell = 1.7
    fig = _figure(cell * s + 0.6, cell * len(vols) + 0.6)
    axes = fig.subplots(len(vols), s, squeeze=False)
    for r, v in enumerate(vols):
        for c, (lo, hi) in enumerate(_partition_slices(v.shape[0], s)):
            _draw_partition_cell(axes[r][c], v, labs[r], (lo + hi - 1) // 2)
            if r == 0:
                axes[r][c].set_title(
                    f"partition {c + 1}\n(slices {c}/{s}–{c + 1}/{s} of Z)", fontsize=8
                )
            if c == 0:
                axes[r][c].set_ylabel(rows_names[r], fontsize=8)
    if any(lab is not None for lab in labs):
        _contour_legend(fig, labs, class_names)
    fig.suptitle(
        title or "Partitions: rows = volumes, columns = partitions (middle slice of each)",
        fontsize=10,
    )
    return _save(fig, out)


def _check_partition_grid(
    volumes: Sequence[npt.ArrayLike],
    num_partitions: int,
    labels: Sequence[npt.ArrayLike | None] | None,
    names: Sequence[str] | None,
) -> tuple[list[npt.NDArray[np.float32]], list[Any], list[str]]:
    """Validate :func:`plot_partition_grid`'s inputs; return volumes, labels and row names."""
    if len(volumes) == 0:
        msg = "`volumes` must hold at least one volume; got none."
        raise ValueError(msg)
    if num_partitions < 1:
        msg = f"`num_partitions` must be >= 1; got {num_partitions}."
        raise ValueError(msg)
    vols = [np.asarray(v, dtype=np.float32) for v in volumes]
    for i, v in enumerate(vols):
        if v.ndim not in (3, 4) or v.shape[0] < num_partitions:
            msg = (
                f"`volumes[{i}]` must have shape (Z, H, W) or (Z, C, H, W) with Z >= "
                f"num_partitions = {num_partitions}; got shape {v.shape}."
            )
            raise ValueError(msg)
    labs: list[Any] = [None] * len(vols) if labels is None else list(labels)
    rows_names = [f"volume {i + 1}" for i in range(len(vols))] if names is None else list(names)
    if len(labs) != len(vols) or len(rows_names) != len(vols):
        msg = (
            f"`labels` and `names` must have one entry per volume ({len(vols)}); got "
            f"{len(labs)} and {len(rows_names)}."
        )
        raise ValueError(msg)
    return vols, labs, rows_names


def _draw_partition_cell(ax: Any, v: npt.NDArray[np.float32], lab: Any, z: int) -> None:
    """Slice `z` of volume `v` (grey or RGB) with the contours of its labels."""
    img = v[z]
    if img.ndim == 3:  # (C, H, W)
        rgb = np.moveaxis(img[:3], 0, -1)
        lo_v, hi_v = np.percentile(rgb, [1, 99])
        ax.imshow(np.clip((rgb - lo_v) / max(hi_v - lo_v, 1e-6), 0, 1))
    else:
        lo_v, hi_v = np.percentile(v, [1, 99.5])
        ax.imshow(img, cmap="gray", vmin=lo_v, vmax=hi_v, interpolation="nearest")
    if lab is not None:
        lab_z = np.asarray(lab)[z]
        classes = [k for k in np.unique(lab_z) if k != 0]
        for k in classes:
            ax.contour(lab_z == k, levels=[0.5], colors=[_colour(int(k))], linewidths=0.7)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(
        0.02,
        0.03,
        f"z={z}/{v.shape[0]}",
        color="yellow",
        fontsize=6,
        transform=ax.transAxes,
    )


def _contour_legend(fig: Any, labs: Sequence[Any], class_names: Sequence[str] | None) -> None:
    """Legend of the label contours: one entry per class present in any label volume."""
    from matplotlib.lines import Line2D

    present = sorted(
        {int(k) for lab in labs if lab is not None for k in np.unique(np.asarray(lab))} - {0}
    )
    cname = list(class_names) if class_names is not None else []
    handles = [
        Line2D(
            [0],
            [0],
            color=_colour(k),
            lw=1.5,
            label=cname[k - 1] if k - 1 < len(cname) else f"class {k}",
        )
        for k in present
    ]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=max(1, len(handles)),
        fontsize=8,
        frameon=False,
        title="label contours",
        title_fontsize=8,
    )


def pca_2d(
    x: npt.ArrayLike, *, normalize: bool = True
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Project rows on their first two principal components (an SVD of the centred data).

    Parameters
    ----------
    x : array_like of shape (N, D)
        Embeddings, N >= 2.
    normalize : bool, default True
        L2-normalise the rows first (the contrastive losses compare cosine similarities).

    Returns
    -------
    coords : ndarray of shape (N, 2)
        Coordinates on components 1 and 2 (zeros where D < 2 or the rank is lower).
    explained : ndarray of shape (2,)
        Fraction of the total variance each component explains.

    Raises
    ------
    ValueError
        If `x` is not 2-D with at least 2 rows.

    Examples
    --------
    >>> import numpy as np
    >>> pts = np.array([[0.0, 0.0], [2.0, 0.0], [4.0, 0.1]])
    >>> coords, explained = pca_2d(pts, normalize=False)
    >>> coords.shape, bool(explained[0] > 0.99)
    ((3, 2), True)
    """
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2:
        msg = f"`x` must be 2-D with shape (N, D), N >= 2; got shape {a.shape}."
        raise ValueError(msg)
    if normalize:
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    a = a - a.mean(axis=0, keepdims=True)
    u, sv, _ = np.linalg.svd(a, full_matrices=False)
    k = min(2, sv.size)
    coords = np.zeros((a.shape[0], 2))
    coords[:, :k] = u[:, :k] * sv[:k]
    total = float((sv**2).sum())
    explained = np.zeros(2)
    if total > 0:
        explained[:k] = sv[:k] ** 2 / total
    return coords, explained


def plot_embedding_projection(
    embeddings: Mapping[str, npt.ArrayLike],
    partition_ids: npt.ArrayLike,
    out: PathLike,
    *,
    title: str | None = None,
) -> Path:
    """Scatter the first two principal components of global embeddings, coloured by partition.

    Parameters
    ----------
    embeddings : mapping of str to array_like of shape (N, D)
        One panel per entry, e.g. ``{"random encoder": e0, "after G^D": e1}``, all embedding
        the same N slices.
    partition_ids : array_like of int, shape (N,)
        Partition of each slice (the colour).
    out : path
        The PNG file to write.
    title : str, optional
        Figure title.

    Returns
    -------
    Path
        `out`.

    Raises
    ------
    ValueError
        If `embeddings` is empty or an array does not have N rows.

    Notes
    -----
    Rows are L2-normalised before the PCA (:func:`pca_2d`). With a global loss that pulls
    together slices of the same partition across volumes, points of one colour gather.
    Each panel also reports the ratio of the mean cosine similarity within partitions to that
    across partitions as a one-number summary.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> pid = np.repeat(np.arange(4), 5)
    >>> emb = np.random.default_rng(0).normal(size=(20, 8)) + 3 * np.eye(8)[pid]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     plot_embedding_projection({"G^D": emb}, pid, pathlib.Path(tmp) / "emb.png").name
    'emb.png'
    """
    if not embeddings:
        msg = "`embeddings` must hold at least one array; got none."
        raise ValueError(msg)
    pid = np.asarray(partition_ids).astype(np.int64)
    n = pid.shape[0]
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in embeddings.items()}
    for k, a in arrays.items():
        if a.ndim != 2 or a.shape[0] != n:
            msg = (
                f"`embeddings[{k!r}]` must have shape (N, D) with N = {n} (len(partition_ids)); "
                f"got shape {a.shape}."
            )
            raise ValueError(msg)
    parts = np.unique(pid)
    fig = _figure(3.9 * len(arrays) + 0.4, 3.9)
    axes = fig.subplots(1, len(arrays), squeeze=False)[0]
    for ax, (name, a) in zip(axes, arrays.items(), strict=True):
        coords, explained = pca_2d(a)
        z = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        sim = z @ z.T
        same = pid[:, None] == pid[None, :]
        off = ~np.eye(n, dtype=bool)
        within = float(sim[same & off].mean()) if (same & off).any() else float("nan")
        across = float(sim[~same].mean()) if (~same).any() else float("nan")
        for i, p in enumerate(parts):
            sel = pid == p
            ax.scatter(
                coords[sel, 0],
                coords[sel, 1],
                s=14,
                color=_colour(i),
                alpha=0.8,
                label=f"partition {int(p) + 1}",
            )
        ax.set_xlabel(f"PC 1 ({100 * explained[0]:.0f}% of variance)")
        ax.set_ylabel(f"PC 2 ({100 * explained[1]:.0f}% of variance)")
        ax.set_title(
            f"{name}\nmean cos. sim. within / across partitions: {within:.2f} / {across:.2f}",
            fontsize=9,
        )
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(
        title or f"Global embeddings of {n} slices (PCA of L2-normalised g_1 outputs)",
        fontsize=10,
    )
    return _save(fig, out)
