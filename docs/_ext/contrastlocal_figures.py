"""Figures of the documentation, drawn at build time from the package's own pair builders.

Used by the ``plot`` directives of the user guide: every mask shown is computed by
:func:`contrastlocal.functional.global_pairing` (global strategies) or read off the terms of
:func:`contrastlocal.functional.local_contrastive_loss` (local strategies), never drawn by hand.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch, Rectangle

from contrastlocal.functional import global_pairing, local_contrastive_loss, local_region_positions

# A small batch: 2 volumes (A, B) x 2 partitions x 2 views; rows are view-major.
VOLUMES = ("A", "B")
NUM_PARTITIONS = 2
NUM_VIEWS = 2

# cell categories
NEITHER, NEGATIVE, POSITIVE, SELF = 0, 1, 2, 3
COLORS = ("#e9e9e9", "#6b9bd1", "#e07b39", "#303030")
LABELS = ("neither", "negative (in the denominator)", "positive (a term)", "the anchor itself")


def example_batch() -> dict[str, np.ndarray]:
    """Row metadata of the example batch: image, volume, partition and view of every row."""
    rows = [
        (v, p, view)
        for view in range(NUM_VIEWS)
        for v in range(len(VOLUMES))
        for p in range(NUM_PARTITIONS)
    ]
    volume = np.array([r[0] for r in rows])
    partition = np.array([r[1] for r in rows])
    view = np.array([r[2] for r in rows])
    image = volume * NUM_PARTITIONS + partition
    return {"image": image, "volume": volume, "partition": partition, "view": view}


def row_labels(batch: dict[str, np.ndarray]) -> list[str]:
    """'A·p0·v1'-style label of every row: volume, partition, view."""
    return [
        f"{VOLUMES[v]}·p{p}·v{w + 1}"
        for v, p, w in zip(batch["volume"], batch["partition"], batch["view"], strict=True)
    ]


def categories(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Cell category of every (anchor, row) pair."""
    cat = np.where(positive, POSITIVE, np.where(negative, NEGATIVE, NEITHER))
    return np.where(np.eye(len(cat), dtype=bool), SELF, cat)


def draw_pairs(ax: plt.Axes, cat: np.ndarray, labels: list[str], title: str) -> None:
    """Draw an (anchor x row) category matrix with row/column labels."""
    ax.imshow(cat, cmap=ListedColormap(COLORS), vmin=0, vmax=len(COLORS) - 1)
    n = len(labels)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xticks(np.arange(-0.5, n), minor=True)
    ax.set_yticks(np.arange(-0.5, n), minor=True)
    ax.grid(which="minor", color="white", linewidth=1)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("row k")
    ax.set_ylabel("anchor a")
    ax.set_title(title, fontsize=9)


def legend(fig: plt.Figure) -> None:
    """One legend for the category colours, under the panels."""
    handles = [
        Patch(facecolor=c, edgecolor="none", label=lab)
        for c, lab in zip(COLORS, LABELS, strict=True)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False, fontsize=8)


def plot_global_strategies() -> plt.Figure:
    """The positives and negatives of the three global strategies on the example batch."""
    batch = example_batch()
    labels = row_labels(batch)
    strategies = [
        ("random", "$G^R$: strategy='random'"),
        ("domain_negatives", "$G^{D-}$: strategy='domain_negatives'"),
        ("domain", "$G^D$: strategy='domain'"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(11, 4.0))
    for ax, (strategy, title) in zip(axes, strategies, strict=True):
        pos, neg = global_pairing(batch["image"], batch["partition"], strategy=strategy)
        draw_pairs(ax, categories(np.asarray(pos), np.asarray(neg)), labels, title)
    legend(fig)
    fig.subplots_adjust(bottom=0.27, top=0.92, wspace=0.45)
    return fig


def local_positive_rows(strategy: str, batch: dict[str, np.ndarray]) -> np.ndarray:
    """Row pairs (a, p) that are terms of a local strategy, read off the loss's own terms."""
    rng = np.random.default_rng(0)
    n = len(batch["image"])
    features = rng.standard_normal((n, 2, 8, 8))
    terms = local_contrastive_loss(
        features,
        image_ids=batch["image"],
        partition_ids=batch["partition"],
        volume_ids=batch["volume"],
        strategy=strategy,
        region_size=1,
        reduction="pairwise",
    )
    # terms has shape (N, N, R): nonzero exactly at the (anchor, positive) pairs
    return np.asarray(terms).sum(axis=-1) != 0


def plot_local_strategies() -> plt.Figure:
    """Which rows are positives of each other under L^R and L^D, on the example batch."""
    batch = example_batch()
    labels = row_labels(batch)
    fig, axes = plt.subplots(1, 2, figsize=(7.6, 4.0))
    for ax, (strategy, title) in zip(
        axes,
        [("random", "$L^R$: strategy='random'"), ("domain", "$L^D$: strategy='domain'")],
        strict=True,
    ):
        pos = local_positive_rows(strategy, batch)
        # the local negatives are regions, not rows: only the anchor's and the positive's maps
        draw_pairs(ax, categories(pos, np.zeros_like(pos)), labels, title)
    handles = [
        Patch(facecolor=COLORS[POSITIVE], label="positive rows (same region r)"),
        Patch(facecolor=COLORS[NEITHER], label="not paired"),
        Patch(facecolor=COLORS[SELF], label="the anchor itself"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, fontsize=8)
    fig.subplots_adjust(bottom=0.27, top=0.92, wspace=0.5)
    return fig


def plot_region_pattern(map_size: int = 48, region_size: int = 3, highlight: int = 0) -> plt.Figure:
    """The 13 region positions on a feature map, and the negatives of one region."""
    positions, negatives = local_region_positions(map_size, region_size=region_size)
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.set_xlim(-0.5, map_size - 0.5)
    ax.set_ylim(map_size - 0.5, -0.5)
    ax.set_aspect("equal")
    for r, (x, y) in enumerate(positions):
        color = COLORS[POSITIVE] if r == highlight else "#999999"
        ax.add_patch(
            Rectangle((y - 0.5, x - 0.5), region_size, region_size, facecolor=color, alpha=0.9)
        )
        ax.annotate(
            str(r),
            (y + region_size / 2 - 0.5, x + region_size / 2 - 0.5),
            xytext=(0, 6),
            textcoords="offset points",
            ha="center",
            fontsize=7,
        )
    for x, y in negatives[highlight]:
        ax.add_patch(
            Rectangle(
                (y - 0.5, x - 0.5),
                region_size,
                region_size,
                facecolor="none",
                edgecolor=COLORS[NEGATIVE],
                linewidth=2,
            )
        )
    ax.set_title(
        f"{len(positions)} regions ({region_size}×{region_size}) on a {map_size}×{map_size} map;\n"
        f"region {highlight} (orange) and its {negatives.shape[1]} negatives (blue)",
        fontsize=8,
    )
    ax.set_xlabel("y (W)")
    ax.set_ylabel("x (H)")
    return fig
