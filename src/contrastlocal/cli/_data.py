"""A command's dataset folder: its cache (prepared on first use) and splits."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ._settings import UsageError

if TYPE_CHECKING:
    from contrastlocal.data.volumes import PreparedDataset
    from contrastlocal.training import ExperimentConfig

__all__ = ["prepare"]


def prepare(
    args: argparse.Namespace, cfg: ExperimentConfig, wanted: Sequence[int] | None
) -> PreparedDataset:
    """Prepare (or reuse) the cache of ``--data`` and resolve the splits on what it holds."""
    from contrastlocal.data.volumes import open_dataset

    root = Path(args.data)
    if not root.is_dir():
        msg = f"`--data` {os.fspath(root)!r} does not exist or is not a folder."
        raise UsageError(msg)
    return open_dataset(
        cfg.dataset,
        root,
        Path(args.cache) if args.cache is not None else Path(args.out) / "cache",
        image_size=cfg.model.image_size,
        n4=getattr(args, "n4", None) or ("legacy" if cfg.fidelity.n4 else None),
        splits=args.splits,
        num_labelled=wanted,
        workers=args.workers,
        progress=cfg.runtime.progress,
    )
