"""Helpers shared by the readers: argument and folder checks, label-value checks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

PathLike = str | os.PathLike[str]


_UInt8Array = npt.NDArray[np.uint8]


def _is_hidden(name: str) -> bool:
    """Skip macOS resource forks (``._*``) and other hidden or private files."""
    return name.startswith((".", "_"))


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        msg = f"{what}: expected a folder at {path}, but it does not exist."
        raise FileNotFoundError(msg)
    return path


def _check_label_values(label: npt.NDArray[Any], allowed: Sequence[int], path: Path) -> None:
    values = np.unique(label)
    bad = sorted(set(values.tolist()) - set(allowed))
    if bad:
        msg = (
            f"{path}: label values {bad} are outside the dataset's set {sorted(allowed)}; "
            "is this the right dataset or file?"
        )
        raise ValueError(msg)


def _check_split(split: Any, choices: Sequence[str]) -> str:
    if split not in choices:
        msg = f"`split` must be one of {list(choices)}; got {split!r}."
        raise ValueError(msg)
    return str(split)
