"""contrastlocal: global and local contrastive pre-training for medical image segmentation.

An exact, fast implementation of Chaitanya et al., "Contrastive learning of global and local
features for medical image segmentation with limited annotations" (NeurIPS 2020,
arXiv:2006.10511): the framework-agnostic loss core (:mod:`contrastlocal.functional`), thin
PyTorch modules (:mod:`contrastlocal.nn`), partition batch samplers, the reference UNet, datasets,
and the three-stage training recipe.

``import contrastlocal`` imports neither torch nor any other array framework: every name below is
loaded on first access (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0.dev0"

# public name -> module that defines it
_LAZY: dict[str, str] = {
    # framework-agnostic core
    "masked_contrastive_loss": "contrastlocal.functional",
    "global_contrastive_loss": "contrastlocal.functional",
    "local_contrastive_loss": "contrastlocal.functional",
    # torch modules
    "GlobalContrastiveLoss": "contrastlocal.nn",
    "LocalContrastiveLoss": "contrastlocal.nn",
    "UNet": "contrastlocal.models",
    # samplers (numpy only)
    "PartitionBatchSampler": "contrastlocal.samplers",
}
_SUBMODULES = ("functional", "nn", "samplers", "models", "data", "training", "cli", "paper")

__all__ = [
    "GlobalContrastiveLoss",
    "LocalContrastiveLoss",
    "PartitionBatchSampler",
    "UNet",
    "__version__",
    "global_contrastive_loss",
    "local_contrastive_loss",
    "masked_contrastive_loss",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"contrastlocal.{name}")
        globals()[name] = module
        return module
    msg = f"module 'contrastlocal' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY, *_SUBMODULES])
