"""Helpers shared by the tests that drive the command line and the file system."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

#: ``--set`` items that shrink a run to seconds on the fixture trees (32 × 32 slices, a narrow
#: UNet, 2 iterations per stage).
TINY_SETTINGS = [
    "model.image_size=[32, 32]",
    "model.channels=[4, 8, 16]",
    "model.global_hidden_features=16",
    "global_stage.iterations=2",
    "global_stage.volumes_per_batch=2",
    "global_stage.log_every=1",
    "local_stage.iterations=2",
    "local_stage.volumes_per_batch=2",
    "local_stage.num_decoder_blocks=1",
    "local_stage.log_every=1",
    "finetune.iterations=2",
    "finetune.batch_size=2",
    "finetune.validate_every=1",
    "finetune.log_every=1",
]


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of `size` at `where` for the block (a small disk that fills up).

    Skips the test, saying why, where mounting is not permitted (not root, not Linux).
    """
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root on Linux")
    where.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        pytest.skip(f"this machine does not permit mounting a tmpfs: {res.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
