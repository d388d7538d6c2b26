"""Test package; helpers shared by several test modules live here."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(x: Any) -> np.ndarray:
    """A host NumPy copy of `x` from any supported namespace (CuPy and GPU torch tensors too).

    ``np.asarray`` refuses CuPy arrays (no implicit device-to-host copy) and GPU tensors.
    """
    module = type(x).__module__
    if module.startswith("cupy"):
        return np.asarray(x.get())
    if module.startswith("torch"):
        return x.detach().cpu().numpy()
    return np.asarray(x)
