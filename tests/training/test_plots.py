"""Figures: every plot writes a readable PNG of the expected size; PCA against eigh; errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from PIL import Image

from contrastlocal.training.plots import (
    _partition_slices,
    pca_2d,
    plot_dice_per_class,
    plot_embedding_projection,
    plot_loss_curves,
    plot_partition_grid,
    plot_results_summary,
)


def _png(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_plot_loss_curves_from_jsonl_and_records(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    log.write_text(
        "".join(
            f'{{"stage": "finetune", "iteration": {i}, "loss": {1 / i}}}\n' for i in range(1, 11)
        )
        + '{"stage": "finetune", "iteration": 10, "val_dice": 0.5}\n'
    )
    recs = [{"iteration": i, "loss": 2.0 - i / 10} for i in range(1, 6)]
    out = plot_loss_curves(
        {"stage 1": {"a": recs}, "fine-tuning": {"b": log}}, tmp_path / "loss.png"
    )
    w, h = _png(out)
    # three panels (two loss panels and the validation panel of the fine-tuning log)
    assert w > 2.5 * h


def test_plot_loss_curves_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="panels"):
        plot_loss_curves({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="metrics log"):
        plot_loss_curves({"p": {"a": tmp_path / "missing.jsonl"}}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="out"):
        plot_loss_curves({"p": {"a": [{"iteration": 1, "loss": 1.0}]}}, tmp_path / "x.jpg")


def test_plot_dice_per_class_and_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    scores = {"random": rng.uniform(size=(5, 3)), "GD+LD": rng.uniform(size=(5, 3))}
    out = plot_dice_per_class(scores, tmp_path / "d.png", class_names=["RV", "Myo", "LV"])
    assert min(_png(out)) > 100
    with pytest.raises(ValueError, match="class_names"):
        plot_dice_per_class(scores, tmp_path / "d.png", class_names=["RV"])
    with pytest.raises(ValueError, match="scores"):
        plot_dice_per_class({"a": np.zeros(3)}, tmp_path / "d.png")
    with pytest.raises(ValueError, match="scores"):
        plot_dice_per_class({"a": np.zeros((2, 3)), "b": np.zeros((2, 2))}, tmp_path / "d.png")


def test_plot_results_summary(tmp_path: Path) -> None:
    results = {"random": {"1": [0.2, 0.3, 0.25]}, "GD+LD": {"1": [0.4, 0.5, 0.45], "2": [0.6]}}
    out = plot_results_summary(results, tmp_path / "r.png")
    assert out.stat().st_size > 1000
    with pytest.raises(ValueError, match="results"):
        plot_results_summary({}, tmp_path / "r.png")


@pytest.mark.parametrize(("z", "s"), [(6, 4), (10, 3), (4, 4), (13, 6)])
def test_partition_slices_match_floor_formula(z: int, s: int) -> None:
    ranges = _partition_slices(z, s)
    for part, (lo, hi) in enumerate(ranges):
        expected = [k for k in range(z) if (k * s) // z == part]
        assert list(range(lo, hi)) == expected


def test_plot_partition_grid_rows_and_columns(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vols = [rng.uniform(size=(8, 16, 16)).astype(np.float32) for _ in range(3)]
    labs = [(v > 0.7).astype(np.uint8) for v in vols]
    out = plot_partition_grid(vols, tmp_path / "g.png", num_partitions=4, labels=labs)
    w, h = _png(out)
    assert w > h  # 4 columns, 3 rows
    out_rgb = plot_partition_grid(
        [rng.uniform(size=(2, 3, 8, 16))], tmp_path / "rgb.png", num_partitions=2
    )
    assert out_rgb.is_file()
    with pytest.raises(ValueError, match="volumes"):
        plot_partition_grid([np.zeros((2, 8, 8))], tmp_path / "g.png", num_partitions=4)
    with pytest.raises(ValueError, match="labels"):
        plot_partition_grid(vols, tmp_path / "g.png", labels=labs[:1])


def test_pca_2d_matches_covariance_eigenvectors() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 5)) @ rng.normal(size=(5, 5))
    coords, explained = pca_2d(x, normalize=False)
    centred = x - x.mean(axis=0)
    evals, evecs = np.linalg.eigh(centred.T @ centred)
    order = np.argsort(evals)[::-1]
    for k in range(2):
        ref = centred @ evecs[:, order[k]]
        # components are defined up to sign
        assert np.allclose(np.abs(coords[:, k]), np.abs(ref), atol=1e-8)
        assert explained[k] == pytest.approx(evals[order[k]] / evals.sum())


def test_pca_2d_normalises_rows_and_rejects_bad_input() -> None:
    x = np.array([[1.0, 0.0], [10.0, 0.0], [0.0, 3.0]])
    coords, _ = pca_2d(x)
    assert np.allclose(coords[0], coords[1])  # same direction -> same point
    with pytest.raises(ValueError, match="x"):
        pca_2d(np.zeros((1, 3)))


def test_plot_embedding_projection(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    pid = np.repeat(np.arange(4), 6)
    centres = rng.normal(size=(4, 8)) * 3
    emb = {"random": rng.normal(size=(24, 8)), "trained": centres[pid] + rng.normal(size=(24, 8))}
    out = plot_embedding_projection(emb, pid, tmp_path / "e.png")
    w, h = _png(out)
    assert w > 1.5 * h  # two panels side by side
    with pytest.raises(ValueError, match="embeddings"):
        plot_embedding_projection({"a": np.zeros((5, 2))}, pid, tmp_path / "e.png")
