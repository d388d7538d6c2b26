"""Typed configuration of the three-stage recipe, with the paper's presets.

Every setting of an experiment lives in one :class:`ExperimentConfig`, made of one section per
stage (:class:`GlobalStageConfig`, :class:`LocalStageConfig`, :class:`FinetuneConfig`), the network
(:class:`ModelConfig`) and the execution settings (:class:`RuntimeConfig`). :func:`preset` returns
the paper's settings for a dataset; :func:`load_config` reads a TOML file; both accept keyword
overrides. Unknown keys are rejected with the list of valid ones.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from ..data.augment import MIXUP_ALPHA
from ..data.registry import DATASETS as _REGISTRY
from .fidelity import FidelityConfig

__all__ = [
    "DATASETS",
    "ExperimentConfig",
    "FidelityConfig",
    "FinetuneConfig",
    "GlobalStageConfig",
    "LocalStageConfig",
    "ModelConfig",
    "ResolvedRuntime",
    "RuntimeConfig",
    "config_to_dict",
    "load_config",
    "preset",
    "validate_for_run",
]

#: Names accepted by :func:`preset` (the datasets of :mod:`contrastlocal.data.registry`).
DATASETS: tuple[str, ...] = tuple(_REGISTRY)
#: Datasets whose presets hold the paper's settings: there the fidelity's text-vs-code values
#: (:data:`~contrastlocal.training.fidelity.TEXT_AND_CODE`) give the fine-tuning batch, the
#: global batch and the g_1 width. ``"synthetic"`` keeps its CPU-sized values.
PAPER_DATASETS: tuple[str, ...] = ("acdc", "prostate", "mmwhs", "cityscapes")
#: Region patterns of the local loss (:func:`contrastlocal.functional.local_region_positions`).
SUPPORTED_NUM_REGIONS: tuple[int, ...] = (13, 9)
#: Largest learning rate :func:`validate_for_run` accepts (Adam moves every weight by about the
#: learning rate per step: above 1 the weights only blow up).
MAX_LEARNING_RATE = 1.0
#: ``runtime.step_mode`` values (see :class:`RuntimeConfig`)
_STEP_MODES = ("eager", "cuda_graph", "compile")


def _labelled_sets(dataset: str) -> dict[int, tuple[int, ...]]:
    """|X_tr| values and combination numbers of the paper's splits (the authors' code)."""
    from ..data.splits import SPLITS

    if dataset not in SPLITS:
        return {}
    return {n: tuple(sorted(c)) for n, c in SPLITS[dataset].finetune.items()}


_T = TypeVar("_T")


def _fail(msg: str) -> None:
    raise ValueError(msg)


def _check_int(value: Any, name: str, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"`{name}` must be an integer; got {value!r}."
        raise TypeError(msg)
    if value < low or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        _fail(f"`{name}` must be in {bound}; got {value}.")


def _check_float(value: Any, name: str, *, positive: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"`{name}` must be a number; got {value!r}."
        raise TypeError(msg)
    if not math.isfinite(value) or (positive and value <= 0):
        _fail(f"`{name}` must be a positive finite number; got {value!r}.")


def _check_choice(value: Any, choices: tuple[Any, ...], name: str) -> None:
    if value not in choices:
        _fail(f"`{name}` must be one of {', '.join(map(repr, choices))}; got {value!r}.")


@dataclass
class ModelConfig:
    """The segmentation network (the paper's UNet by default, the authors' code).

    Parameters
    ----------
    in_channels : int
        Image channels (1 for MR, 3 for Cityscapes RGB).
    num_classes : int
        Segmentation classes including background.
    channels : tuple of int
        Encoder widths, one per level; the paper's are (16, 32, 64, 128, 128, 128).
    image_size : tuple of (int, int)
        Processed slice size (H, W).
    global_hidden_features : int
        Width of g_1's hidden layer (1024 as in the authors' code, 3200 as the supplement says;
        the paper's dataset presets take it from ``fidelity``: 3200 for ``"paper"``, 1024 for
        ``"authors"``).
    global_out_features : int
        Dimension of the global embeddings (128).

    Examples
    --------
    >>> from contrastlocal.training import preset
    >>> preset("acdc").model.image_size, preset("mmwhs").model.num_classes
    ((192, 192), 8)
    """

    in_channels: int = 1
    num_classes: int = 4
    channels: tuple[int, ...] = (16, 32, 64, 128, 128, 128)
    image_size: tuple[int, int] = (192, 192)
    global_hidden_features: int = 1024
    global_out_features: int = 128

    def __post_init__(self) -> None:
        _check_int(self.in_channels, "model.in_channels", 1)
        _check_int(self.num_classes, "model.num_classes", 2)
        self.channels = tuple(self.channels)
        size: Any = self.image_size
        if isinstance(size, int) and not isinstance(size, bool):
            size = (size, size)  # `--set model.image_size=64`: a square image
        if (
            not isinstance(size, (tuple, list))
            or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
        ):
            msg = f"`model.image_size` must be an int or a pair of ints (H, W); got {size!r}."
            raise TypeError(msg)
        self.image_size = (int(size[0]), int(size[1]))
        if len(self.channels) < 2:
            _fail(f"`model.channels` needs at least 2 levels; got {self.channels}.")
        for c in self.channels:
            _check_int(c, "model.channels", 1)
        factor = 2 ** (len(self.channels) - 1)
        if any(s % factor for s in self.image_size):
            _fail(
                f"`model.image_size` must be divisible by 2**(levels - 1) = {factor}; "
                f"got {self.image_size}."
            )
        _check_int(self.global_hidden_features, "model.global_hidden_features", 1)
        _check_int(self.global_out_features, "model.global_out_features", 1)


@dataclass
class GlobalStageConfig:
    """Stage 1: encoder + g_1 trained with a global contrastive loss (the authors' code).

    Parameters
    ----------
    strategy : {"domain", "random", "domain_negatives"}
        G^D, G^R or G^{D-}.
    iterations : int
        Optimiser steps (10 000 in the paper).
    learning_rate : float
        Adam learning rate (1e-3).
    temperature : float
        The temperature τ (0.1).
    volumes_per_batch : int
        Distinct volumes per batch (10); one slice per partition each. The batch size B of the
        paper (its "batch size 40", the authors' ``--bt_size``) is the number of slices,
        ``volumes_per_batch × num_partitions`` = 10 × 4 = 40; the loss sees two views of each,
        80 rows (the authors' G^D layout under ``fidelity.global_loss``: 4B rows).
    num_partitions : int
        S (4).
    log_every : int
        Iterations between loss read-outs (the only host synchronisation of the loop).
    checkpoint_every : int
        Iterations between atomic checkpoints.

    Examples
    --------
    >>> from contrastlocal.training import preset
    >>> stage = preset("acdc").global_stage
    >>> stage.strategy, stage.volumes_per_batch, stage.num_partitions, stage.temperature
    ('domain', 10, 4, 0.1)
    """

    strategy: Literal["domain", "random", "domain_negatives"] = "domain"
    iterations: int = 10_000
    learning_rate: float = 1e-3
    temperature: float = 0.1
    volumes_per_batch: int = 10
    num_partitions: int = 4
    log_every: int = 50
    checkpoint_every: int = 1000

    def __post_init__(self) -> None:
        _check_choice(
            self.strategy, ("domain", "random", "domain_negatives"), "global_stage.strategy"
        )
        _check_int(self.iterations, "global_stage.iterations", 0)
        _check_float(self.learning_rate, "global_stage.learning_rate")
        _check_float(self.temperature, "global_stage.temperature")
        _check_int(self.volumes_per_batch, "global_stage.volumes_per_batch", 1)
        _check_int(self.num_partitions, "global_stage.num_partitions", 1)
        _check_int(self.log_every, "global_stage.log_every", 1)
        _check_int(self.checkpoint_every, "global_stage.checkpoint_every", 1)


@dataclass
class LocalStageConfig:
    """Stage 2: frozen encoder + l decoder blocks + g_2 with a local loss (the authors' code).

    Parameters
    ----------
    strategy : {"domain", "random"}
        L^D or L^R.
    iterations : int
        Optimiser steps (10 000).
    learning_rate : float
        Adam learning rate (1e-3).
    temperature : float
        The temperature τ (0.1).
    num_decoder_blocks : int
        The number l of decoder blocks pre-trained and handed over (3; the ablation varies 1…5).
    region_size : int
        K, the side of a local region (3).
    num_regions : int
        Local regions per feature map (13).
    projection_dim : int
        Output of the learned region projection (128, used when K > 1).
    volumes_per_batch : int
        Distinct volumes per batch; the authors' L^D batch is 3 volumes × 4 partitions × 2 views.
    num_partitions : int
        S (4).
    encoder_batchnorm : {"batch_stats", "frozen_stats"}
        How the frozen encoder's batch normalisation behaves: the original normalises with the
        current batch's statistics.
    lambda_local : float
        The weight λ_l of the local loss in :func:`~contrastlocal.training.pretrain_joint`
        (L_g + λ_l·L_l; the seed's Table 7 varies it over 1…1000).
    log_every, checkpoint_every : int
        As in :class:`GlobalStageConfig`.

    Examples
    --------
    >>> from contrastlocal.training import preset
    >>> stage = preset("acdc").local_stage
    >>> stage.strategy, stage.num_decoder_blocks, stage.region_size, stage.num_regions
    ('domain', 3, 3, 13)
    """

    strategy: Literal["domain", "random"] = "domain"
    iterations: int = 10_000
    learning_rate: float = 1e-3
    temperature: float = 0.1
    num_decoder_blocks: int = 3
    region_size: int = 3
    num_regions: int = 13
    projection_dim: int = 128
    volumes_per_batch: int = 3
    num_partitions: int = 4
    encoder_batchnorm: Literal["batch_stats", "frozen_stats"] = "batch_stats"
    lambda_local: float = 1.0
    log_every: int = 50
    checkpoint_every: int = 1000

    def __post_init__(self) -> None:
        _check_choice(self.strategy, ("domain", "random"), "local_stage.strategy")
        _check_int(self.iterations, "local_stage.iterations", 0)
        _check_float(self.learning_rate, "local_stage.learning_rate")
        _check_float(self.temperature, "local_stage.temperature")
        _check_int(self.num_decoder_blocks, "local_stage.num_decoder_blocks", 1, 5)
        _check_choice(self.region_size, (1, 3), "local_stage.region_size")
        _check_choice(self.num_regions, SUPPORTED_NUM_REGIONS, "local_stage.num_regions")
        _check_int(self.projection_dim, "local_stage.projection_dim", 1)
        _check_int(self.volumes_per_batch, "local_stage.volumes_per_batch", 1)
        _check_int(self.num_partitions, "local_stage.num_partitions", 1)
        _check_choice(
            self.encoder_batchnorm, ("batch_stats", "frozen_stats"), "local_stage.encoder_batchnorm"
        )
        _check_float(self.lambda_local, "local_stage.lambda_local")
        _check_int(self.log_every, "local_stage.log_every", 1)
        _check_int(self.checkpoint_every, "local_stage.checkpoint_every", 1)


@dataclass
class FinetuneConfig:
    """Stage 3 and the baseline: the whole UNet on |X_tr| labelled volumes (the authors' code).

    Parameters
    ----------
    iterations : int
        Optimiser steps (10 000).
    learning_rate : float
        Adam learning rate (1e-3).
    batch_size : int
        Slices per batch, drawn uniformly with replacement from the labelled volumes (the
        paper's dataset presets take it from ``fidelity``: 40 as the supplement says for
        ``"paper"``, 20 as the authors' code for ``"authors"``).
    augment : bool
        Affine + elastic augmentation (the paper's; the baseline always uses it).
    mixup : bool
        Mixup of images and one-hot labels (the seed's best Cityscapes row).
    mixup_alpha : float
        Beta(α, α) parameter of Mixup (default :data:`~contrastlocal.data.augment.MIXUP_ALPHA`
        = 0.2; the paper does not state it).
    loss : {"dice", "dice_foreground", "cross_entropy"}
        Soft Dice over all classes including background (the original's default), over the
        foreground only, or pixel-wise cross-entropy.
    validate_every : int
        Iterations between validations; the checkpoint with the best validation 3D Dice is kept.
    eval_batch_size : int
        Slices per forward pass when predicting volumes.
    log_every, checkpoint_every : int
        As in :class:`GlobalStageConfig`.

    Examples
    --------
    >>> from contrastlocal.training import preset
    >>> stage = preset("acdc", **{"finetune.mixup": True}).finetune
    >>> stage.batch_size, stage.loss, stage.mixup, stage.mixup_alpha
    (40, 'dice', True, 0.2)
    """

    iterations: int = 10_000
    learning_rate: float = 1e-3
    batch_size: int = 20
    augment: bool = True
    mixup: bool = False
    mixup_alpha: float = MIXUP_ALPHA
    loss: Literal["dice", "dice_foreground", "cross_entropy"] = "dice"
    validate_every: int = 50
    eval_batch_size: int = 20
    log_every: int = 50
    checkpoint_every: int = 1000

    def __post_init__(self) -> None:
        _check_int(self.iterations, "finetune.iterations", 0)
        _check_float(self.learning_rate, "finetune.learning_rate")
        _check_int(self.batch_size, "finetune.batch_size", 1)
        if not isinstance(self.augment, bool) or not isinstance(self.mixup, bool):
            msg = "`finetune.augment` and `finetune.mixup` must be booleans."
            raise TypeError(msg)
        _check_float(self.mixup_alpha, "finetune.mixup_alpha")
        _check_choice(self.loss, ("dice", "dice_foreground", "cross_entropy"), "finetune.loss")
        _check_int(self.validate_every, "finetune.validate_every", 1)
        _check_int(self.eval_batch_size, "finetune.eval_batch_size", 1)
        _check_int(self.log_every, "finetune.log_every", 1)
        _check_int(self.checkpoint_every, "finetune.checkpoint_every", 1)


@dataclass
class RuntimeConfig:
    """Where and how the stages execute.

    Parameters
    ----------
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... or ``"auto"`` (CUDA when available).
    amp : {"auto", "none", "bf16", "fp16"}
        Autocast dtype on CUDA (``"auto"``: bf16 where supported, else fp16). Ignored on the CPU.
    channels_last : bool or None
        Memory format of the networks and batches (None: on CUDA only).
    compile : bool
        Wrap the networks in :func:`torch.compile`.
    progress : bool
        Show a progress bar (only when stderr is a terminal).
    num_threads : int or None
        Torch intra-op threads on the CPU (None: leave torch's default).
    sync_batchnorm : bool
        Under ``torchrun`` with several processes, convert the networks' batch norms to
        :class:`torch.nn.SyncBatchNorm` (statistics over the global batch; CUDA only). Ignored
        with one process.
    step_mode : {"eager", "cuda_graph", "compile"}
        How each training step runs once its batch is drawn and augmented: ``"eager"`` (plain
        PyTorch, the default); ``"cuda_graph"``, the whole step (forward, loss, backward and
        Adam's update) captured once as a CUDA graph and replayed, one launch per iteration
        (CUDA only, one process, fp32 or bf16); ``"compile"``, the forward and loss compiled with
        :func:`torch.compile` (mode ``"reduce-overhead"`` on CUDA), instead of ``compile``. The
        results equal the eager step's to floating-point rounding; like ``compile``, the mode is
        not part of a stage's resume key (a run may be resumed in another mode).

    Examples
    --------
    >>> from contrastlocal.training import preset
    >>> preset("acdc", **{"runtime.device": "cuda"}).runtime.device
    'cuda'
    """

    device: str = "cpu"
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"
    channels_last: bool | None = None
    compile: bool = False
    progress: bool = True
    num_threads: int | None = None
    sync_batchnorm: bool = False
    step_mode: Literal["eager", "cuda_graph", "compile"] = "eager"

    def __post_init__(self) -> None:
        _check_choice(self.step_mode, _STEP_MODES, "runtime.step_mode")
        if self.step_mode != "eager" and self.compile:
            _fail(
                f"`runtime.compile` is true and `runtime.step_mode` is {self.step_mode!r}: "
                "`compile` compiles the forward of the eager step only; set runtime.compile=false."
            )
        if not isinstance(self.sync_batchnorm, bool):
            _fail(f"`runtime.sync_batchnorm` must be a bool; got {self.sync_batchnorm!r}.")
        if not isinstance(self.device, str) or not (
            self.device in ("cpu", "auto") or self.device.startswith(("cuda", "mps"))
        ):
            _fail(f"`runtime.device` must be 'cpu', 'auto' or 'cuda[:N]'; got {self.device!r}.")
        _check_choice(self.amp, ("auto", "none", "bf16", "fp16"), "runtime.amp")
        if self.num_threads is not None:
            _check_int(self.num_threads, "runtime.num_threads", 1)


@dataclass
class ExperimentConfig:
    """Everything one run of the recipe needs: dataset, splits, network, three stages, runtime.

    Parameters
    ----------
    dataset : str
        One of :data:`DATASETS`.
    data : str or None
        Raw dataset folder (read by ``contrastlocal.data.prepare``).
    cache : str or None
        Pre-processed cache folder (``contrastlocal.data.cache``).
    out : str or None
        Output folder: checkpoints, metrics logs, tables.
    num_labelled : int
        |X_tr|, labelled training volumes (1, 2 or 8 for the medical datasets).
    combination : int
        Which split c1 … c5 of the authors' code (1-based).
    seed : int
        Seeds every stage (weights, sampling, augmentation).
    model, global_stage, local_stage, finetune, runtime : sections
        See the section classes.
    fidelity : FidelityConfig
        Which behaviours of the authors' code training reproduces
        (:class:`~contrastlocal.training.fidelity.FidelityConfig`). Give it as ``"paper"``
        (default), ``"authors"`` or a mapping of items (``{"fidelity": "authors", "n4": False}``,
        ``--set fidelity=authors --set fidelity.n4=false``). On the paper's datasets changing it
        also sets the text-vs-code values of the sections (fine-tuning batch, global batch, g_1
        width) unless the same overrides set those too.

    Examples
    --------
    >>> from contrastlocal.training import preset
    >>> cfg = preset("acdc", num_labelled=2, global_stage={"iterations": 100})
    >>> cfg.global_stage.iterations, cfg.finetune.batch_size, cfg.model.num_classes
    (100, 40, 4)
    >>> cfg = preset("acdc", fidelity="authors")
    >>> cfg.fidelity.global_loss, cfg.finetune.batch_size, cfg.global_stage.volumes_per_batch
    (True, 20, 3)
    """

    dataset: str = "synthetic"
    data: str | None = None
    cache: str | None = None
    out: str | None = None
    num_labelled: int = 1
    combination: int = 1
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    global_stage: GlobalStageConfig = field(default_factory=GlobalStageConfig)
    local_stage: LocalStageConfig = field(default_factory=LocalStageConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    fidelity: FidelityConfig = field(default_factory=FidelityConfig)

    def __post_init__(self) -> None:
        _check_choice(self.dataset, DATASETS, "dataset")
        if not isinstance(self.fidelity, FidelityConfig):
            self.fidelity = _fidelity_value(FidelityConfig(), self.fidelity)
        _check_int(self.num_labelled, "num_labelled", 1)
        _check_int(self.seed, "seed", 0)
        _check_int(self.combination, "combination", 1)
        sets = _labelled_sets(self.dataset)
        if sets:
            if self.num_labelled not in sets:
                _fail(
                    f"`num_labelled` (|X_tr|) must be one of {sorted(sets)} for "
                    f"{self.dataset!r} (the paper's splits); got {self.num_labelled}."
                )
            valid = sets[self.num_labelled]
            if self.combination not in valid:
                _fail(
                    f"`combination` must be one of {list(valid)} for {self.dataset!r} with "
                    f"|X_tr| = {self.num_labelled}; got {self.combination!r}."
                )
        if self.dataset == "cityscapes" and self.model.in_channels != 3:
            _fail(
                "`model.in_channels` must be 3 for 'cityscapes' (RGB images); "
                f"got {self.model.in_channels}."
            )
        num_blocks = len(self.model.channels) - 1
        if self.local_stage.num_decoder_blocks > num_blocks:
            _fail(
                f"`local_stage.num_decoder_blocks` (l) must be in [1, {num_blocks}] for a UNet "
                f"with {len(self.model.channels)} levels; "
                f"got {self.local_stage.num_decoder_blocks}."
            )

    def replace(self, **overrides: Any) -> ExperimentConfig:
        """Return a copy with `overrides` applied (see :func:`preset` for the forms accepted).

        Parameters
        ----------
        **overrides : Any
            Top-level settings, nested sections as mappings, or dotted keys
            (``{"global_stage.iterations": 10}`` passed as ``**``).

        Returns
        -------
        ExperimentConfig
            A new, validated configuration.

        Raises
        ------
        ValueError
            If a key is unknown (the message lists the valid keys) or a value is invalid.
        """
        overrides = dict(overrides)
        if isinstance(overrides.get("fidelity"), str):  # `--set fidelity=authors` + items
            overrides["fidelity"] = {"fidelity": overrides["fidelity"]}
        nested = _nest(overrides)
        if "fidelity" in nested and self.dataset in PAPER_DATASETS and (
            nested.get("dataset", self.dataset) == self.dataset
        ):
            fid = _fidelity_value(self.fidelity, nested["fidelity"])
            partitions = nested.get("global_stage", {}).get(
                "num_partitions", self.global_stage.num_partitions
            )
            # only what the fidelity change moves: re-stating the same fidelity (or changing an
            # item that sets no value) keeps settings given explicitly earlier
            before = _fidelity_sections(self.fidelity, partitions)
            for section, values in _fidelity_sections(fid, partitions).items():
                moved = {k: v for k, v in values.items() if before[section].get(k) != v}
                given = nested.get(section, {})
                if moved and isinstance(given, Mapping):
                    nested[section] = {**moved, **given}
        out: ExperimentConfig = _apply(self, nested, "")
        return out


def _fidelity_value(current: FidelityConfig, value: Any) -> FidelityConfig:
    """Read a ``fidelity`` setting: a preset name, a FidelityConfig, or items over `current`."""
    if isinstance(value, FidelityConfig):
        return value
    if isinstance(value, str):
        return FidelityConfig.preset(value)
    if isinstance(value, Mapping):
        if "fidelity" in value:
            return FidelityConfig.from_dict(value)
        return FidelityConfig.from_dict({**current.to_dict(), **value})
    msg = f"`fidelity` must be 'paper', 'authors' or a mapping of items; got {value!r}."
    raise TypeError(msg)


def _fidelity_sections(fid: FidelityConfig, num_partitions: int) -> dict[str, dict[str, Any]]:
    """Return the section settings a fidelity gives on the paper's datasets (text or code values).

    B (``fidelity.global_batch``) is a number of slices: ``volumes_per_batch × S``.
    """
    return {
        "finetune": {"batch_size": fid.finetune_batch},
        "model": {"global_hidden_features": fid.global_hidden_features},
        "global_stage": {"volumes_per_batch": max(1, fid.global_batch // num_partitions)},
    }


_SECTION_TYPES: dict[str, type] = {
    "model": ModelConfig,
    "global_stage": GlobalStageConfig,
    "local_stage": LocalStageConfig,
    "finetune": FinetuneConfig,
    "runtime": RuntimeConfig,
    "fidelity": FidelityConfig,
}


def _coerce(value: Any, default: Any, key: str) -> Any:
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _nest(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Turn dotted keys ``"a.b": v`` into nested mappings ``{"a": {"b": v}}``."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if not isinstance(key, str):
            msg = f"configuration keys must be strings; got {key!r}."
            raise TypeError(msg)
        head, _, rest = key.partition(".")
        if rest:
            sub = out.setdefault(head, {})
            if not isinstance(sub, dict):
                _fail(f"setting `{head}` is given both as a value and as a section.")
            sub.update(_nest({rest: value}))
        elif isinstance(value, Mapping) and isinstance(out.get(head), dict):
            out[head].update(_nest(value))
        else:
            out[head] = dict(_nest(value)) if isinstance(value, Mapping) else value
    return out


def _apply(obj: Any, overrides: Mapping[str, Any], prefix: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in _nest(overrides).items():
        if key not in names:
            valid = ", ".join(sorted(names))
            where = f"in section `{prefix[:-1]}`" if prefix else "at the top level"
            _fail(f"unknown setting `{prefix}{key}` {where}; valid settings: {valid}.")
        current = getattr(obj, key)
        if isinstance(current, FidelityConfig):
            changes[key] = _fidelity_value(current, value)
        elif dataclasses.is_dataclass(current) and not isinstance(current, type):
            if isinstance(value, type(current)):
                changes[key] = value
            elif isinstance(value, Mapping):
                changes[key] = _apply(current, value, f"{prefix}{key}.")
            else:
                _fail(
                    f"section `{prefix}{key}` must be given as a mapping of settings; "
                    f"got {value!r}."
                )
        else:
            changes[key] = _coerce(value, current, f"{prefix}{key}")
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]


def _classes(dataset: str) -> int:
    return _REGISTRY[dataset].num_classes


def _preset_base(dataset: str) -> ExperimentConfig:
    base = _dataset_base(dataset)
    # the paper's datasets: the text's values where text and code disagree (fidelity "paper")
    if dataset not in PAPER_DATASETS:
        return base
    text = _fidelity_sections(FidelityConfig.preset("paper"), base.global_stage.num_partitions)
    return base.replace(
        fidelity="paper", **{f"{sec}.{k}": v for sec, vals in text.items() for k, v in vals.items()}
    )


def _dataset_base(dataset: str) -> ExperimentConfig:
    if dataset == "acdc":
        return ExperimentConfig(dataset="acdc", model=ModelConfig(num_classes=_classes("acdc")))
    if dataset == "prostate":
        return ExperimentConfig(
            dataset="prostate", model=ModelConfig(num_classes=_classes("prostate"))
        )
    if dataset == "mmwhs":
        return ExperimentConfig(
            dataset="mmwhs", model=ModelConfig(num_classes=_classes("mmwhs"), image_size=(160, 160))
        )
    if dataset == "cityscapes":
        # The seed ran Cityscapes with G^R + L^R: images are unrelated 2D scenes, so "partitions"
        # carry no meaning; every image is its own volume with a single partition.
        return ExperimentConfig(
            dataset="cityscapes",
            model=ModelConfig(
                in_channels=3, num_classes=_classes("cityscapes"), image_size=(256, 512)
            ),
            global_stage=GlobalStageConfig(
                strategy="random", num_partitions=1, volumes_per_batch=40
            ),
            local_stage=LocalStageConfig(strategy="random", num_partitions=1, volumes_per_batch=12),
        )
    if dataset == "synthetic":
        # CPU-sized: 64x64 slices, a narrower 5-level UNet, a few hundred iterations per stage.
        return ExperimentConfig(
            dataset="synthetic",
            model=ModelConfig(
                num_classes=_classes("synthetic"),
                channels=(8, 16, 32, 32, 32),
                image_size=(64, 64),
                global_hidden_features=128,
            ),
            global_stage=GlobalStageConfig(
                iterations=300, volumes_per_batch=6, log_every=10, checkpoint_every=100
            ),
            local_stage=LocalStageConfig(
                iterations=300, volumes_per_batch=3, log_every=10, checkpoint_every=100
            ),
            finetune=FinetuneConfig(
                iterations=300,
                batch_size=10,
                validate_every=25,
                log_every=10,
                checkpoint_every=100,
            ),
        )
    _fail(f"`dataset` must be one of {', '.join(map(repr, DATASETS))}; got {dataset!r}.")
    raise AssertionError  # pragma: no cover


def preset(dataset: str, /, **overrides: Any) -> ExperimentConfig:
    """Return the paper's settings for `dataset`, with optional overrides.

    Parameters
    ----------
    dataset : {"acdc", "prostate", "mmwhs", "cityscapes", "synthetic"}
        Which preset. ``"synthetic"`` is sized for a laptop CPU (64×64 slices, a narrower UNet,
        300 iterations per stage); the others hold the paper's settings: Adam, lr 1e-3,
        10 000 iterations per stage, stage-1 batch B = 40 slices (10 volumes × 4 partitions,
        two views each), τ = 0.1, l = 3, K = 3, 13 regions, fine-tuning batch 40 (the
        supplement; ``fidelity="authors"``: 20, the authors' code) with affine + elastic
        augmentation, validation every 50 iterations. Cityscapes uses G^R + L^R on
        colour-jittered views, RGB input, 13 classes, 256×512, fine-tuning with random crop +
        colour jitter, and scores Dice per test image
        (:func:`~contrastlocal.training.dice_over_images`).
    **overrides : Any
        Settings to change: top-level fields (``seed=1``), sections as mappings
        (``finetune={"iterations": 50}``) or dotted keys (``**{"finetune.iterations": 50}``).

    Returns
    -------
    ExperimentConfig
        The validated configuration.

    Raises
    ------
    ValueError
        For an unknown dataset, an unknown key (listing the valid ones) or an invalid value.

    Examples
    --------
    >>> from contrastlocal.training import preset
    >>> preset("cityscapes").global_stage.strategy
    'random'
    >>> preset("acdc", **{"local_stage.num_decoder_blocks": 2}).local_stage.num_decoder_blocks
    2
    """
    if dataset not in DATASETS:
        _fail(f"`dataset` must be one of {', '.join(map(repr, DATASETS))}; got {dataset!r}.")
    base = _preset_base(dataset)
    return base.replace(**overrides) if overrides else base


def _read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError as exc:
            msg = "reading TOML on Python 3.10 needs the `tomli` package (pip install tomli)."
            raise ImportError(msg) from exc
    with path.open("rb") as fh:
        data: dict[str, Any] = tomllib.load(fh)
    return data


def load_config(path: str | Path, /, **overrides: Any) -> ExperimentConfig:
    r"""Read an experiment configuration from a TOML file, then apply keyword overrides.

    The file may name a ``preset = "acdc"`` (default: ``dataset``'s preset, or ``"synthetic"``)
    and override any setting, sections as TOML tables::

        preset = "acdc"
        num_labelled = 2
        [global_stage]
        iterations = 2000

    Parameters
    ----------
    path : str or Path
        The TOML file.
    **overrides : Any
        Applied after the file (same forms as :func:`preset`).

    Returns
    -------
    ExperimentConfig
        The validated configuration.

    Raises
    ------
    ValueError
        If the file does not exist or holds an unknown key or an invalid value.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from contrastlocal.training import load_config
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "short.toml"
    ...     _ = path.write_text('dataset = "acdc"\n[global_stage]\niterations = 2000\n')
    ...     config = load_config(path, seed=3)
    >>> config.dataset, config.global_stage.iterations, config.seed
    ('acdc', 2000, 3)
    """
    path = Path(path)
    if not path.is_file():
        _fail(f"`path` must be an existing TOML file; got {str(path)!r}.")
    data = _read_toml(path)
    name = data.pop("preset", data.get("dataset", "synthetic"))
    cfg = preset(str(name), **data)
    return cfg.replace(**overrides) if overrides else cfg


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain-Python (JSON/TOML-friendly) dictionary of a configuration or section.

    Parameters
    ----------
    config : dataclass instance
        An :class:`ExperimentConfig` or one of its sections.

    Returns
    -------
    dict
        Nested dictionaries of ints, floats, strings, booleans, lists and None.

    Examples
    --------
    >>> from contrastlocal.training import FinetuneConfig, config_to_dict
    >>> config_to_dict(FinetuneConfig())["batch_size"]
    20
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        msg = f"`config` must be a configuration dataclass instance; got {type(config).__name__}."
        raise TypeError(msg)

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return v

    out: dict[str, Any] = plain(config)
    return out


# ---- checks against this machine, before any training ---------------------------------------


@dataclass(frozen=True)
class ResolvedRuntime:
    """What a run will really execute on, as :func:`validate_for_run` resolved it.

    Attributes
    ----------
    device : str
        The torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).
    device_type : str
        Its type (``"cpu"``, ``"cuda"``, ``"mps"``); part of each stage's resume key.
    precision : {"fp32", "bf16", "fp16"}
        The autocast precision in effect; part of each stage's resume key.

    Examples
    --------
    >>> validate_for_run(preset("synthetic")).precision
    'fp32'
    """

    device: str
    device_type: str
    precision: str


def _device_available(torch: Any, name: str) -> str | None:
    """Why `name` cannot be used here, or None."""
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            return "CUDA is not available on this machine"
        index = name.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            return f"this machine has {torch.cuda.device_count()} CUDA device(s)"
        return None
    if name.startswith("mps"):
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            return "MPS (Apple GPU) is not available on this machine"
    return None


def validate_for_run(config: ExperimentConfig, *, device: str | None = None) -> ResolvedRuntime:
    """Refuse settings that could only fail (or be silently ignored) later in a run.

    Call it before any training: every problem is one line naming the setting, the value and
    what is accepted. The checks need the machine (torch), unlike those of the config classes.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    device : str, optional
        Device to check instead of ``config.runtime.device``.

    Returns
    -------
    ResolvedRuntime
        The device and precision the run will use.

    Raises
    ------
    ValueError
        If the device is not available here; if ``runtime.amp`` asks for fp16/bf16 on a device
        that cannot honour it (autocast is CUDA-only here: on the CPU or MPS use ``"none"`` or
        ``"auto"``, which resolves to fp32), or bf16 on a GPU without bf16; if ``runtime.step_mode``
        cannot run there (``check_step_mode`` in this module); if a learning rate is
        above 1 (``MAX_LEARNING_RATE``); if the local stage's feature maps are too small for its
        region pattern at ``model.image_size``; if ``fidelity.fixed_crop`` does not fit the
        image; if a pre-training batch needs more distinct volumes than the dataset's
        pre-training split holds (Table 2's batch 450 on ACDC's 52 volumes).

    Notes
    -----
    Learning rates: non-finite or non-positive values are refused when the config is built;
    values above 1 are refused here (with Adam, each step moves every weight by about the
    learning rate, so a rate above 1 can only diverge; 1e38 would overflow float32 updates).

    Examples
    --------
    >>> validate_for_run(preset("synthetic"))
    ResolvedRuntime(device='cpu', device_type='cpu', precision='fp32')
    >>> validate_for_run(preset("synthetic", **{"runtime.amp": "fp16"}), device="cpu")
    Traceback (most recent call last):
    ...
    ValueError: `runtime.amp` is 'fp16' but the device 'cpu' cannot run fp16 autocast (only CUDA can); use runtime.amp='none' (fp32) or 'auto'.
    """  # noqa: E501
    import torch

    name = config.runtime.device if device is None else device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    why = _device_available(torch, name)
    if why is not None:
        _fail(f"`runtime.device` is {name!r} but {why}; use 'cpu' or 'auto'.")
    device_type = torch.device(name).type
    amp = config.runtime.amp
    if amp in ("fp16", "bf16") and device_type != "cuda":
        _fail(
            f"`runtime.amp` is {amp!r} but the device {name!r} cannot run {amp} autocast "
            "(only CUDA can); use runtime.amp='none' (fp32) or 'auto'."
        )
    precision = "fp32"
    if device_type == "cuda" and amp != "none" and not config.fidelity.float32:
        bf16 = bool(torch.cuda.is_bf16_supported())
        if amp == "bf16" and not bf16:
            _fail(
                f"`runtime.amp` is 'bf16' but the GPU {name!r} does not support bf16; use "
                "runtime.amp='fp16', 'auto' or 'none'."
            )
        precision = "fp16" if amp == "fp16" or (amp == "auto" and not bf16) else "bf16"
    check_step_mode(config.runtime.step_mode, name, precision)
    for section in ("global_stage", "local_stage", "finetune"):
        rate = getattr(config, section).learning_rate
        if rate > MAX_LEARNING_RATE:
            _fail(
                f"`{section}.learning_rate` is {rate!r}; it must be in (0, {MAX_LEARNING_RATE}] "
                "(the paper uses 1e-3)."
            )
    _check_local_maps(config)
    _check_fidelity(config)
    _check_pretraining_volumes(config)
    return ResolvedRuntime(device=name, device_type=device_type, precision=precision)


def check_step_mode(step_mode: str, device: str, precision: str, *, processes: int = 1) -> None:
    """Refuse a ``runtime.step_mode`` the device, precision or process count cannot run.

    ``"cuda_graph"`` needs a CUDA device; neither it nor ``"compile"`` runs fp16 autocast (its
    gradient scaler reads values back between backward and update) or several processes (the
    gradients are averaged between backward and update).

    Examples
    --------
    >>> check_step_mode("cuda_graph", "cpu", "fp32")
    Traceback (most recent call last):
    ...
    ValueError: `runtime.step_mode` is 'cuda_graph' but the device 'cpu' cannot capture CUDA graphs; use runtime.step_mode='eager' or 'compile'.
    """  # noqa: E501
    if step_mode == "eager":
        return
    if step_mode == "cuda_graph" and not device.startswith("cuda"):
        _fail(
            f"`runtime.step_mode` is 'cuda_graph' but the device {device!r} cannot capture CUDA "
            "graphs; use runtime.step_mode='eager' or 'compile'."
        )
    if precision == "fp16":
        _fail(
            f"`runtime.step_mode` is {step_mode!r} but fp16 autocast needs a gradient scaler, "
            "which only the eager step runs; use runtime.amp='bf16' or 'none', or "
            "runtime.step_mode='eager'."
        )
    if processes > 1:
        _fail(
            f"`runtime.step_mode` is {step_mode!r} but {processes} processes train together "
            "(their gradients are averaged inside the step); use runtime.step_mode='eager'."
        )


def _check_local_maps(config: ExperimentConfig) -> None:
    """Refuse a region pattern that does not fit the local stage's decoder feature maps."""
    from ..functional import local_region_positions

    local = config.local_stage
    if local.iterations == 0:
        return
    levels = len(config.model.channels)
    scale = 2 ** (levels - 1 - local.num_decoder_blocks)
    h, w = config.model.image_size
    try:
        local_region_positions(
            (h // scale, w // scale), region_size=local.region_size, num_regions=local.num_regions
        )
    except ValueError as err:
        _fail(
            f"`model.image_size` {config.model.image_size} gives local feature maps of "
            f"{h // scale}x{w // scale} after {local.num_decoder_blocks} decoder block(s), too "
            f"small for local_stage.num_regions={local.num_regions} with region_size="
            f"{local.region_size} ({err}); use a larger image or fewer regions."
        )


def _check_fidelity(config: ExperimentConfig) -> None:
    """Refuse fidelity items that cannot run at these settings."""
    side = min(config.model.image_size)
    if config.fidelity.fixed_crop and side < 70:
        _fail(
            f"`fidelity.fixed_crop` crops 100 x 100 pixels with a corner in [10, 69], which needs "
            f"images of at least 70 pixels a side; `model.image_size` is "
            f"{config.model.image_size}. Use fidelity.fixed_crop=false."
        )


def _check_pretraining_volumes(config: ExperimentConfig) -> None:
    """Refuse a pre-training batch of more distinct volumes than the paper's split holds."""
    from ..data.splits import SPLITS

    if config.dataset not in SPLITS:
        return
    available = len(SPLITS[config.dataset].pretrain)
    for name in ("global_stage", "local_stage"):
        section = getattr(config, name)
        if section.iterations == 0 or section.volumes_per_batch <= available:
            continue
        slices = section.volumes_per_batch * section.num_partitions
        _fail(
            f"`{name}.volumes_per_batch` = {section.volumes_per_batch} (a batch of {slices} "
            f"slices = volumes x {section.num_partitions} partitions) needs that many distinct "
            f"volumes per step, but {config.dataset!r} has {available} pre-training volumes: "
            f"each slice of a batch comes from its own (volume, partition), so the paper's "
            f"batch cannot be built here (Table 2's 450 slices would need "
            f"{-(-450 // section.num_partitions)}); use volumes_per_batch <= {available} "
            f"(at most {available * section.num_partitions} slices)."
        )
