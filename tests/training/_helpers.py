"""Tiny synthetic data and configs shared by the training tests."""

from __future__ import annotations

from functools import lru_cache

from contrastlocal.data.preprocess import PreprocessConfig
from contrastlocal.data.synthetic import make_synthetic_dataset
from contrastlocal.training import ExperimentConfig, Volume, preset

SIZE = 32


def tiny_config(**overrides: object) -> ExperimentConfig:
    cfg = preset(
        "synthetic",
        model={"channels": (4, 8, 16), "image_size": (SIZE, SIZE), "global_hidden_features": 16},
        global_stage={"iterations": 3, "volumes_per_batch": 2, "log_every": 1,
                      "checkpoint_every": 1},
        local_stage={"iterations": 3, "volumes_per_batch": 2, "num_decoder_blocks": 1,
                     "log_every": 1, "checkpoint_every": 1},
        finetune={"iterations": 3, "batch_size": 4, "validate_every": 1, "log_every": 1,
                  "checkpoint_every": 1},
        runtime={"progress": False},
    )
    return cfg.replace(**overrides) if overrides else cfg


@lru_cache(maxsize=1)
def _volumes() -> tuple[Volume, ...]:
    cases = make_synthetic_dataset(7, seed=3, shape=(SIZE, SIZE), num_slices=5)
    prep = PreprocessConfig(image_size=(SIZE, SIZE))
    return tuple(Volume.from_case(c, prep) for c in cases)


def volumes() -> dict[str, list[Volume]]:
    v = list(_volumes())
    return {"pretrain": v[:4], "train": v[4:5], "val": v[5:6], "test": v[6:7]}
