"""The stages of the recipe: global pre-training, local pre-training, fine-tuning, baseline, joint.

Each stage takes pre-processed :class:`~contrastlocal.training.Volume` records and an
:class:`~contrastlocal.training.ExperimentConfig`, is seeded from ``config.seed``, shows a
progress bar, appends its metrics to ``<out>/metrics.jsonl``, writes atomic checkpoints every
``checkpoint_every`` iterations to ``<out>/checkpoints/`` and resumes from the newest one when
called again with the same settings (``resume=True``). A non-finite loss stops the stage with a
``FloatingPointError`` and leaves the last good checkpoint in place. The hand-over between stages
uses :func:`contrastlocal.models.transfer_encoder` / :func:`~contrastlocal.models.transfer_decoder`:
stage 2 receives the stage-1 encoder (then frozen), stage 3 the encoder and the l pre-trained
decoder blocks; projection heads and optimiser states are never carried over.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from .._validation import points_key
from ..data import augment
from ..data.slices import SliceDataset
from ..data.volumes import Volume
from ..functional import local_contrastive_loss
from ..functional._original import prepare_original_global_loss
from ..models import (
    GlobalPretrainNetwork,
    LocalPretrainNetwork,
    UNet,
    freeze_encoder,
    transfer_decoder,
    transfer_encoder,
)
from ..nn import GlobalContrastiveLoss
from ..samplers import PartitionBatchSampler
from . import _distributed
from ._authors_batches import (
    authors_batch_indices,
    authors_batch_views,
    authors_global_batch,
    authors_local_batch,
    authors_local_loss_arguments,
)
from ._distributed import to_device
from ._graphs import StepMode
from ._loop import LoopResult, LoopSpec, autocast_context, derive_seed, run_loop
from .checkpoint import load_checkpoint, load_weights, weights_fingerprint
from .config import (
    ExperimentConfig,
    FinetuneConfig,
    GlobalStageConfig,
    LocalStageConfig,
    ModelConfig,
    check_step_mode,
    config_to_dict,
    preset,
)
from .config import _check_fidelity as check_fidelity
from .evaluation import DATASET_DICE_DEFINITIONS, evaluate
from .fidelity import FidelityConfig

__all__ = [
    "StageResult",
    "build_unet",
    "finetune",
    "pretrain_global",
    "pretrain_joint",
    "pretrain_local",
    "train_baseline",
]

# stage codes mixed into the seeds, so stages draw independent random streams
_GLOBAL, _LOCAL, _FINETUNE, _JOINT = 1, 2, 3, 4


@dataclass
class StageResult:
    """What a stage returns.

    Attributes
    ----------
    network : torch.nn.Module
        The trained network: a ``GlobalPretrainNetwork`` (stage 1), a ``LocalPretrainNetwork``
        (stage 2, joint), or the ``UNet`` with the selected (best validation Dice) weights
        (fine-tuning, baseline).
    history : list of dict
        Training-loss records (one per ``log_every`` iterations of this call).
    validation : list of dict
        Validation records (fine-tuning).
    best_iteration, best_score : int or None, float or None
        Iteration and validation Dice of the selected fine-tuning checkpoint.
    seconds : float
        Wall time of this call's loop.
    iterations : int
        Iterations of the stage.
    resumed_from : int
        Iteration this call started from (0 for a fresh run).
    stage_dir : Path or None
        Output folder of the stage.
    copied_keys : list of str
        State-dict keys of `network` initialised from the previous stage (the hand-over).

    Examples
    --------
    >>> from torch import nn
    >>> from contrastlocal.training import StageResult
    >>> result = StageResult(nn.Linear(2, 2), iterations=100, seconds=4.0)
    >>> result.iterations_per_second
    25.0
    """

    network: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)
    best_iteration: int | None = None
    best_score: float | None = None
    seconds: float = 0.0
    iterations: int = 0
    resumed_from: int = 0
    stage_dir: Path | None = None
    copied_keys: list[str] = field(default_factory=list)

    @property
    def iterations_per_second(self) -> float:
        """Iterations of this call per second of wall time."""
        done = self.iterations - self.resumed_from
        return done / self.seconds if self.seconds > 0 else float("nan")


# ------------------------------------------------------------------------------------ set-up
_resolve_device = _distributed.resolve_device


@dataclass
class _Runtime:
    device: torch.device
    amp: str
    channels_last: bool
    compile: bool
    progress: bool
    scaler: Any
    sync_batchnorm: bool = False
    #: the autocast precision in effect ("fp32", "bf16", "fp16"), part of the resume key
    precision: str = "fp32"
    #: ``runtime.step_mode`` (checked by ``config.check_step_mode``)
    step_mode: StepMode = "eager"


def _runtime(config: ExperimentConfig, progress: bool | None) -> _Runtime:
    rt = config.runtime
    device = _distributed.local_device(_resolve_device(rt.device))  # torchrun: rank's GPU
    if rt.amp in ("fp16", "bf16") and device.type != "cuda":
        # never drop a precision silently: the run would record one it does not use
        msg = (
            f"`runtime.amp` is {rt.amp!r} but the device {str(device)!r} cannot run {rt.amp} "
            "autocast (only CUDA can); use runtime.amp='none' (fp32) or 'auto'."
        )
        raise ValueError(msg)
    if rt.num_threads is not None:
        torch.set_num_threads(rt.num_threads)  # restored by @_isolated when the stage returns
    amp = rt.amp if device.type == "cuda" and not config.fidelity.float32 else "none"
    channels_last = rt.channels_last if rt.channels_last is not None else device.type == "cuda"
    scaler = None
    precision = "fp32"
    if device.type == "cuda" and amp != "none":
        from ._loop import resolve_amp_dtype

        dtype = resolve_amp_dtype(device, amp)
        precision = "fp16" if dtype == torch.float16 else "bf16"
        if dtype == torch.float16:
            scaler = torch.amp.GradScaler("cuda")
    check_step_mode(rt.step_mode, str(device), precision, processes=_distributed.world_size())
    return _Runtime(
        device=device,
        amp=amp,
        channels_last=bool(channels_last),
        compile=rt.compile,
        progress=(rt.progress if progress is None else progress) and _distributed.is_main(),
        scaler=scaler,
        sync_batchnorm=rt.sync_batchnorm,
        precision=precision,
        step_mode=rt.step_mode,
    )


def build_unet(config: ExperimentConfig) -> UNet:
    """Build the segmentation network of `config` (the paper's UNet with ``config.model`` settings).

    Parameters
    ----------
    config : ExperimentConfig
        Its ``model`` section gives the channels, classes and input channels.

    Returns
    -------
    UNet
        A freshly initialised network (seed it with ``torch.manual_seed`` beforehand).

    Examples
    --------
    >>> from contrastlocal.training import build_unet, preset
    >>> build_unet(preset("synthetic")).channels
    (8, 16, 32, 32, 32)
    """
    m = config.model
    return UNet(in_channels=m.in_channels, out_channels=m.num_classes, channels=m.channels)


def _fingerprint(init: nn.Module | str | os.PathLike[str] | None) -> str | None:
    """Resume-key digest of the weights a stage starts from (module or checkpoint path)."""
    return weights_fingerprint(init if isinstance(init, (nn.Module, type(None))) else Path(init))


def _stage_dir(out: str | os.PathLike[str] | None) -> Path | None:
    return None if out is None else Path(out)


def _check_volumes(
    volumes: Sequence[Volume], name: str, config: ExperimentConfig, *, partitions: int = 1
) -> None:
    """Refuse volumes a stage cannot use, naming the case (not its position).

    `partitions`: the slices per volume a pre-training stage needs (its ``num_partitions``).
    """
    if len(volumes) == 0:
        msg = f"`{name}` must hold at least one volume; got none."
        raise ValueError(msg)
    for v in volumes:
        if not isinstance(v, Volume):
            msg = (
                f"`{name}` must hold contrastlocal.training.Volume records; got {type(v).__name__}."
            )
            raise TypeError(msg)
        shape = tuple(np.shape(v.image)[-2:])
        if shape != config.model.image_size:
            msg = (
                f"`{name}`: volume {v.case_id!r} has slices of size {shape}, but "
                f"`model.image_size` is {config.model.image_size}."
            )
            raise ValueError(msg)
        channels = 1 if np.ndim(v.image) == 3 else int(np.shape(v.image)[1])
        if channels != config.model.in_channels:
            msg = (
                f"`{name}`: volume {v.case_id!r} has {channels} channel(s), but "
                f"`model.in_channels` is {config.model.in_channels}."
            )
            raise ValueError(msg)
    short = [v.case_id for v in volumes if v.num_slices < partitions]
    if short:
        msg = (
            f"`{name}`: case(s) {short} have fewer slices than the {partitions} partitions of "
            "pre-training (every partition needs a slice of each volume); drop these cases or "
            "lower num_partitions."
        )
        raise ValueError(msg)


def _with_overrides(
    config: ExperimentConfig | None, section: str, overrides: Mapping[str, Any]
) -> ExperimentConfig:
    cfg = preset("synthetic") if config is None else config
    if not isinstance(cfg, ExperimentConfig):
        msg = f"`config` must be an ExperimentConfig or None; got {type(cfg).__name__}."
        raise TypeError(msg)
    return cfg.replace(**{section: dict(overrides)}) if overrides else cfg


class _SliceBank:
    """All slices of some volumes, on the training device, with their metadata."""

    def __init__(
        self, volumes: Sequence[Volume], num_partitions: int, device: torch.device
    ) -> None:
        labelled = all(v.label is not None for v in volumes)
        ds = SliceDataset.from_volumes(
            [np.asarray(v.image, dtype=np.float32) for v in volumes],
            [np.asarray(v.label) for v in volumes] if labelled else None,
            num_partitions=num_partitions,
        )
        self.dataset = ds
        everything = ds.get_batch(np.arange(len(ds)))
        self.tensors = {k: t.to(device) for k, t in everything.items()}
        self.device = device

    def batch(self, indices: Sequence[int] | npt.NDArray[np.int64]) -> dict[str, torch.Tensor]:
        idx = to_device(np.asarray(indices, dtype=np.int64), self.device)
        return {k: t.index_select(0, idx) for k, t in self.tensors.items()}


class _SamplerStream:
    """Batch ``it`` of a partition sampler: epoch ``it // len``, position ``it % len``."""

    def __init__(self, sampler: PartitionBatchSampler) -> None:
        self.sampler = sampler
        self._epoch = -1
        self._batches: list[list[int]] = []

    def __call__(self, iteration: int) -> list[int]:
        epoch, position = divmod(iteration, len(self.sampler))
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._batches = list(self.sampler)  # type: ignore[arg-type]
            self._epoch = epoch
        return self._batches[position]

    def position(self, iteration: int) -> dict[str, int]:
        epoch, position = divmod(iteration, len(self.sampler))
        return {"epoch": epoch, "position": position, "batches_per_epoch": len(self.sampler)}


def _partition_stream(
    volumes: Sequence[Volume],
    section: GlobalStageConfig | LocalStageConfig,
    device: torch.device,
    seed: int,
    tag: int,
) -> tuple[_SliceBank, _SamplerStream]:
    """Build a pre-training stage's slice bank and sharded partition-batch stream; seed torch."""
    _check_pretraining_batch(len(volumes), section)
    bank = _SliceBank(volumes, section.num_partitions, device)
    stream = _SamplerStream(
        PartitionBatchSampler(
            bank.dataset.slices_per_volume,
            num_partitions=section.num_partitions,
            volumes_per_batch=section.volumes_per_batch,
            seed=derive_seed(seed, tag) % (2**31),
            num_replicas=_distributed.world_size(),
            rank=_distributed.rank(),
        )
    )
    torch.manual_seed(derive_seed(seed, tag, 0))
    return bank, stream


def _check_pretraining_batch(
    num_volumes: int, section: GlobalStageConfig | LocalStageConfig
) -> None:
    """Refuse, before training, a batch of more distinct volumes than there are (Table 2's 450)."""
    need = section.volumes_per_batch * _distributed.world_size()
    if need <= num_volumes:
        return
    name = "global_stage" if isinstance(section, GlobalStageConfig) else "local_stage"
    slices = section.volumes_per_batch * section.num_partitions
    largest = num_volumes // _distributed.world_size()
    msg = (
        f"`{name}.volumes_per_batch` = {section.volumes_per_batch} (a batch of {slices} slices = "
        f"volumes x {section.num_partitions} partitions) needs {need} distinct pre-training "
        f"volumes per step, but there are {num_volumes}: every slice of a batch comes from its "
        f"own (volume, partition), so the batch cannot be filled; use volumes_per_batch <= "
        f"{largest} (at most {largest * section.num_partitions} slices) or more volumes."
    )
    raise ValueError(msg)


def _fidelity_settings(fid: FidelityConfig) -> dict[str, Any]:
    """Return the switched-on fidelity items, for a stage's resume key (none: "paper")."""
    on = [k for k, v in fid.to_dict().items() if v is True]
    return {"fidelity": on} if on else {}


def _view_options(fid: FidelityConfig, kind: str) -> dict[str, Any]:
    """Keywords of the view functions for the fidelity's shared intensity and fixed crop."""
    options: dict[str, Any] = {}
    if kind.startswith("colour_"):
        return options  # the authors' code has no Cityscapes recipe: nothing to reproduce
    if fid.shared_intensity:
        options["shared"] = True
    if fid.fixed_crop and kind == "global":
        options["crop_pixels"] = 100
    return options


def _view_kind(config: ExperimentConfig, kind: str) -> Any:
    """``"global"``/``"local"``, or their colour-jittered kinds for Cityscapes (the paper's)."""
    return f"colour_{kind}" if config.dataset == "cityscapes" else kind


def _cityscapes_crop(model: ModelConfig) -> tuple[int, int]:
    """Return the Cityscapes fine-tuning crop: 3/4 of each side, a multiple of the UNet's factor.

    192 x 384 of 256 x 512 (the paper states no size).
    """
    factor = 2 ** (len(model.channels) - 1)
    h, w = model.image_size
    return (max(factor, (3 * h // 4) // factor * factor),
            max(factor, (3 * w // 4) // factor * factor))


def _device_arguments(arguments: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Make the authors' local-loss arguments once for every step.

    The weights go to the device and the region tables become tuple keys, so the step makes no
    host-to-device copy (it can be captured, and it does not wait for the device).
    """
    return {
        **arguments,
        "positive_weights": to_device(arguments["positive_weights"], device),
        "positions": points_key(arguments["positions"]),
        "negative_positions": tuple(points_key(row) for row in arguments["negative_positions"]),
    }


def _adam(params: Any, learning_rate: float, rt: _Runtime) -> torch.optim.Adam:
    """Build a stage's Adam (capturable for ``step_mode="cuda_graph"``: steps kept on the GPU)."""
    if rt.step_mode == "cuda_graph":
        return torch.optim.Adam(params, lr=learning_rate, capturable=True)
    return torch.optim.Adam(params, lr=learning_rate)


def _generator(device: torch.device, *parts: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(*parts, *_distributed.seed_suffix()))
    return gen


def _prepare_module(net: nn.Module, rt: _Runtime) -> nn.Module:
    net.to(rt.device)
    if rt.channels_last:
        net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return net


def _forward_fn(
    net: nn.Module, rt: _Runtime, *, ddp: bool = True, find_unused: bool = False
) -> tuple[Callable[[torch.Tensor], torch.Tensor], frozenset[int]]:
    """Return a stage's forward function and the ids of the parameters its DDP wrapper averages.

    Several processes: `net` goes through DDP (``ddp=False``: the loop averages the gradients
    instead). ``runtime.compile`` compiles the module the stage forwards through, i.e. the DDP
    wrapper itself (torch's documented order), so the compiled step still averages gradients.
    """
    wrapped = (
        _distributed.wrap(
            net, rt.device, sync_batchnorm=rt.sync_batchnorm, find_unused=find_unused
        )
        if ddp
        else _distributed.Wrapped(net)
    )
    fn: Callable[[torch.Tensor], torch.Tensor] = wrapped.module
    if rt.compile:
        fn = torch.compile(wrapped.module)  # type: ignore[assignment]
    return fn, wrapped.managed


_F = TypeVar("_F", bound=Callable[..., Any])


def _isolated(stage: _F) -> _F:
    """Run `stage` without leaving global state behind (the caller's RNG and thread count).

    A stage seeds torch's default generator (network initialisation draws from it) and may set
    ``runtime.num_threads``; both happen inside :func:`torch.random.fork_rng` and the thread
    count is restored on return, so calling a stage never changes the caller's random stream
    or thread pool.
    """

    @functools.wraps(stage)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        threads = torch.get_num_threads()
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        try:
            with torch.random.fork_rng(devices=devices):
                return stage(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper  # type: ignore[return-value]


def _images(x: torch.Tensor, rt: _Runtime) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if rt.channels_last else x


def _settings(
    config: ExperimentConfig, section: str, volumes: Sequence[Volume], **extra: Any
) -> dict[str, Any]:
    return {
        "seed": config.seed,
        "model": config_to_dict(config.model),
        "volumes": [v.case_id for v in volumes],
        "num_slices": [v.num_slices for v in volumes],
        **config_to_dict(getattr(config, section)),
        **_fidelity_settings(config.fidelity),
        **extra,
    }


def _loop_options(
    section: GlobalStageConfig | LocalStageConfig | FinetuneConfig,
    rt: _Runtime,
    out: str | os.PathLike[str] | None,
    resume: bool,
    callback: Callable[[int, dict[str, Any]], None] | None,
    upstream: str | None = None,
) -> dict[str, Any]:
    """Return the ``LoopSpec`` fields every stage fills alike: schedule, runtime and output."""
    return {
        "iterations": section.iterations,
        "log_every": section.log_every,
        "checkpoint_every": section.checkpoint_every,
        "device": rt.device,
        "stage_dir": _stage_dir(out),
        "resume": resume,
        "progress": rt.progress,
        "scaler": rt.scaler,
        "callback": callback,
        "upstream": upstream,
        "precision": rt.precision,
        "step_mode": rt.step_mode,
    }


def _result(
    net: nn.Module, loop: LoopResult, out: str | os.PathLike[str] | None, copied: list[str]
) -> StageResult:
    return StageResult(
        network=net,
        history=loop.history,
        validation=loop.validation,
        best_iteration=loop.best_iteration,
        best_score=loop.best_score,
        seconds=loop.seconds,
        iterations=loop.iterations,
        resumed_from=loop.resumed_from,
        stage_dir=_stage_dir(out),
        copied_keys=copied,
    )


def _global_network(unet: UNet, model: ModelConfig) -> GlobalPretrainNetwork:
    """Build the stage-1 network (encoder + g_1) around `unet`, sized by the ``model`` settings."""
    return GlobalPretrainNetwork(
        unet, model.image_size, model.global_hidden_features, model.global_out_features
    )


def _global_criterion(section: GlobalStageConfig) -> GlobalContrastiveLoss:
    return GlobalContrastiveLoss(
        strategy=section.strategy,
        temperature=section.temperature,
        gather_distributed=_distributed.active(),
        check_pairs=False,  # two views of each slice per batch: pairs guaranteed, no per-step check
    )


def _network_from_checkpoint(path: str | Path, config: ExperimentConfig) -> nn.Module:
    """Rebuild the stage network saved in `path` (final.pt / best.pt) and load its weights."""
    data = load_checkpoint(path)
    arch = data.get("architecture", {})
    cls = arch.get("class")
    unet = build_unet(config)
    net: nn.Module
    if cls == "GlobalPretrainNetwork":
        net = _global_network(unet, config.model)
    elif cls == "LocalPretrainNetwork":
        net = LocalPretrainNetwork(unet, config.local_stage.num_decoder_blocks)
    elif cls == "UNet":
        net = unet
    else:
        msg = (
            f"checkpoint {os.fspath(path)!r} holds no stage network (class {cls!r}); expected "
            "a final.pt or best.pt written by a stage."
        )
        raise ValueError(msg)
    load_weights(net, path)
    return net


# ------------------------------------------------------------------------------------ stage 1
@_isolated
def pretrain_global(
    volumes: Sequence[Volume],
    config: ExperimentConfig | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: bool | None = None,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
    **overrides: Any,
) -> StageResult:
    """Stage 1: train the encoder and g_1 with a global contrastive loss.

    Parameters
    ----------
    volumes : sequence of Volume
        Unlabelled pre-training volumes (processed slices; labels are ignored).
    config : ExperimentConfig, optional
        Settings (default: the ``"synthetic"`` preset); ``config.global_stage`` drives the stage.
    out : path, optional
        Stage folder for ``metrics.jsonl``, ``checkpoints/`` and ``final.pt``; None keeps
        everything in memory (no resume).
    resume : bool, default True
        Continue from the newest checkpoint in `out` (it must have the same settings).
    progress : bool, optional
        Progress bar (default ``config.runtime.progress``; shown only on a terminal).
    callback : callable, optional
        Called as ``callback(iteration, record)`` after every iteration (record is the logged
        dict on logging iterations, else empty).
    **overrides : Any
        Settings of ``config.global_stage`` to change (e.g. ``iterations=100``).

    Returns
    -------
    StageResult
        ``network`` is the trained :class:`~contrastlocal.models.GlobalPretrainNetwork`.

    Raises
    ------
    ValueError
        For a bad setting, too few volumes for a batch, or a checkpoint of other settings.
    FloatingPointError
        If the loss becomes non-finite.

    Notes
    -----
    Each batch holds ``volumes_per_batch`` volumes × S partitions (one slice drawn in each) and
    two views of each slice (random crop-and-resize + brightness/contrast), i.e.
    ``2 · volumes_per_batch · S`` rows.

    References
    ----------
    Chaitanya et al., "Contrastive learning of global and local features for medical image
    segmentation with limited annotations", NeurIPS 2020, arXiv:2006.10511.

    Examples
    --------
    >>> import numpy as np
    >>> from contrastlocal.training import Volume, preset, pretrain_global
    >>> rng = np.random.default_rng(0)
    >>> volumes = [Volume(rng.random((8, 32, 32), dtype=np.float32),
    ...                   rng.integers(0, 4, (8, 32, 32)).astype(np.uint8), case_id=str(i))
    ...            for i in range(4)]
    >>> config = preset("synthetic", **{"model.image_size": (32, 32),
    ...                                 "model.channels": (4, 8, 8, 8, 8, 8),
    ...                                 "global_stage.volumes_per_batch": 2,
    ...                                 "local_stage.volumes_per_batch": 2,
    ...                                 "runtime.progress": False})
    >>> result = pretrain_global(volumes, config, iterations=2)
    >>> type(result.network).__name__, result.iterations
    ('GlobalPretrainNetwork', 2)
    """
    cfg = _with_overrides(config, "global_stage", overrides)
    st = cfg.global_stage
    _check_volumes(volumes, "volumes", cfg, partitions=st.num_partitions)
    check_fidelity(cfg)
    rt = _runtime(cfg, progress)
    bank, stream = _partition_stream(volumes, st, rt.device, cfg.seed, _GLOBAL)
    net = _global_network(build_unet(cfg), cfg.model)
    _prepare_module(net, rt)
    forward, managed = _forward_fn(net, rt, find_unused=True)  # decoder and head: unused
    criterion = _global_criterion(st)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = _adam(params, st.learning_rate, rt)
    fid = cfg.fidelity
    kind = _view_kind(cfg, "global")
    options = _view_options(fid, kind)
    if fid.global_loss or (fid.random_slices and st.strategy == "random"):
        batch_of, loss_of = _authors_global_step(cfg, bank, forward, criterion, rt, options)
    else:

        def batch_of(it: int) -> tuple[torch.Tensor, ...]:
            batch = bank.batch(stream(it))
            gen = _generator(rt.device, cfg.seed, _GLOBAL, it)
            views = augment.two_views(batch, gen, kind=kind, **options)
            return views["images"], views["image_ids"], views["partition_ids"]

        def loss_of(*inputs: torch.Tensor) -> torch.Tensor:
            images, image_ids, partition_ids = inputs
            with autocast_context(rt.device, rt.amp, step_mode=rt.step_mode):
                embeddings = forward(_images(images, rt))
            loss: torch.Tensor = criterion(embeddings.float(), image_ids, partition_ids)
            return loss

    loop = run_loop(
        LoopSpec(
            name="global",
            model=net,
            optimizer=optimizer,
            batch=batch_of,
            loss=loss_of,
            settings=_settings(cfg, "global_stage", volumes),
            sampler_position=stream.position,
            ddp_managed=managed,
            **_loop_options(st, rt, out, resume, callback),
        )
    )
    return _result(net, loop, out, [])


def _authors_global_step(
    cfg: ExperimentConfig,
    bank: _SliceBank,
    forward: Callable[[torch.Tensor], torch.Tensor],
    criterion: nn.Module,
    rt: _Runtime,
    options: dict[str, Any],
) -> tuple[Callable[[int], tuple[torch.Tensor, ...]], Callable[..., torch.Tensor]]:
    """Stage-1 batch and loss on the authors' batch (``fidelity.global_loss`` / ``random_slices``).

    B = ``volumes_per_batch × num_partitions`` slices; the rows, views and blank rows of
    :func:`authors_global_batch`, drawn from a generator seeded by (seed, stage, iteration); the
    loss is :func:`~contrastlocal.functional.original_global_loss` with ``global_loss``, else the
    package's loss on the same rows (G^R on random slices).
    """
    st, fid = cfg.global_stage, cfg.fidelity
    depths = bank.dataset.slices_per_volume
    batch_size = st.volumes_per_batch * st.num_partitions

    def rows_of(it: int) -> dict[str, npt.NDArray[Any]]:
        rng = np.random.default_rng([cfg.seed, _GLOBAL, it, *_distributed.seed_suffix()])
        return authors_global_batch(
            st.strategy, batch_size, depths, rng,
            num_partitions=st.num_partitions, blank_rows=fid.blank_rows,
        )

    first = rows_of(0)  # a batch that cannot be built fails here, before training
    # the authors' loss for this setting, checked and its tables on the device once: the step
    # itself is array operations only (traced by torch.compile, captured in a CUDA graph)
    authors_loss = None if not fid.global_loss else prepare_original_global_loss(
        torch.empty(len(first["view"]), 1, device=rt.device), strategy=st.strategy,
        batch_size=batch_size, num_partitions=st.num_partitions, temperature=st.temperature,
    )

    def batch(it: int) -> tuple[torch.Tensor, ...]:
        rows = rows_of(it)
        gen = _generator(rt.device, cfg.seed, _GLOBAL, it)
        x = bank.batch(np.maximum(authors_batch_indices(rows, depths), 0))["images"]
        images = authors_batch_views(x, rows, gen, **options)
        if fid.global_loss:
            return (images,)
        ids = to_device(rows["image"], rt.device)
        return images, ids, to_device(rows["partition"], rt.device)

    def loss_of(images: torch.Tensor, *ids: torch.Tensor) -> torch.Tensor:
        with autocast_context(rt.device, rt.amp, step_mode=rt.step_mode):
            embeddings = forward(_images(images, rt))
        if authors_loss is not None:
            loss: torch.Tensor = authors_loss(embeddings.float())
            return loss
        out: torch.Tensor = criterion(embeddings.float(), *ids)
        return out

    return batch, loss_of


# ------------------------------------------------------------------------------------ stage 2
def _encoder_source(
    encoder: nn.Module | str | os.PathLike[str] | None, config: ExperimentConfig
) -> nn.Module | None:
    if encoder is None or isinstance(encoder, nn.Module):
        return encoder
    return _network_from_checkpoint(Path(encoder), config)


def _local_criterion(
    section: LocalStageConfig, net: LocalPretrainNetwork, image_size: tuple[int, int]
) -> nn.Module:
    """Build the local loss of `section` (with its learned projection) for `net`'s features."""
    from ..nn import LocalContrastiveLoss

    return LocalContrastiveLoss(
        strategy=section.strategy,
        region_size=section.region_size,
        num_regions=section.num_regions,
        in_channels=net.feature_shape(image_size)[0],
        projection_dim=section.projection_dim,
        temperature=section.temperature,
        gather_distributed=_distributed.active(),
        check_pairs=False,  # the stage's batches hold two views of each image: pairs guaranteed
    )


class _LocalStage(nn.Module):
    """Stage-2 trainable state: the network and the loss's learned region projection."""

    def __init__(self, network: LocalPretrainNetwork, criterion: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.criterion = criterion


@_isolated
def pretrain_local(
    volumes: Sequence[Volume],
    config: ExperimentConfig | None = None,
    *,
    encoder: nn.Module | str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: bool | None = None,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
    **overrides: Any,
) -> StageResult:
    """Stage 2: train l decoder blocks and g_2 with a local loss on top of the frozen encoder.

    Parameters
    ----------
    volumes : sequence of Volume
        Unlabelled pre-training volumes.
    config : ExperimentConfig, optional
        Settings (default: the ``"synthetic"`` preset); ``config.local_stage`` drives the stage.
    encoder : torch.nn.Module or path, optional
        Where the encoder comes from: the stage-1 network (or any UNet / stage network), or the
        path of a stage checkpoint (``final.pt``); None keeps a random encoder.
    out, resume, progress, callback : path, bool, bool, callable, optional
        As in :func:`pretrain_global`.
    **overrides : Any
        Settings of ``config.local_stage`` to change.

    Returns
    -------
    StageResult
        ``network`` is the trained :class:`~contrastlocal.models.LocalPretrainNetwork`;
        ``copied_keys`` the encoder keys received from `encoder`.

    Raises
    ------
    ValueError
        For a bad setting, an encoder of another architecture, or a checkpoint of other settings.
    FloatingPointError
        If the loss becomes non-finite.

    Notes
    -----
    The views are intensity-only (pixel-aligned), as the local loss matches regions at equal
    positions. The encoder's parameters are frozen; with ``encoder_batchnorm="batch_stats"``
    (the original) its batch norm still normalises with the batch's statistics.

    References
    ----------
    Chaitanya et al., "Contrastive learning of global and local features for medical image
    segmentation with limited annotations", NeurIPS 2020, arXiv:2006.10511.

    Examples
    --------
    >>> import numpy as np
    >>> from contrastlocal.training import Volume, preset, pretrain_local
    >>> rng = np.random.default_rng(0)
    >>> volumes = [Volume(rng.random((8, 32, 32), dtype=np.float32),
    ...                   rng.integers(0, 4, (8, 32, 32)).astype(np.uint8), case_id=str(i))
    ...            for i in range(4)]
    >>> config = preset("synthetic", **{"model.image_size": (32, 32),
    ...                                 "model.channels": (4, 8, 8, 8, 8, 8),
    ...                                 "global_stage.volumes_per_batch": 2,
    ...                                 "local_stage.volumes_per_batch": 2,
    ...                                 "runtime.progress": False})
    >>> result = pretrain_local(volumes, config, iterations=2)  # random encoder here
    >>> type(result.network).__name__, result.iterations
    ('LocalPretrainNetwork', 2)
    """
    cfg = _with_overrides(config, "local_stage", overrides)
    st = cfg.local_stage
    _check_volumes(volumes, "volumes", cfg, partitions=st.num_partitions)
    rt = _runtime(cfg, progress)
    source = _encoder_source(encoder, cfg)
    bank, stream = _partition_stream(volumes, st, rt.device, cfg.seed, _LOCAL)
    net = LocalPretrainNetwork(build_unet(cfg), st.num_decoder_blocks)
    fid = cfg.fidelity
    buffers = not fid.skip_running_stats
    copied = [] if source is None else transfer_encoder(source, net, include_buffers=buffers)
    freeze_encoder(net, batchnorm=st.encoder_batchnorm)
    criterion = _local_criterion(st, net, cfg.model.image_size)
    holder = _LocalStage(net, criterion)
    _prepare_module(holder, rt)
    forward, managed = _forward_fn(net, rt, find_unused=True)  # later decoder blocks: unused
    params = [p for p in holder.parameters() if p.requires_grad]
    optimizer = _adam(params, st.learning_rate, rt)
    kind = _view_kind(cfg, "local")
    options = _view_options(fid, kind)
    depths = bank.dataset.slices_per_volume

    def rows_of(it: int) -> dict[str, npt.NDArray[Any]]:
        rng = np.random.default_rng([cfg.seed, _LOCAL, it, *_distributed.seed_suffix()])
        return authors_local_batch(st.strategy, depths, rng)

    if fid.local_batch:
        rows_of(0)  # a batch that cannot be built fails here, before training
    if fid.local_loss:
        _, height, width = net.feature_shape(cfg.model.image_size)
        authors_arguments = _device_arguments(
            authors_local_loss_arguments(
                st.strategy, (height, width), region_size=st.region_size,
                num_regions=st.num_regions,
            ),
            rt.device,
        )

    def batch(it: int) -> tuple[torch.Tensor, ...]:
        gen = _generator(rt.device, cfg.seed, _LOCAL, it)
        if fid.local_batch:  # the authors' stage-2 batch (L^R: 10 slices, L^D: 3 x 4)
            rows = rows_of(it)
            x = bank.batch(authors_batch_indices(rows, depths))["images"]
            images = authors_batch_views(x, rows, gen, kind="local", **options)
            ids = [to_device(rows[k], rt.device) for k in ("image", "partition", "volume")]
            return (images, *ids)
        views = augment.two_views(bank.batch(stream(it)), gen, kind=kind, **options)
        return tuple(views[k] for k in ("images", "image_ids", "partition_ids", "volume_ids"))

    def loss_of(*inputs: torch.Tensor) -> torch.Tensor:
        images, image_ids, partition_ids, volume_ids = inputs
        with autocast_context(rt.device, rt.amp, step_mode=rt.step_mode):
            features = forward(_images(images, rt))
        if fid.local_loss:  # needs local_batch (FidelityConfig checks): their pairing, J, 24·R
            authors: torch.Tensor = local_contrastive_loss(
                features.float(), region_size=st.region_size, projection=criterion.projection,
                temperature=st.temperature, **authors_arguments,
            )
            return authors
        loss: torch.Tensor = criterion(features.float(), image_ids, partition_ids, volume_ids)
        return loss

    loop = run_loop(
        LoopSpec(
            name="local",
            model=holder,
            optimizer=optimizer,
            batch=batch,
            loss=loss_of,
            settings=_settings(cfg, "local_stage", volumes, encoder=bool(copied)),
            sampler_position=stream.position,
            export=net,
            ddp_managed=managed,
            **_loop_options(st, rt, out, resume, callback, weights_fingerprint(source)),
        )
    )
    return _result(net, loop, out, copied)


# ------------------------------------------------------------------------------------ joint
class _JointStage(nn.Module):
    """One backbone with both projection heads and the local loss's projection."""

    def __init__(
        self,
        global_net: GlobalPretrainNetwork,
        local_net: LocalPretrainNetwork,
        criterion: nn.Module,
    ) -> None:
        super().__init__()
        self.global_net = global_net
        self.local_net = local_net
        self.criterion = criterion


@_isolated
def pretrain_joint(
    volumes: Sequence[Volume],
    config: ExperimentConfig | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: bool | None = None,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
    **overrides: Any,
) -> StageResult:
    """Pre-train encoder and l decoder blocks at once with L_g + λ_l·L_l (the seed's Table 7).

    Parameters
    ----------
    volumes : sequence of Volume
        Unlabelled pre-training volumes.
    config : ExperimentConfig, optional
        Settings: ``global_stage`` gives the iterations, learning rate, batch and global loss,
        ``local_stage`` the local loss, l and ``lambda_local``.
    out, resume, progress, callback : path, bool, bool, callable, optional
        As in :func:`pretrain_global`.
    **overrides : Any
        Settings of ``config.local_stage`` to change (e.g. ``lambda_local=10.0``).

    Returns
    -------
    StageResult
        ``network`` is a :class:`~contrastlocal.models.LocalPretrainNetwork` (encoder and l
        decoder blocks trained jointly), ready for :func:`finetune`.

    Raises
    ------
    ValueError
        For a bad setting.
    FloatingPointError
        If the loss becomes non-finite.

    Notes
    -----
    Every batch is embedded twice: global views (crop + intensity) through the encoder and g_1
    for L_g, intensity-only views through the encoder, l decoder blocks and g_2 for L_l. Nothing
    is frozen.

    Examples
    --------
    >>> import numpy as np
    >>> from contrastlocal.training import Volume, preset, pretrain_joint
    >>> rng = np.random.default_rng(0)
    >>> volumes = [Volume(rng.random((8, 32, 32), dtype=np.float32),
    ...                   rng.integers(0, 4, (8, 32, 32)).astype(np.uint8), case_id=str(i))
    ...            for i in range(4)]
    >>> config = preset("synthetic", **{"model.image_size": (32, 32),
    ...                                 "model.channels": (4, 8, 8, 8, 8, 8),
    ...                                 "global_stage.volumes_per_batch": 2,
    ...                                 "local_stage.volumes_per_batch": 2,
    ...                                 "runtime.progress": False})
    >>> config = config.replace(global_stage={"iterations": 2})
    >>> result = pretrain_joint(volumes, config)
    >>> type(result.network).__name__, result.iterations
    ('LocalPretrainNetwork', 2)
    """
    cfg = _with_overrides(config, "local_stage", overrides)
    gs, ls = cfg.global_stage, cfg.local_stage
    _check_volumes(volumes, "volumes", cfg, partitions=gs.num_partitions)
    check_fidelity(cfg)
    rt = _runtime(cfg, progress)
    bank, stream = _partition_stream(volumes, gs, rt.device, cfg.seed, _JOINT)
    unet = build_unet(cfg)
    global_net = _global_network(unet, cfg.model)
    local_net = LocalPretrainNetwork(unet, ls.num_decoder_blocks)
    local_criterion = _local_criterion(ls, local_net, cfg.model.image_size)
    holder = _JointStage(global_net, local_net, local_criterion)
    _prepare_module(holder, rt)
    # two forward passes through one UNet per step: no DDP wrapper, averaged by the loop
    global_forward, _ = _forward_fn(global_net, rt, ddp=False)
    local_forward, _ = _forward_fn(local_net, rt, ddp=False)
    global_criterion = _global_criterion(gs)
    optimizer = _adam(holder.parameters(), gs.learning_rate, rt)
    weight = ls.lambda_local

    global_kind, local_kind = _view_kind(cfg, "global"), _view_kind(cfg, "local")
    global_options = _view_options(cfg.fidelity, global_kind)
    local_options = _view_options(cfg.fidelity, local_kind)

    def batch_of(it: int) -> tuple[torch.Tensor, ...]:
        batch = bank.batch(stream(it))
        gen = _generator(rt.device, cfg.seed, _JOINT, it)
        gv = augment.two_views(batch, gen, kind=global_kind, **global_options)
        lv = augment.two_views(batch, gen, kind=local_kind, **local_options)
        return (
            *(gv[k] for k in ("images", "image_ids", "partition_ids")),
            *(lv[k] for k in ("images", "image_ids", "partition_ids", "volume_ids")),
        )

    def loss_of(*inputs: torch.Tensor) -> torch.Tensor:
        g_images, g_ids, g_parts, l_images, l_ids, l_parts, l_volumes = inputs
        with autocast_context(rt.device, rt.amp, step_mode=rt.step_mode):
            emb = global_forward(_images(g_images, rt))
            feats = local_forward(_images(l_images, rt))
        lg = global_criterion(emb.float(), g_ids, g_parts)
        ll = local_criterion(feats.float(), l_ids, l_parts, l_volumes)
        total: torch.Tensor = lg + weight * ll
        return total

    loop = run_loop(
        LoopSpec(
            name="joint",
            model=holder,
            optimizer=optimizer,
            batch=batch_of,
            loss=loss_of,
            settings=_settings(
                cfg, "local_stage", volumes, global_stage=config_to_dict(cfg.global_stage)
            ),
            sampler_position=stream.position,
            export=local_net,
            **_loop_options(gs, rt, out, resume, callback),
        )
    )
    return _result(local_net, loop, out, [])


# ------------------------------------------------------------------------------------ stage 3
def _initialise(
    unet: UNet, init: nn.Module | str | os.PathLike[str] | None, config: ExperimentConfig
) -> list[str]:
    source = _encoder_source(init, config)
    if source is None:
        return []
    inner = getattr(source, "_orig_mod", source)
    buffers = not config.fidelity.skip_running_stats  # the authors copy no running averages
    if isinstance(inner, LocalPretrainNetwork):
        return transfer_decoder(inner, unet, include_buffers=buffers)
    if isinstance(inner, GlobalPretrainNetwork):
        return transfer_encoder(inner, unet, include_buffers=buffers)
    if isinstance(inner, UNet):
        blocks = inner.num_decoder_blocks
        keys = transfer_decoder(inner, unet, blocks)
        with torch.no_grad():
            for name, tensor in unet.head.state_dict(keep_vars=True).items():
                tensor.copy_(inner.head.state_dict()[name])
        return keys + [f"head.{k}" for k in unet.head.state_dict()]
    msg = (
        "`init` must be a GlobalPretrainNetwork, LocalPretrainNetwork, UNet, a stage checkpoint "
        f"path or None; got {type(init).__name__}."
    )
    raise TypeError(msg)


def _one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(labels.long(), num_classes).permute(0, 3, 1, 2).float()


def _segmentation_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Soft Dice (per slice and class, mean) or cross-entropy against (soft) one-hot targets."""
    logits = logits.float()
    if kind == "cross_entropy":
        return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    probs = torch.softmax(logits, dim=1)
    dims = (2, 3)
    inter = (probs * target).sum(dims)
    denom = probs.sum(dims) + target.sum(dims)
    dice = 2.0 * inter / (denom + 1e-10)
    if kind == "dice_foreground":
        dice = dice[:, 1:]
    return 1.0 - dice.mean()


def _finetune_inputs(
    cfg: ExperimentConfig, bank: _SliceBank, device: torch.device, it: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fine-tuning batch `it` of `bank`: images and (soft) one-hot targets, augmented.

    ``batch_size`` slices drawn uniformly with replacement from (seed, iteration); then, with
    ``augment``, the Cityscapes crop and colour jitter, the authors' soft-label warp or the
    geometric augmentation (``fidelity``), and with ``mixup`` the blend; all random draws from
    generators seeded by (seed, stage, iteration). Shared by :func:`finetune` and the grouped
    driver, so a cell trains on the same batches either way.
    """
    st, fid = cfg.finetune, cfg.fidelity
    num_classes = cfg.model.num_classes
    rng = np.random.default_rng([cfg.seed, _FINETUNE, it, *_distributed.seed_suffix()])
    batch = bank.batch(rng.integers(0, len(bank.dataset), size=st.batch_size))
    gen = _generator(device, cfg.seed, _FINETUNE, it)
    images, labels = batch["images"], batch["labels"]
    target: torch.Tensor | None = None
    if st.augment and cfg.dataset == "cityscapes":  # the paper's recipe: crop, colour jitter
        images, aug_labels = augment.cityscapes_finetune_augment(
            images, labels, gen, size=_cityscapes_crop(cfg.model)
        )
        assert aug_labels is not None
        labels = aug_labels
    elif st.augment and fid.soft_label_warp:  # soft one-hot targets, as the authors'
        images, target = augment.authors_geometric_augment(
            images, labels, gen, num_classes=num_classes, elastic_tail=fid.elastic_tail
        )
    elif st.augment:
        images, aug_labels = augment.geometric_augment(
            images, labels, gen, elastic_tail=fid.elastic_tail
        )
        assert aug_labels is not None
        labels = aug_labels
    if target is None:
        target = _one_hot(labels, num_classes)
    if st.mixup:
        images, target = augment.mixup(images, target, gen, alpha=st.mixup_alpha)
    return images, target


def _finetune_validation(
    net: nn.Module, val: Sequence[Volume], cfg: ExperimentConfig, rt: _Runtime, it: int
) -> dict[str, Any]:
    """Validate a fine-tuning run: mean foreground 3D Dice (the dataset's definition)."""
    res = evaluate(
        net,
        val,
        num_classes=cfg.model.num_classes,
        batch_size=cfg.finetune.eval_batch_size,
        device=rt.device,
        amp=rt.amp,
        channels_last=rt.channels_last,
        compute_hd95=False,
        dice_definition=DATASET_DICE_DEFINITIONS.get(cfg.dataset),
    )
    return {
        "val_dice": res.mean_dice,
        "val_dice_per_class": res.dice[:, 1:].mean(axis=0).tolist(),
    }


@_isolated
def finetune(
    train: Sequence[Volume],
    val: Sequence[Volume],
    config: ExperimentConfig | None = None,
    *,
    init: nn.Module | str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: bool | None = None,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
    **overrides: Any,
) -> StageResult:
    """Stage 3: fine-tune the whole UNet on labelled volumes; keep the best validation Dice.

    Parameters
    ----------
    train : sequence of Volume
        Labelled training volumes (|X_tr| of them).
    val : sequence of Volume
        Labelled validation volumes; every ``validate_every`` iterations their mean foreground
        3D Dice (at native resolution where a geometry is known) is computed and the best
        weights are kept. Empty: no validation, the last weights are returned.
    config : ExperimentConfig, optional
        Settings (default: the ``"synthetic"`` preset); ``config.finetune`` drives the stage.
    init : torch.nn.Module or path, optional
        Initialisation: a stage-2 ``LocalPretrainNetwork`` (encoder + its l decoder blocks are
        copied), a stage-1 ``GlobalPretrainNetwork`` (encoder only), a ``UNet`` (everything), a
        stage checkpoint path, or None (random: the baseline). Remaining blocks and the head
        keep their fresh initialisation.
    out, resume, progress, callback : path, bool, bool, callable, optional
        As in :func:`pretrain_global`.
    **overrides : Any
        Settings of ``config.finetune`` to change.

    Returns
    -------
    StageResult
        ``network`` is the UNet with the selected weights; ``best_iteration`` / ``best_score``
        say which; ``copied_keys`` lists what came from `init`.

    Raises
    ------
    ValueError
        For a bad setting, unlabelled training volumes, or an `init` of another architecture.
    FloatingPointError
        If the loss becomes non-finite.

    Notes
    -----
    Batches of ``batch_size`` slices are drawn uniformly with replacement from all slices of the
    training volumes; with ``augment`` each gets one random affine option (rotation, scaling,
    flip, k·45° rotation or nothing) composed with a smooth elastic deformation; with ``mixup``
    images and one-hot labels are blended. Checkpoint selection ignores no iteration and keeps
    the first of equal scores (an improvement must exceed 1e-7).

    References
    ----------
    Chaitanya et al., "Contrastive learning of global and local features for medical image
    segmentation with limited annotations", NeurIPS 2020, arXiv:2006.10511.

    Examples
    --------
    >>> import numpy as np
    >>> from contrastlocal.training import Volume, preset, finetune
    >>> rng = np.random.default_rng(0)
    >>> volumes = [Volume(rng.random((8, 32, 32), dtype=np.float32),
    ...                   rng.integers(0, 4, (8, 32, 32)).astype(np.uint8), case_id=str(i))
    ...            for i in range(4)]
    >>> config = preset("synthetic", **{"model.image_size": (32, 32),
    ...                                 "model.channels": (4, 8, 8, 8, 8, 8),
    ...                                 "global_stage.volumes_per_batch": 2,
    ...                                 "local_stage.volumes_per_batch": 2,
    ...                                 "runtime.progress": False})
    >>> result = finetune(volumes[:1], volumes[1:2], config, iterations=2, batch_size=4,
    ...                   validate_every=1)
    >>> type(result.network).__name__, result.best_iteration in (1, 2)
    ('UNet', True)
    """
    cfg = _with_overrides(config, "finetune", overrides)
    st = cfg.finetune
    _check_volumes(train, "train", cfg)
    if any(v.label is None for v in train):
        msg = "`train` volumes must all carry labels for fine-tuning."
        raise ValueError(msg)
    if len(val):
        _check_volumes(val, "val", cfg)
    rt = _runtime(cfg, progress)
    torch.manual_seed(derive_seed(cfg.seed, _FINETUNE, 0))
    unet = build_unet(cfg)
    copied = _initialise(unet, init, cfg)
    bank = _SliceBank(train, 1, rt.device)
    _prepare_module(unet, rt)
    forward, managed = _forward_fn(unet, rt)
    optimizer = _adam(unet.parameters(), st.learning_rate, rt)

    def loss_of(images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with autocast_context(rt.device, rt.amp, step_mode=rt.step_mode):
            logits = forward(_images(images, rt))
        return _segmentation_loss(logits, target, st.loss)

    loop = run_loop(
        LoopSpec(
            name="finetune",
            model=unet,
            optimizer=optimizer,
            batch=functools.partial(_finetune_inputs, cfg, bank, rt.device),
            loss=loss_of,
            settings=_settings(
                cfg, "finetune", train, val=[v.case_id for v in val], init=sorted(copied)
            ),
            validate=(
                functools.partial(_finetune_validation, unet, val, cfg, rt) if len(val) else None
            ),
            validate_every=st.validate_every,
            ddp_managed=managed,
            **_loop_options(st, rt, out, resume, callback, _fingerprint(init)),
        )
    )
    if loop.best_checkpoint is not None:
        load_weights(unet, loop.best_checkpoint)
    elif loop.best_state is not None:
        unet.load_state_dict(loop.best_state)
    return _result(unet, loop, out, copied)


def train_baseline(
    train: Sequence[Volume],
    val: Sequence[Volume],
    config: ExperimentConfig | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: bool | None = None,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
    **overrides: Any,
) -> StageResult:
    """Train the random-initialisation baseline: :func:`finetune` from scratch, always augmented.

    Parameters
    ----------
    train, val : sequence of Volume
        Labelled training and validation volumes.
    config : ExperimentConfig, optional
        Settings; ``config.finetune`` drives the run (``augment`` is forced on, as the original
        baseline always augments).
    out, resume, progress, callback : path, bool, bool, callable, optional
        As in :func:`finetune`.
    **overrides : Any
        Settings of ``config.finetune`` to change.

    Returns
    -------
    StageResult
        As :func:`finetune`.

    Raises
    ------
    ValueError
        As :func:`finetune`.

    Examples
    --------
    >>> import numpy as np
    >>> from contrastlocal.training import Volume, preset, train_baseline
    >>> rng = np.random.default_rng(0)
    >>> volumes = [Volume(rng.random((8, 32, 32), dtype=np.float32),
    ...                   rng.integers(0, 4, (8, 32, 32)).astype(np.uint8), case_id=str(i))
    ...            for i in range(4)]
    >>> config = preset("synthetic", **{"model.image_size": (32, 32),
    ...                                 "model.channels": (4, 8, 8, 8, 8, 8),
    ...                                 "global_stage.volumes_per_batch": 2,
    ...                                 "local_stage.volumes_per_batch": 2,
    ...                                 "runtime.progress": False})
    >>> result = train_baseline(volumes[:1], volumes[1:2], config, iterations=2, batch_size=4,
    ...                         validate_every=1)
    >>> type(result.network).__name__, len(result.validation) > 0
    ('UNet', True)
    """
    return finetune(
        train,
        val,
        config,
        init=None,
        out=out,
        resume=resume,
        progress=progress,
        callback=callback,
        **{**overrides, "augment": True},
    )
