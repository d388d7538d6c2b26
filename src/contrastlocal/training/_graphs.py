"""A training step without launch overhead: CUDA-graph capture or torch.compile (private).

:class:`TrainStep` wraps ``loss_fn(*inputs) -> loss`` and an optimiser into one callable that
performs zero-grad → forward → backward → optimiser step, in one of three modes:

``"eager"``
    Plain PyTorch (the reference).
``"cuda_graph"``
    The whole step -- forward, backward and the optimiser's update -- is captured once as a
    :class:`torch.cuda.CUDAGraph` and replayed: each call copies its inputs into static buffers
    and launches the graph (one launch instead of hundreds). The pattern is torch's documented
    whole-network capture: warm-up iterations on a side stream, gradients set to None before the
    capture so the backward allocates them from the graph's pool, and the optimiser built with
    ``capturable=True`` (Adam / AdamW; set here if it was not, the step counts of an optimiser
    with state -- resumed from a checkpoint -- moved to the device). The last warm-up step runs
    under ``torch.cuda.set_sync_debug_mode("error")``: a step that reads values back to the host
    is refused with a ``ValueError`` before any capture is attempted (the first may do one-off
    set-up that copies, such as the local loss building its cached index tables). The warm-up
    steps are undone -- weights, buffers (batch-norm statistics) and optimiser state are restored
    in place -- so the first replayed step is the first training step and results equal the eager
    step's for the same inputs (to floating-point tolerance: capturable Adam keeps its step count
    on the device). Everything random must happen outside the graph, before the call (the
    stages' augmentation does: it feeds the step its images); the input shapes are fixed.
``"compile"``
    ``torch.compile(loss_fn)`` with ``mode="reduce-overhead"`` on CUDA (CUDA graphs managed by
    the compiler) and the default mode elsewhere; backward and optimiser step as in eager mode.
    The first call includes the compilation (:attr:`TrainStep.first_call_seconds`).

On a device other than CUDA, ``"cuda_graph"`` is refused with a ``ValueError`` that says so, or,
with ``fallback=True``, runs eagerly (:attr:`TrainStep.mode_used` is then ``"eager"``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import nn

__all__ = ["StepMode", "TrainStep"]

StepMode = Literal["eager", "cuda_graph", "compile"]
_MODES = ("eager", "cuda_graph", "compile")


def _backward(loss: torch.Tensor) -> None:
    """Backward of a scalar loss, or of the sum of a vector of per-run losses."""
    (loss if loss.ndim == 0 else loss.sum()).backward()  # type: ignore[no-untyped-call]


class TrainStep:
    """One optimisation step as a callable: eager, captured as a CUDA graph, or compiled.

    Parameters
    ----------
    model : torch.nn.Module
        The network trained by `optimizer` (its weights and buffers are restored after the CUDA
        graph's warm-up).
    loss_fn : callable
        ``loss_fn(*inputs)`` returns the scalar loss, or a vector of per-run losses whose sum is
        minimised (K cells of a grouped network); it calls `model`. No host reads or random
        draws inside for ``"cuda_graph"``.
    optimizer : torch.optim.Optimizer
        Updates `model`'s parameters; Adam or AdamW for ``"cuda_graph"``.
    example_inputs : sequence of tensor
        Tensors of the shapes, dtypes and device every call will pass (the static buffers of the
        CUDA graph are allocated from them).
    mode : {"eager", "cuda_graph", "compile"}, default "eager"
        See the module notes.
    fallback : bool, default False
        ``"cuda_graph"`` on a non-CUDA device: run eagerly instead of raising.
    warmup : int, default 3
        Warm-up iterations before the capture (undone afterwards); the last is checked for host
        synchronisation, so keep at least 2 when the first call sets something up.
    compile_backend : str, optional
        ``torch.compile`` backend (default: inductor); ``"aot_eager"`` / ``"eager"`` trace without
        generating code.
    compile_mode : str, optional
        ``torch.compile`` mode (default: ``"reduce-overhead"`` on CUDA, the default mode elsewhere).

    Raises
    ------
    ValueError
        For an unknown mode, ``"cuda_graph"`` off CUDA without `fallback`, an optimiser that
        cannot be captured, or inputs on another device.

    Examples
    --------
    >>> import torch
    >>> from contrastlocal.training._graphs import TrainStep
    >>> net = torch.nn.Linear(3, 1)
    >>> opt = torch.optim.Adam(net.parameters(), lr=0.1)
    >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
    >>> step = TrainStep(net, lambda a, b: ((net(a) - b) ** 2).mean(), opt, (x, y),
    ...                  mode="cuda_graph", fallback=True)
    >>> step.mode_used
    'eager'
    >>> loss = step(x, y)
    >>> loss.shape
    torch.Size([])
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[..., torch.Tensor],
        optimizer: torch.optim.Optimizer,
        example_inputs: Sequence[torch.Tensor],
        *,
        mode: StepMode = "eager",
        fallback: bool = False,
        warmup: int = 3,
        compile_backend: str | None = None,
        compile_mode: str | None = None,
    ) -> None:
        if mode not in _MODES:
            msg = f"`mode` must be one of {_MODES}; got {mode!r}."
            raise ValueError(msg)
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
            msg = f"`warmup` must be a positive integer; got {warmup!r}."
            raise ValueError(msg)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        if not params:
            msg = "`optimizer` holds no parameters."
            raise ValueError(msg)
        self.device = params[0].device
        for i, t in enumerate(example_inputs):
            if not isinstance(t, torch.Tensor) or t.device != self.device:
                where = t.device if isinstance(t, torch.Tensor) else type(t).__name__
                msg = (
                    f"`example_inputs[{i}]` must be a tensor on the parameters' device "
                    f"{self.device}; got {where}."
                )
                raise ValueError(msg)
        if mode == "cuda_graph" and self.device.type != "cuda":
            if not fallback:
                msg = (
                    f"mode='cuda_graph' needs the model on a CUDA device; its parameters are on "
                    f"{self.device}. Use mode='eager' (or 'compile'), or pass fallback=True to "
                    "run eagerly off CUDA."
                )
                raise ValueError(msg)
            mode = "eager"
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.mode_used: StepMode = mode
        self.first_call_seconds: float | None = None
        self.capture_seconds: float | None = None
        self._calls = 0
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static_inputs: list[torch.Tensor] = []
        self._static_loss: torch.Tensor | None = None
        self._compiled: Callable[..., torch.Tensor] | None = None
        if mode == "cuda_graph":
            self._capture(list(example_inputs), warmup)
        elif mode == "compile":
            cmode = compile_mode or ("reduce-overhead" if self.device.type == "cuda" else None)
            kwargs: dict[str, Any] = {"mode": cmode}
            if compile_backend is not None:
                kwargs["backend"] = compile_backend
            self._compiled = torch.compile(loss_fn, **kwargs)

    # ------------------------------------------------------------------------- capture
    def _check_capturable(self) -> None:
        opt = self.optimizer
        if not isinstance(opt, torch.optim.Adam | torch.optim.AdamW):
            msg = (
                "mode='cuda_graph' supports Adam and AdamW optimisers (their fresh state is all "
                f"zeros, so the warm-up can be undone); got {type(opt).__name__}."
            )
            raise ValueError(msg)
        for group in opt.param_groups:
            if not group.get("capturable", False):
                group["capturable"] = True
                # an optimiser with state (e.g. loaded from a checkpoint of an eager run) keeps
                # its step counts on the host; capturable Adam counts on the parameters' device
                for p in group["params"]:
                    state = opt.state.get(p, {})
                    if isinstance(state.get("step"), torch.Tensor):
                        state["step"] = state["step"].to(device=p.device, dtype=torch.float32)

    def _capture(self, inputs: list[torch.Tensor], warmup: int) -> None:
        self._check_capturable()
        t0 = time.perf_counter()
        opt = self.optimizer
        self._static_inputs = [t.detach().clone() for t in inputs]
        model_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        opt_state = {
            p: {k: v.detach().clone() for k, v in s.items() if isinstance(v, torch.Tensor)}
            for p, s in opt.state.items()
        }
        side = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for i in range(warmup):
                opt.zero_grad(set_to_none=True)
                # the last warm-up step runs with host-synchronisation checks: a step that reads
                # a value back (.item(), nonzero, a host-side condition) cannot be captured, and a
                # capture that fails half-way can leave the CUDA context unusable. Not the first:
                # one-off set-up there (index tables a loss copies to the device once and keeps)
                # is no part of the step that is captured
                checked = i == warmup - 1
                old_mode = torch.cuda.get_sync_debug_mode()
                if checked:
                    torch.cuda.set_sync_debug_mode("error")
                try:
                    _backward(self.loss_fn(*self._static_inputs))
                    opt.step()
                except RuntimeError as exc:
                    if checked and "synchroniz" in str(exc):
                        msg = (
                            "mode='cuda_graph': the step synchronises with the host (it reads a "
                            f"value back), so it cannot be captured as a CUDA graph: {exc}"
                        )
                        raise ValueError(msg) from exc
                    raise
                finally:
                    torch.cuda.set_sync_debug_mode(old_mode)
        torch.cuda.current_stream(self.device).wait_stream(side)
        # undo the warm-up in place (the graph records these very tensors' addresses)
        with torch.no_grad():
            for key, value in self.model.state_dict().items():
                value.copy_(model_state[key])
            for p, s in opt.state.items():
                before = opt_state.get(p)
                for k, v in s.items():
                    if isinstance(v, torch.Tensor):
                        if before is None:
                            v.zero_()
                        else:
                            v.copy_(before[k])
        opt.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            loss = self.loss_fn(*self._static_inputs)
            _backward(loss)
            opt.step()
        self._static_loss = loss.detach()
        self._graph = graph
        torch.cuda.synchronize(self.device)
        self.capture_seconds = time.perf_counter() - t0

    # ------------------------------------------------------------------------- call
    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Run one step on `inputs`; return the loss (detached, a fresh tensor on the device)."""
        t0 = time.perf_counter() if self._calls == 0 else None
        if self._graph is not None:
            if len(inputs) != len(self._static_inputs):
                msg = (
                    f"expected {len(self._static_inputs)} inputs (as `example_inputs`); got "
                    f"{len(inputs)}."
                )
                raise ValueError(msg)
            for i, (static, new) in enumerate(zip(self._static_inputs, inputs, strict=True)):
                if new.shape != static.shape or new.dtype != static.dtype:
                    msg = (
                        f"input {i} must keep the captured shape {tuple(static.shape)} and dtype "
                        f"{static.dtype}; got {tuple(new.shape)}, {new.dtype}."
                    )
                    raise ValueError(msg)
                static.copy_(new, non_blocking=True)
            self._graph.replay()
            assert self._static_loss is not None
            out = self._static_loss.clone()
        else:
            self.optimizer.zero_grad(set_to_none=True)
            fn = self._compiled if self._compiled is not None else self.loss_fn
            loss = fn(*inputs)
            _backward(loss)
            self.optimizer.step()
            out = loss.detach().clone()
        if t0 is not None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.first_call_seconds = time.perf_counter() - t0
        self._calls += 1
        return out
