"""The iteration loop shared by every stage: logging, checkpoints, resume, NaN guard (private).

Every random draw of a step is derived from (seed, stage, iteration) — batch indices from the
sampler's (seed, epoch) and a per-iteration augmentation generator — so a stage resumed from the
checkpoint of iteration k performs exactly the steps k+1, ... of an uninterrupted run. The global
torch/NumPy RNG states are saved and restored as well, for any code that draws from them.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import _distributed
from ._graphs import StepMode, TrainStep
from ._logging import MetricsLog, Progress
from .checkpoint import (
    architecture_signature,
    check_architecture,
    check_resume,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    stage_key,
)

__all__ = ["LoopResult", "LoopSpec", "derive_seed", "run_loop"]

#: Periodic checkpoints kept per stage (older ones are deleted).
_KEEP = 2


def derive_seed(*parts: int) -> int:
    """Derive a 63-bit seed from integers, stable across processes and platforms."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def _numpy_state() -> dict[str, Any]:
    name, key, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]  # noqa: NPY002
    return {
        "name": str(name),
        "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _set_numpy_state(state: Mapping[str, Any]) -> None:
    key = state["key"].cpu().numpy().astype(np.uint32)  # the checkpoint may be mapped to a GPU
    np.random.set_state(  # noqa: NPY002
        (state["name"], key, int(state["pos"]), int(state["has_gauss"]), float(state["cached"]))
    )


@dataclass
class LoopSpec:
    """What a stage hands to :func:`run_loop`."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    #: ``batch(iteration)``: the step's inputs, drawn and augmented (every random draw here)
    batch: Callable[[int], tuple[torch.Tensor, ...]]
    #: ``loss(*inputs)``: forward and loss, no random draw and no host read (captured as is)
    loss: Callable[..., torch.Tensor]
    iterations: int
    log_every: int
    checkpoint_every: int
    device: torch.device
    stage_dir: Path | None = None
    resume: bool = True
    progress: bool = True
    settings: dict[str, Any] = field(default_factory=dict)
    scaler: Any = None
    validate: Callable[[int], dict[str, Any]] | None = None
    validate_every: int = 0
    select_metric: str = "val_dice"
    sampler_position: Callable[[int], dict[str, int]] | None = None
    callback: Callable[[int, dict[str, Any]], None] | None = None
    #: the network written to final.pt / best.pt (default: `model`)
    export: nn.Module | None = None
    #: ids of the parameters whose gradients a DDP wrapper averages (the loop averages the rest)
    ddp_managed: frozenset[int] = frozenset()
    #: :func:`~.checkpoint.weights_fingerprint` of the weights the stage starts from (None: random)
    upstream: str | None = None
    #: the autocast precision in effect ("fp32", "bf16", "fp16"); part of the resume key
    precision: str = "fp32"
    #: ``runtime.step_mode``: "eager", "cuda_graph" or "compile" (:class:`~._graphs.TrainStep`)
    step_mode: StepMode = "eager"


#: ``torch.compile`` backend of ``step_mode="compile"`` (None: inductor); tests trace with
#: "aot_eager" to check the compiled step without generating code
COMPILE_BACKEND: str | None = None


@dataclass
class LoopResult:
    """What :func:`run_loop` returns."""

    iterations: int
    resumed_from: int
    history: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    best_iteration: int | None
    best_score: float | None
    seconds: float
    final_checkpoint: Path | None
    best_checkpoint: Path | None
    best_state: dict[str, torch.Tensor] | None = None


def _non_finite_error(name: str, iteration: int, last_good: Path | None) -> FloatingPointError:
    where = (
        f"the last good checkpoint is kept at {last_good}"
        if last_good is not None
        else "no checkpoint was written before it"
    )
    msg = (
        f"stage {name!r}: the loss became non-finite (NaN or inf) at or before iteration "
        f"{iteration}; training stopped and {where}. Lower the learning rate, use amp='none' "
        "or check the input data for NaNs."
    )
    return FloatingPointError(msg)


@contextlib.contextmanager
def _noop() -> Iterator[None]:
    yield


def _clear_stale(spec: LoopSpec, ckpt_dir: Path | None, best_path: Path | None) -> None:
    """Delete an earlier run's checkpoints and best.pt before a fresh (non-resumed) run."""
    if ckpt_dir is None or spec.resume or not _distributed.is_main():
        return
    for _, old in list_checkpoints(ckpt_dir):
        old.unlink(missing_ok=True)
    if best_path is not None:
        best_path.unlink(missing_ok=True)


def _restore_rng(rng: Mapping[str, Any]) -> None:
    torch.set_rng_state(rng["torch"].cpu())
    _set_numpy_state(rng["numpy"])
    if torch.cuda.is_available() and rng.get("cuda") is not None:
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])


@dataclass
class _Best:
    """The best validation score so far and the weights that reached it (kept in memory)."""

    score: float | None = None
    iteration: int | None = None
    state: dict[str, torch.Tensor] | None = None
    dirty: bool = False  # not yet written to best.pt


class _Loop:
    """One run of :func:`run_loop`: resume, step, log, validate, checkpoint, finish."""

    def __init__(self, spec: LoopSpec) -> None:
        self.spec = spec
        self.ckpt_dir = None if spec.stage_dir is None else spec.stage_dir / "checkpoints"
        self.best_path = None if spec.stage_dir is None else spec.stage_dir / "best.pt"
        self.signature = architecture_signature(spec.model)
        # everything that determines the trajectory: settings, upstream weights, numerics
        self.key = stage_key(
            spec.settings,
            upstream=spec.upstream,
            device_type=spec.device.type,
            precision=spec.precision,
        )
        self.export = spec.model if spec.export is None else spec.export
        self.export_signature = architecture_signature(self.export)
        self.start = 0
        self.best = _Best()
        self.last_good: Path | None = None
        self.history: list[dict[str, Any]] = []
        self.validation: list[dict[str, Any]] = []
        self.train_step: TrainStep | None = None

    # ---- start
    def resume(self) -> None:
        """Load the newest checkpoint of a resumed run (after checking its settings)."""
        spec = self.spec
        _clear_stale(spec, self.ckpt_dir, self.best_path)
        if self.ckpt_dir is None or not spec.resume:
            return
        latest = latest_checkpoint(self.ckpt_dir)
        if latest is None:
            return
        data = load_checkpoint(latest, map_location=spec.device)
        check_architecture(data["architecture"], spec.model, repr(str(latest)))
        check_resume(
            data.get("settings", {}),
            self.key,
            done=int(data["iteration"]),
            iterations=spec.iterations,
            stage=spec.name,
            source=latest,
        )
        spec.model.load_state_dict(data["model"])
        spec.optimizer.load_state_dict(data["optimizer"])
        if spec.scaler is not None and data.get("scaler"):
            spec.scaler.load_state_dict(data["scaler"])
        _restore_rng(data["rng"])
        self.start = int(data["iteration"])
        self.best.score = data.get("best_score")
        self.best.iteration = data.get("best_iteration")
        self.last_good = latest

    # ---- checkpoints
    def save_best(self) -> None:
        best = self.best
        if self.best_path is None or not best.dirty or best.state is None:
            return
        save_checkpoint(
            self.best_path,
            {
                "stage": self.spec.name,
                "iteration": best.iteration,
                "architecture": self.export_signature,
                "model": best.state,
                "score": best.score,
                "metric": self.spec.select_metric,
            },
        )
        best.dirty = False

    def save(self, iteration: int) -> None:
        spec = self.spec
        if self.ckpt_dir is None:
            return
        if not _distributed.is_main():
            _distributed.barrier()  # rank 0 writes
            return
        self.save_best()
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": _numpy_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        payload = {
            "format": 1,
            "stage": spec.name,
            "iteration": iteration,
            "architecture": self.signature,
            "model": spec.model.state_dict(),
            "optimizer": spec.optimizer.state_dict(),
            "scaler": None if spec.scaler is None else spec.scaler.state_dict(),
            "rng": rng,
            "sampler": None if spec.sampler_position is None else spec.sampler_position(iteration),
            "settings": self.key,
            "best_score": self.best.score,
            "best_iteration": self.best.iteration,
        }
        self.last_good = save_checkpoint(self.ckpt_dir / f"iter_{iteration:07d}.pt", payload)
        for _, old in list_checkpoints(self.ckpt_dir)[:-_KEEP]:
            old.unlink(missing_ok=True)
        _distributed.barrier()

    # ---- one iteration
    def optimise(self, it: int, params: list[torch.Tensor]) -> torch.Tensor:
        """One optimisation step; return the loss (undetached in eager mode)."""
        spec = self.spec
        inputs = spec.batch(it)
        if spec.step_mode != "eager":  # one process, no scaler (config.check_step_mode)
            if self.train_step is None:  # after resume(): the capture starts from its state
                self.train_step = TrainStep(
                    spec.model, spec.loss, spec.optimizer, inputs, mode=spec.step_mode,
                    compile_backend=COMPILE_BACKEND,
                )
            return self.train_step(*inputs)
        spec.optimizer.zero_grad(set_to_none=True)
        loss = spec.loss(*inputs)
        if spec.scaler is not None:
            spec.scaler.scale(loss).backward()
            _distributed.average_gradients(params, spec.ddp_managed)  # no DDP wrapper's
            spec.scaler.step(spec.optimizer)
            spec.scaler.update()
        else:
            loss.backward()  # type: ignore[no-untyped-call]
            _distributed.average_gradients(params, spec.ddp_managed)
            spec.optimizer.step()
        return loss

    def validate(self, done: int, log: MetricsLog, bar: Progress) -> None:
        spec = self.spec
        assert spec.validate is not None
        metrics = spec.validate(done)
        spec.model.train()
        vrec = {"stage": spec.name, "iteration": done, **metrics}
        self.validation.append(vrec)
        log.write(vrec)
        score = float(metrics[spec.select_metric])
        best = self.best
        if math.isfinite(score) and (best.score is None or score > best.score + 1e-7):
            best.score, best.iteration = score, done
            # kept in memory; written to best.pt with the next checkpoint, so the file
            # on disk always matches the best score stored in the newest checkpoint
            best.state = {k: v.detach().clone() for k, v in self.export.state_dict().items()}
            best.dirty = True
        bar.set_postfix(**{spec.select_metric: f"{score:.3f}"})

    # ---- the loop
    def iterate(self) -> float:
        """Run the remaining iterations; return the start time (``perf_counter``)."""
        spec = self.spec
        main = _distributed.is_main()
        params = [p for group in spec.optimizer.param_groups for p in group["params"]]
        log = MetricsLog(
            None if spec.stage_dir is None or not main else spec.stage_dir / "metrics.jsonl",
            resume_iteration=self.start if self.start > 0 else None,
        )
        bar = Progress(spec.iterations, self.start, spec.name, spec.progress and main)
        # on the CPU a host read is free: check every step; on CUDA only at log/checkpoint times
        check_every = 1 if spec.device.type == "cpu" else spec.log_every
        running = torch.zeros((), device=spec.device)
        bad = torch.zeros((), dtype=torch.bool, device=spec.device)
        count = 0
        t_start = time.perf_counter()
        t_interval = t_start
        spec.model.train()
        try:
            for it in range(self.start, spec.iterations):
                done = it + 1
                value = self.optimise(it, params).detach().float()
                running = running + value
                bad = bad | ~torch.isfinite(value)
                count += 1
                bar.update()
                is_log = done % spec.log_every == 0 or done == spec.iterations
                is_val = main and spec.validate is not None and (
                    done % spec.validate_every == 0 or done == spec.iterations
                )
                is_ckpt = done % spec.checkpoint_every == 0 or done == spec.iterations
                if (done % check_every == 0 or is_log or is_val or is_ckpt) and bool(bad):
                    raise _non_finite_error(spec.name, done, self.last_good)
                record: dict[str, Any] = {}
                if is_log:
                    now = time.perf_counter()
                    mean_loss = float(running) / count
                    record = {
                        "stage": spec.name,
                        "iteration": done,
                        "loss": mean_loss,
                        "it_per_s": count / max(now - t_interval, 1e-9),
                        "elapsed_s": now - t_start,
                    }
                    self.history.append(record)
                    log.write(record)
                    bar.set_postfix(loss=f"{mean_loss:.4f}")
                    running = torch.zeros((), device=spec.device)
                    count = 0
                    t_interval = now
                if is_val:
                    self.validate(done, log, bar)
                if is_ckpt:
                    self.save(done)
                if spec.callback is not None:
                    spec.callback(done, record)
        finally:
            bar.close()
        return t_start

    # ---- end
    def finish(self, t_start: float) -> LoopResult:
        """Share rank 0's weights and selection, write final.pt, return the result."""
        spec = self.spec
        # identical weights and buffers everywhere (BN statistics differ per process without
        # DDP's buffer broadcast); rank 0's selection of the best checkpoint
        _distributed.broadcast_module(spec.model)
        best = self.best
        best.state, best.iteration, best.score = _distributed.broadcast_object(
            (best.state, best.iteration, best.score)
        )
        final = None
        if spec.stage_dir is not None and not _distributed.is_main():
            _distributed.barrier()  # wait for rank 0's final.pt
            final = spec.stage_dir / "final.pt"
        elif spec.stage_dir is not None:
            final = save_checkpoint(
                spec.stage_dir / "final.pt",
                {
                    "stage": spec.name,
                    "iteration": spec.iterations,
                    "architecture": self.export_signature,
                    "model": self.export.state_dict(),
                    "settings": self.key,
                },
            )
            _distributed.barrier()
        best_path = self.best_path
        return LoopResult(
            iterations=spec.iterations,
            resumed_from=self.start,
            history=self.history,
            validation=self.validation,
            best_iteration=best.iteration,
            best_score=best.score,
            seconds=time.perf_counter() - t_start,
            final_checkpoint=final,
            best_checkpoint=best_path if best_path is not None and best_path.exists() else None,
            best_state=best.state,
        )


def run_loop(spec: LoopSpec) -> LoopResult:
    """Run (or resume) the optimisation loop described by `spec`."""
    loop = _Loop(spec)
    loop.resume()
    # several processes: start from rank 0's weights; only rank 0 logs, evaluates and writes
    _distributed.broadcast_module(spec.model)
    t_start = loop.iterate()
    return loop.finish(t_start)


def autocast_context(device: torch.device, amp: str, *, step_mode: str = "eager") -> Any:
    """Autocast on CUDA with bf16/fp16 (``amp="auto"``: bf16 where supported); no-op elsewhere.

    Under ``step_mode="cuda_graph"`` without autocast's cache of cast weights, as a captured
    region must run (the cast is recomputed, the values are the same).
    """
    if device.type != "cuda" or amp == "none":
        return _noop()
    dtype = resolve_amp_dtype(device, amp)
    return torch.autocast(device_type="cuda", dtype=dtype,
                          cache_enabled=step_mode != "cuda_graph")


def resolve_amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """Return the autocast dtype in use, or None."""
    if device.type != "cuda" or amp == "none":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16
