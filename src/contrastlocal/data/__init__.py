"""Datasets: readers of the as-distributed layouts, pre-processing, synthetic phantom volumes.

Importing :mod:`contrastlocal.data` is light: every public name is loaded on first access
(PEP 562), so nibabel, Pillow, scipy or torch are imported only by the submodule that needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule that defines it (add one line per name)
_LAZY: dict[str, str] = {
    "Case": "contrastlocal.data._records",
    "PHANTOM_CLASS_NAMES": "contrastlocal.data.synthetic",
    "make_cardiac_phantom": "contrastlocal.data.synthetic",
    "make_synthetic_dataset": "contrastlocal.data.synthetic",
    "write_acdc_fixture": "contrastlocal.data.fixtures",
    "write_prostate_fixture": "contrastlocal.data.fixtures",
    "write_mmwhs_fixture": "contrastlocal.data.fixtures",
    "write_cityscapes_fixture": "contrastlocal.data.fixtures",
    "ACDCReader": "contrastlocal.data.readers",
    "ProstateReader": "contrastlocal.data.readers",
    "MMWHSReader": "contrastlocal.data.readers",
    "CityscapesReader": "contrastlocal.data.readers",
    "DatasetReader": "contrastlocal.data.readers",
    "READERS": "contrastlocal.data.readers",
    "get_reader": "contrastlocal.data.readers",
    "PreprocessConfig": "contrastlocal.data.preprocess",
    "PREPROCESS_PRESETS": "contrastlocal.data.preprocess",
    "Geometry": "contrastlocal.data.preprocess",
    "preprocess_case": "contrastlocal.data.preprocess",
    "to_native": "contrastlocal.data.preprocess",
    "CacheData": "contrastlocal.data.cache",
    "open_cache": "contrastlocal.data.cache",
    "SPLITS": "contrastlocal.data.splits",
    "get_split": "contrastlocal.data.splits",
    "auto_splits": "contrastlocal.data.splits",
    "DatasetInfo": "contrastlocal.data.registry",
    "get_dataset": "contrastlocal.data.registry",
    "make_cityscapes_split": "contrastlocal.data.splits",
    "prepare_dataset": "contrastlocal.data.prepare",
    "prepare_cases": "contrastlocal.data.prepare",
    "SliceDataset": "contrastlocal.data.slices",
    "collate_slices": "contrastlocal.data.slices",
    "two_views": "contrastlocal.data.augment",
    "Volume": "contrastlocal.data.volumes",
    "load_volumes": "contrastlocal.data.volumes",
    "open_dataset": "contrastlocal.data.volumes",
    "PreparedDataset": "contrastlocal.data.volumes",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    msg = f"module 'contrastlocal.data' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
