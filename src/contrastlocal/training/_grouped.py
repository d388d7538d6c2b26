"""Fine-tuning cells of a grid trained together as one grouped network (private).

:func:`finetune_grouped` trains K fine-tuning (or baseline) cells -- each with its own labelled
training volumes, validation volumes, initialisation and seed -- in one
:class:`~contrastlocal.models.GroupedUNet`, with one Adam over the grouped parameters (element-wise,
so it equals K separate Adams: same learning rate and step count for every cell, the loss being the
sum of the cells' losses). Per cell it reproduces :func:`~contrastlocal.training.finetune`'s
semantics: the network is built and initialised under the same seed, batch indices come from the
cell's ``(seed, stage, iteration)`` NumPy stream, augmentation and mixup draw from the cell's own
``(seed, stage, iteration)`` torch generator, validation runs every ``validate_every`` iterations
(and at the end) on the cell's validation volumes, and the cell keeps its best validation Dice.

With ``checkpoint_root`` the group writes a checkpoint every ``checkpoint_every`` iterations
(the grouped weights, Adam's state, each cell's history, validation and best weights) under a
folder named by the cells' keys, and a rerun of the same cells resumes from it: a killed group
loses at most ``checkpoint_every`` iterations. A cell's ``metrics.jsonl``, ``best.pt`` and
``final.pt`` are written once, after training, when the group's folder is deleted.

What it does not do (the per-cell loop of ``finetune`` does): progress bars,
``runtime.compile`` (use ``step_mode``), several processes (DDP). A stopped (non-finite) cell
stops the whole group with a ``FloatingPointError`` naming it.

:func:`estimate_concurrent` sizes K from the device's memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models import GroupedUNet, UNet
from ._graphs import StepMode, TrainStep
from ._logging import MetricsLog
from ._loop import _KEEP, autocast_context, derive_seed
from .checkpoint import (
    architecture_signature,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    stage_key,
)
from .config import ExperimentConfig
from .evaluation import Volume
from .stages import (
    _FINETUNE,
    StageResult,
    _check_volumes,
    _finetune_inputs,
    _finetune_validation,
    _fingerprint,
    _images,
    _initialise,
    _runtime,
    _segmentation_loss,
    _settings,
    _SliceBank,
    _with_overrides,
    build_unet,
)

__all__ = [
    "ConcurrencyEstimate",
    "GroupedCell",
    "check_concurrent",
    "default_concurrent",
    "estimate_concurrent",
    "finetune_grid",
    "finetune_grouped",
]

#: Most cells :func:`default_concurrent` proposes (benchmarks/bench_grid.py measures K <= 8).
_DEFAULT_CAP = 8

#: Share of the free memory the estimate lets the cells use (the rest: allocator, cuDNN work space).
_HEADROOM = 0.85


@dataclass
class GroupedCell:
    """One fine-tuning run of a grid.

    Attributes
    ----------
    train, val : sequence of Volume
        Labelled training and validation volumes (``val`` may be empty: the last weights).
    init : module, path or None
        As ``finetune(init=...)``; ignored for a baseline.
    seed : int or None
        The cell's seed (``config.seed`` when None).
    baseline : bool
        ``train_baseline`` semantics: random initialisation, augmentation forced on.
    out : path or None
        The cell's output folder: after training, ``metrics.jsonl``, ``best.pt`` (with
        validation) and ``final.pt`` are written there in the format of ``finetune``'s.
    """

    train: Sequence[Volume]
    val: Sequence[Volume]
    init: nn.Module | str | os.PathLike[str] | None = None
    seed: int | None = None
    baseline: bool = False
    out: str | os.PathLike[str] | None = None


@dataclass(frozen=True)
class ConcurrencyEstimate:
    """How many fine-tuning cells fit on a device at once.

    Attributes
    ----------
    device : str
        The device estimated for.
    activation_bytes : int
        Activations of one cell's training step (computed from the network's layer outputs at
        the fine-tuning batch size, float32) plus its batch, targets and augmentation buffers.
    state_bytes : int
        One cell's weights, gradients and Adam moments (4 copies of the parameters).
    limit_bytes : int
        Memory the cells may use: ``0.85 ×`` the free memory (or the given limit).
    max_cells : int
        ``limit_bytes // (activation_bytes + state_bytes)`` (0 when not even one fits).
    """

    device: str
    activation_bytes: int
    state_bytes: int
    limit_bytes: int
    max_cells: int

    @property
    def per_cell_bytes(self) -> int:
        """Estimated memory of one cell."""
        return self.activation_bytes + self.state_bytes

    def describe(self) -> str:
        """One line: per-cell estimate, limit and how many fit."""
        gib = 2.0**30
        return (
            f"estimated {self.per_cell_bytes / gib:.3f} GiB per cell (activations "
            f"{self.activation_bytes / gib:.3f} GiB + weights/gradients/Adam "
            f"{self.state_bytes / gib:.3f} GiB), limit {self.limit_bytes / gib:.2f} GiB on "
            f"{self.device}: at most {self.max_cells} cell(s)"
        )


def _activation_bytes(config: ExperimentConfig, batch_size: int) -> tuple[int, int]:
    """Return (activation bytes, parameter count) of one UNet training step (meta device)."""
    model = config.model
    with torch.device("meta"):
        net = UNet(in_channels=model.in_channels, out_channels=model.num_classes,
                   channels=model.channels)
        total = 0

        def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
            nonlocal total
            total += out.numel() * 4

        handles = [
            m.register_forward_hook(hook)
            for m in net.modules()
            if not any(True for _ in m.children()) and not isinstance(m, nn.Identity)
        ]
        x = torch.empty(batch_size, model.in_channels, *model.image_size)
        net(x)
        for h in handles:
            h.remove()
    params = sum(p.numel() for p in net.parameters())
    pixels = batch_size * math.prod(model.image_size)
    # images (+ augmented copy), one-hot targets (+ mixed copy), elastic grids
    data = pixels * 4 * (2 * model.in_channels + 2 * model.num_classes + 4)
    return total + data, params


def _free_memory(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def estimate_concurrent(
    config: ExperimentConfig,
    device: str | torch.device = "cpu",
    *,
    memory_limit: int | None = None,
) -> ConcurrencyEstimate:
    """Estimate how many fine-tuning cells of `config` fit on `device` at once.

    Parameters
    ----------
    config : ExperimentConfig
        Its ``model`` section and ``finetune.batch_size`` size one cell.
    device : str or torch.device, default "cpu"
        The device the cells would train on.
    memory_limit : int, optional
        Bytes available to the cells; default: the device's free memory (CUDA: ``mem_get_info``;
        CPU: ``MemAvailable``), of which 85 % are used.

    Returns
    -------
    ConcurrencyEstimate
        The per-cell estimate, the limit and ``max_cells``.

    Raises
    ------
    ValueError
        If `memory_limit` is not a positive integer.

    Notes
    -----
    The activation size is the sum of every layer's output at the fine-tuning batch size in
    float32 (computed on the meta device, so nothing is allocated); it over-counts what autograd
    keeps (batch norm outputs are freed after the activation) to leave room for the transient
    buffers of the backward pass. ``benchmarks/bench_grid.py`` prints it next to the measured peak.
    """
    dev = torch.device(device)
    if memory_limit is not None and (
        isinstance(memory_limit, bool) or not isinstance(memory_limit, int) or memory_limit <= 0
    ):
        msg = f"`memory_limit` must be a positive number of bytes; got {memory_limit!r}."
        raise ValueError(msg)
    activations, params = _activation_bytes(config, config.finetune.batch_size)
    state = 4 * 4 * params
    limit = memory_limit if memory_limit is not None else int(_HEADROOM * _free_memory(dev))
    return ConcurrencyEstimate(
        device=str(dev),
        activation_bytes=activations,
        state_bytes=state,
        limit_bytes=limit,
        max_cells=limit // (activations + state),
    )


def check_concurrent(
    concurrent: int,
    config: ExperimentConfig,
    device: str | torch.device = "cpu",
    *,
    memory_limit: int | None = None,
) -> ConcurrencyEstimate:
    """Raise before training if `concurrent` cells do not fit; return the estimate otherwise.

    Parameters
    ----------
    concurrent : int
        K, the number of cells to train at once (``--concurrent K``).
    config, device, memory_limit
        As :func:`estimate_concurrent`.

    Returns
    -------
    ConcurrencyEstimate
        The estimate.

    Raises
    ------
    ValueError
        If `concurrent` < 1 or more than ``max_cells``; the message gives the estimate and the
        limit.
    """
    if isinstance(concurrent, bool) or not isinstance(concurrent, int) or concurrent < 1:
        msg = f"`concurrent` must be a positive integer; got {concurrent!r}."
        raise ValueError(msg)
    est = estimate_concurrent(config, device, memory_limit=memory_limit)
    if concurrent > est.max_cells:
        msg = (
            f"`concurrent` = {concurrent} fine-tuning cells do not fit in memory: "
            f"{est.describe()}. Lower --concurrent to at most {est.max_cells}"
            + (" or use a smaller batch or image size." if est.max_cells == 0 else ".")
        )
        raise ValueError(msg)
    return est


class _Cast(nn.Module):
    """Feed a network of another dtype the float32 images that evaluation reads."""

    def __init__(self, net: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.net = net
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x.to(self.dtype))
        return out


def default_concurrent(
    config: ExperimentConfig,
    device: str | torch.device = "cpu",
    *,
    cap: int = _DEFAULT_CAP,
    memory_limit: int | None = None,
) -> int:
    """Return a ``--concurrent`` default: the cells that fit in memory, at most `cap`, at least 1.

    Parameters
    ----------
    config, device, memory_limit
        As :func:`estimate_concurrent`.
    cap : int, default 8
        Upper bound (the largest K that benchmarks/bench_grid.py measures by default).

    Returns
    -------
    int
        ``max(1, min(cap, max_cells))``.
    """
    est = estimate_concurrent(config, device, memory_limit=memory_limit)
    return max(1, min(cap, est.max_cells))


def finetune_grid(
    cells: Sequence[GroupedCell],
    config: ExperimentConfig | None = None,
    *,
    concurrent: int = 1,
    memory_limit: int | None = None,
    dtype: torch.dtype = torch.float32,
    checkpoint_root: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> list[StageResult]:
    """Fine-tune any number of cells, `concurrent` at a time, in order.

    Parameters
    ----------
    cells : sequence of GroupedCell
        All runs of the grid.
    config, memory_limit, dtype, checkpoint_root, **overrides
        As :func:`finetune_grouped` (each group of `concurrent` cells resumes on its own).
    concurrent : int, default 1
        K, the cells per grouped network (checked against the memory estimate before training).

    Returns
    -------
    list of StageResult
        One per cell, in the order of `cells` (the same as with ``concurrent=1``).

    Raises
    ------
    ValueError
        If `concurrent` is not a positive integer or does not fit, or as :func:`finetune_grouped`.
    """
    cfg = _with_overrides(config, "finetune", overrides)
    check_concurrent(concurrent, cfg, _runtime(cfg, False).device, memory_limit=memory_limit)
    out: list[StageResult] = []
    for start in range(0, len(cells), concurrent):
        out += finetune_grouped(
            cells[start : start + concurrent], cfg, memory_limit=memory_limit, dtype=dtype,
            checkpoint_root=checkpoint_root,
        )
    return out


@dataclass
class _Cell:
    cfg: ExperimentConfig
    train: Sequence[Volume]
    val: Sequence[Volume]
    bank: _SliceBank
    copied: list[str]
    history: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    best_iteration: int | None = None
    best_score: float | None = None
    best_state: dict[str, torch.Tensor] | None = None
    #: the resume key's device type, precision and upstream weights, as ``finetune`` stores them
    numerics: tuple[str, str, str | None] = ("cpu", "fp32", None)


def _cell_key(c: _Cell) -> dict[str, Any]:
    """Return the resume key ``finetune`` gives this cell's run (settings, weights, numerics)."""
    return stage_key(
        _settings(
            c.cfg, "finetune", c.train, val=[v.case_id for v in c.val], init=sorted(c.copied)
        ),
        device_type=c.numerics[0],
        precision=c.numerics[1],
        upstream=c.numerics[2],
    )


class _GroupCheckpoints:
    """Periodic checkpoints of one group under ``root/group-<digest of its cells' keys>``."""

    def __init__(self, root: str | os.PathLike[str], states: Sequence[_Cell], dtype: Any) -> None:
        self.key = {"cells": [_cell_key(c) for c in states], "dtype": str(dtype)}
        text = json.dumps(self.key, sort_keys=True, default=str)
        self.directory = Path(root) / f"group-{hashlib.sha256(text.encode()).hexdigest()[:16]}"

    def resume(
        self, grouped: GroupedUNet, optimizer: torch.optim.Optimizer, states: Sequence[_Cell],
        device: torch.device,
    ) -> int:
        """Load the newest checkpoint (its cells must be these); return its iteration, or 0."""
        latest = latest_checkpoint(self.directory) if self.directory.is_dir() else None
        if latest is None:
            return 0
        data = load_checkpoint(latest, map_location=device)
        if data.get("key") != self.key:
            msg = (
                f"the group checkpoint {str(latest)!r} was written for other cells or settings; "
                "delete its folder to start the group afresh."
            )
            raise ValueError(msg)
        grouped.load_state_dict(data["model"])
        optimizer.load_state_dict(data["optimizer"])
        for c, saved in zip(states, data["cells"], strict=True):
            c.history, c.validation = saved["history"], saved["validation"]
            c.best_iteration, c.best_score = saved["best_iteration"], saved["best_score"]
            c.best_state = saved["best_state"]
        return int(data["iteration"])

    def save(
        self, iteration: int, grouped: GroupedUNet, optimizer: torch.optim.Optimizer,
        states: Sequence[_Cell],
    ) -> None:
        cells = [
            {"history": c.history, "validation": c.validation, "best_iteration": c.best_iteration,
             "best_score": c.best_score, "best_state": c.best_state}
            for c in states
        ]
        save_checkpoint(
            self.directory / f"iter_{iteration:07d}.pt",
            {"format": 1, "key": self.key, "iteration": iteration,
             "model": grouped.state_dict(), "optimizer": optimizer.state_dict(), "cells": cells},
        )
        for _, old in list_checkpoints(self.directory)[:-_KEEP]:
            old.unlink(missing_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        with contextlib.suppress(OSError):  # the root too, once no other group uses it
            self.directory.parent.rmdir()


def _write_outputs(stage_dir: Path, last: UNet, c: _Cell) -> None:
    """metrics.jsonl, best.pt and final.pt of one cell, as ``finetune`` writes them."""
    log = MetricsLog(stage_dir / "metrics.jsonl")
    for record in sorted(
        c.history + c.validation, key=lambda r: (r["iteration"], "val_dice" in r)
    ):
        log.write(record)
    signature = architecture_signature(last)
    if c.best_state is not None:
        save_checkpoint(
            stage_dir / "best.pt",
            {"stage": "finetune", "iteration": c.best_iteration, "architecture": signature,
             "model": c.best_state, "score": c.best_score, "metric": "val_dice"},
        )
    save_checkpoint(
        stage_dir / "final.pt",
        {"stage": "finetune", "iteration": c.cfg.finetune.iterations, "architecture": signature,
         "model": last.state_dict(), "settings": _cell_key(c)},
    )


def finetune_grouped(
    cells: Sequence[GroupedCell],
    config: ExperimentConfig | None = None,
    *,
    memory_limit: int | None = None,
    dtype: torch.dtype = torch.float32,
    step_mode: StepMode | None = None,
    compile_backend: str | None = None,
    checkpoint_root: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> list[StageResult]:
    """Fine-tune K cells at once in one grouped network; per cell as :func:`finetune` would.

    Parameters
    ----------
    cells : sequence of GroupedCell
        The K runs (own volumes, initialisation, seed; ``baseline=True`` for the random baseline).
    config : ExperimentConfig, optional
        Settings shared by the cells (default: the ``"synthetic"`` preset); ``config.finetune``
        drives them all (same iterations, batch size, learning rate, loss).
    memory_limit : int, optional
        Bytes available; checked with :func:`check_concurrent` before anything is built.
    dtype : torch.dtype, default torch.float32
        Parameter dtype of the networks (float64 for exactness checks: the batches are drawn
        and augmented in float32 as by ``finetune``, then cast; validation casts its inputs).
    step_mode : {"eager", "cuda_graph", "compile"}, optional
        How the grouped forward / backward / Adam step runs (:class:`TrainStep`; the cells'
        batches and augmentation are drawn eagerly before it); default
        ``config.runtime.step_mode`` (checked as in the stages). Given here, ``"cuda_graph"``
        off CUDA runs eagerly; not with fp16 autocast (its gradient scaler).
    compile_backend : str, optional
        ``torch.compile`` backend for ``step_mode="compile"``.
    checkpoint_root : path, optional
        Folder for the group's periodic checkpoints (every ``checkpoint_every`` iterations, in
        a sub-folder named by the cells' keys); a rerun of the same cells resumes from the
        newest. Deleted when the group finishes. None: no checkpoints.
    **overrides : Any
        Settings of ``config.finetune`` to change.

    Returns
    -------
    list of StageResult
        One per cell, in order: ``network`` the cell's UNet with its selected weights,
        ``history`` its training losses, ``validation`` its validation records,
        ``best_iteration`` / ``best_score``, ``copied_keys``; ``seconds`` is the shared wall time.

    Raises
    ------
    ValueError
        For an empty `cells`, unlabelled training volumes, bad volumes, or more cells than fit.
    FloatingPointError
        If a cell's loss becomes non-finite.
    """
    cfg = _with_overrides(config, "finetune", overrides)
    if not isinstance(cells, Sequence) or len(cells) == 0:
        msg = f"`cells` must be a non-empty sequence of GroupedCell; got {cells!r}."
        raise ValueError(msg)
    for i, cell in enumerate(cells):
        if not isinstance(cell, GroupedCell):
            msg = f"`cells[{i}]` must be a GroupedCell; got {type(cell).__name__}."
            raise TypeError(msg)
        _check_volumes(cell.train, f"cells[{i}].train", cfg)
        if any(v.label is None for v in cell.train):
            msg = f"`cells[{i}].train` volumes must all carry labels for fine-tuning."
            raise ValueError(msg)
        if len(cell.val):
            _check_volumes(cell.val, f"cells[{i}].val", cfg)
    rt = _runtime(cfg, False)
    if step_mode is None:
        step_mode = rt.step_mode
    if rt.scaler is not None and step_mode != "eager":
        msg = f"`step_mode` {step_mode!r} does not support fp16 autocast; use amp='bf16'."
        raise ValueError(msg)
    check_concurrent(len(cells), cfg, rt.device, memory_limit=memory_limit)
    st = cfg.finetune

    states: list[_Cell] = []
    unets: list[UNet] = []
    for cell in cells:
        cell_cfg = cfg if cell.seed is None else cfg.replace(seed=cell.seed)
        if cell.baseline:
            cell_cfg = cell_cfg.replace(finetune={"augment": True})
        torch.manual_seed(derive_seed(cell_cfg.seed, _FINETUNE, 0))
        unet = build_unet(cell_cfg)
        copied = _initialise(unet, None if cell.baseline else cell.init, cell_cfg)
        unets.append(unet)
        states.append(
            _Cell(cell_cfg, cell.train, cell.val, _SliceBank(cell.train, 1, rt.device), copied,
                  [], [], numerics=(rt.device.type, rt.precision,
                                    _fingerprint(None if cell.baseline else cell.init)))
        )
    grouped = GroupedUNet.from_unets([u.to(dtype) for u in unets]).to(rt.device)
    if rt.channels_last:
        grouped.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    grouped.train()
    optimizer = torch.optim.Adam(grouped.parameters(), lr=st.learning_rate)
    k_cells = len(states)
    saver = None if checkpoint_root is None else _GroupCheckpoints(checkpoint_root, states, dtype)
    start = 0 if saver is None else saver.resume(grouped, optimizer, states, rt.device)

    def cell_batch(c: _Cell, it: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, target = _finetune_inputs(c.cfg, c.bank, rt.device, it)  # as ``finetune``
        return images.to(dtype), target.to(dtype)

    def loss_fn(x: torch.Tensor, *targets: torch.Tensor) -> torch.Tensor:
        with autocast_context(rt.device, rt.amp, step_mode=step_mode):
            logits = grouped(_images(x, rt))
        return torch.stack(
            [
                _segmentation_loss(lg, t, st.loss)
                for lg, t in zip(grouped.split(logits), targets, strict=True)
            ]
        )

    train_step: TrainStep | None = None
    running = torch.zeros(k_cells, device=rt.device)
    count = 0
    t_start = time.perf_counter()
    t_interval = t_start
    for it in range(start, st.iterations):
        done = it + 1
        pairs = [cell_batch(c, it) for c in states]
        inputs = (grouped.stack([p[0] for p in pairs]), *(p[1] for p in pairs))
        if rt.scaler is not None:
            optimizer.zero_grad(set_to_none=True)
            losses = loss_fn(*inputs)
            rt.scaler.scale(losses.sum()).backward()
            rt.scaler.step(optimizer)
            rt.scaler.update()
        else:
            if train_step is None:
                train_step = TrainStep(
                    grouped, loss_fn, optimizer, inputs, mode=step_mode, fallback=True,
                    compile_backend=compile_backend,
                )
            losses = train_step(*inputs)
        running = running + losses.detach().float()
        count += 1
        is_log = done % st.log_every == 0 or done == st.iterations
        is_val = done % st.validate_every == 0 or done == st.iterations
        check = rt.device.type == "cpu" or is_log or is_val
        if check and not bool(torch.isfinite(running).all()):
            bad = [i for i in range(k_cells) if not math.isfinite(float(running[i]))]
            msg = (
                f"finetune_grouped: the loss of cell(s) {bad} became non-finite (NaN or inf) at "
                f"or before iteration {done}; training stopped. Lower the learning rate, use "
                "amp='none' or check the input data for NaNs."
            )
            raise FloatingPointError(msg)
        if is_log:
            now = time.perf_counter()
            means = (running / count).tolist()
            for c, mean in zip(states, means, strict=True):
                c.history.append(
                    {"stage": "finetune", "iteration": done, "loss": mean,
                     "it_per_s": count / max(now - t_interval, 1e-9), "elapsed_s": now - t_start}
                )
            running = torch.zeros(k_cells, device=rt.device)
            count = 0
            t_interval = now
        if is_val:
            for k, c in enumerate(states):
                if not len(c.val):
                    continue
                cast = _Cast(grouped.unet(k), dtype)
                metrics = _finetune_validation(cast, c.val, c.cfg, rt, done)
                c.validation.append({"stage": "finetune", "iteration": done, **metrics})
                score = float(metrics["val_dice"])
                if math.isfinite(score) and (c.best_score is None or score > c.best_score + 1e-7):
                    c.best_score, c.best_iteration = score, done
                    c.best_state = grouped.state_dict_of(k)
        if saver is not None and done % st.checkpoint_every == 0 and done < st.iterations:
            saver.save(done, grouped, optimizer, states)
    seconds = time.perf_counter() - t_start
    results: list[StageResult] = []
    for k, (cell, c) in enumerate(zip(cells, states, strict=True)):
        net = grouped.unet(k)
        stage_dir = None if cell.out is None else Path(cell.out)
        if stage_dir is not None:
            _write_outputs(stage_dir, net, c)
        if c.best_state is not None:
            net.load_state_dict(c.best_state)
        net.train()
        results.append(
            StageResult(
                network=net, history=c.history, validation=c.validation,
                best_iteration=c.best_iteration, best_score=c.best_score, seconds=seconds,
                iterations=st.iterations, resumed_from=start, stage_dir=stage_dir,
                copied_keys=c.copied,
            )
        )
    if saver is not None:
        saver.remove()  # every cell's outputs are written
    return results
