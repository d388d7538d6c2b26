"""``runtime.step_mode``: every stage's step through TrainStep (compiled / captured) equals eager.

The stages split their step into ``batch(it)`` (sampling and augmentation: every random draw) and
``loss(*inputs)`` (forward and loss), which :class:`~contrastlocal.training._graphs.TrainStep`
compiles or captures as a CUDA graph. On the CPU the compiled step is traced with the
``aot_eager`` backend (no code generation): measured bit-identical to eager here, checked to
float32 rounding. The ``gpu``-marked tests capture the real stages on CUDA (skipped elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from contrastlocal.training import (  # noqa: E402
    _loop,
    finetune,
    preset,
    pretrain_global,
    pretrain_joint,
    pretrain_local,
)
from contrastlocal.training._graphs import TrainStep  # noqa: E402
from contrastlocal.training.config import check_step_mode, validate_for_run  # noqa: E402

from ._helpers import tiny_config, volumes  # noqa: E402

Stage = Callable[..., Any]
STAGES: dict[str, Stage] = {
    "global": lambda cfg, **kw: pretrain_global(volumes()["pretrain"], cfg, **kw),
    "local": lambda cfg, **kw: pretrain_local(volumes()["pretrain"], cfg, **kw),
    "joint": lambda cfg, **kw: pretrain_joint(volumes()["pretrain"], cfg, **kw),
    "finetune": lambda cfg, **kw: finetune(volumes()["train"], volumes()["val"], cfg, **kw),
}
TOL = {"rtol": 1e-6, "atol": 1e-7}


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[TrainStep]:
    """Trace compiled steps with aot_eager; record every TrainStep the loop builds."""
    made: list[TrainStep] = []

    class Recorded(TrainStep):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(_loop, "COMPILE_BACKEND", "aot_eager")
    monkeypatch.setattr(_loop, "TrainStep", Recorded)
    return made


def _assert_same_run(a: Any, b: Any) -> None:
    assert [h["iteration"] for h in a.history] == [h["iteration"] for h in b.history]
    torch.testing.assert_close(
        torch.tensor([h["loss"] for h in a.history]),
        torch.tensor([h["loss"] for h in b.history]), **TOL,
    )
    assert [r["val_dice"] for r in a.validation] == pytest.approx(
        [r["val_dice"] for r in b.validation], rel=1e-6
    )
    assert a.best_iteration == b.best_iteration
    sa, sb = a.network.state_dict(), b.network.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], msg=key, **TOL)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_compiled_step_equals_eager_in_every_stage(stage: str, built: list[TrainStep]) -> None:
    cfg = tiny_config()
    eager = STAGES[stage](cfg)
    assert built == []  # the eager loop builds no TrainStep
    compiled = STAGES[stage](cfg.replace(runtime={"step_mode": "compile"}))
    assert [s.mode_used for s in built] == ["compile"]
    assert built[0].first_call_seconds is not None
    _assert_same_run(compiled, eager)


AUTHORS = {
    "global": {"fidelity.global_loss": True},
    "local": {"fidelity.local_batch": True, "fidelity.local_loss": True},
    "finetune": {"fidelity.soft_label_warp": True, "fidelity.elastic_tail": True},
}


def _authors_config(stage: str, **runtime: Any) -> Any:
    base = tiny_config()
    cfg = preset("synthetic", **AUTHORS[stage])
    return base.replace(fidelity=cfg.fidelity, runtime=runtime)


@pytest.mark.parametrize("stage", sorted(AUTHORS))
def test_compiled_step_equals_eager_with_the_authors_losses(
    stage: str, built: list[TrainStep]
) -> None:
    """The authors' batches and losses (index tables, fixed pairings) trace too."""
    eager = STAGES[stage](_authors_config(stage))
    compiled = STAGES[stage](_authors_config(stage, step_mode="compile"))
    assert [s.mode_used for s in built] == ["compile"]
    _assert_same_run(compiled, eager)


def test_a_run_resumes_in_another_step_mode(tmp_path: Path, built: list[TrainStep]) -> None:
    """A run's checkpoint continued in the other step mode == the eager run (both ways)."""
    cfg = tiny_config()
    eager = finetune(volumes()["train"], volumes()["val"], cfg)
    for first, then in (("eager", "compile"), ("compile", "eager")):
        out = tmp_path / f"{first}-then-{then}"
        finetune(volumes()["train"], volumes()["val"],
                 cfg.replace(runtime={"step_mode": first}), out=out)
        # keep the checkpoint of iteration 2 only: the rerun performs iteration 3
        (out / "checkpoints" / "iter_0000003.pt").unlink()
        (out / "final.pt").unlink()
        resumed = finetune(volumes()["train"], volumes()["val"],
                           cfg.replace(runtime={"step_mode": then}), out=out)
        assert resumed.resumed_from == 2
        assert resumed.history[-1]["loss"] == pytest.approx(eager.history[-1]["loss"], rel=1e-6)
        sa, sb = resumed.network.state_dict(), eager.network.state_dict()
        for key in sa:
            torch.testing.assert_close(sa[key], sb[key], msg=key, **TOL)
    assert [s.mode_used for s in built] == ["compile", "compile"]


def test_cuda_graph_off_cuda_is_refused_before_training() -> None:
    cfg = tiny_config().replace(runtime={"step_mode": "cuda_graph", "device": "cpu"})
    expected = "`runtime.step_mode` is 'cuda_graph' but the device 'cpu' cannot capture CUDA"
    with pytest.raises(ValueError, match=expected):
        validate_for_run(cfg)
    calls: list[int] = []
    with pytest.raises(ValueError, match=expected):
        finetune(volumes()["train"], volumes()["val"], cfg,
                 callback=lambda it, rec: calls.append(it))
    assert calls == []  # nothing trained


def test_step_mode_checks() -> None:
    for mode in ("eager", "compile", "cuda_graph"):
        check_step_mode(mode, "cuda:0", "bf16")
        check_step_mode(mode, "cuda", "fp32")
    check_step_mode("compile", "cpu", "fp32")
    check_step_mode("eager", "cuda", "fp16", processes=4)
    with pytest.raises(ValueError, match="fp16 autocast needs a gradient scaler"):
        check_step_mode("cuda_graph", "cuda", "fp16")
    with pytest.raises(ValueError, match="fp16 autocast needs a gradient scaler"):
        check_step_mode("compile", "cuda", "fp16")
    with pytest.raises(ValueError, match="2 processes train together"):
        check_step_mode("compile", "cuda", "bf16", processes=2)
    with pytest.raises(ValueError, match=r"runtime\.step_mode"):
        preset("synthetic", **{"runtime.step_mode": "graphs"})
    with pytest.raises(ValueError, match=r"set runtime\.compile=false"):
        preset("synthetic", **{"runtime.step_mode": "compile", "runtime.compile": True})
    assert preset("synthetic").runtime.step_mode == "eager"


# ----------------------------------------------------------------------------------- on a GPU
def _assert_close_on_gpu(a: Any, b: Any, lr: float, iterations: int) -> None:
    """`a` and `b` agree on their common logged iterations and in their weights."""
    losses = {h["iteration"]: h["loss"] for h in b.history}
    common = [h for h in a.history if h["iteration"] in losses]
    assert common
    torch.testing.assert_close(
        torch.tensor([h["loss"] for h in common]),
        torch.tensor([losses[h["iteration"]] for h in common]), rtol=1e-4, atol=1e-5,
    )
    # a convolution bias before batch norm has a zero gradient up to rounding, which Adam
    # (eps 1e-8) turns into steps of ±lr: such weights may differ by up to 2·lr per iteration
    sa, sb = a.network.state_dict(), b.network.state_dict()
    for key in sa:
        torch.testing.assert_close(sa[key].float(), sb[key].float(), rtol=1e-4,
                                   atol=2 * lr * iterations, msg=key)


@pytest.mark.gpu
@pytest.mark.usefixtures("exact_float32")
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_cuda_graph_step_equals_eager_in_every_stage_on_cuda(
    stage: str, built: list[TrainStep]
) -> None:
    cfg = tiny_config().replace(runtime={"device": "cuda", "amp": "none"})
    eager = STAGES[stage](cfg)
    graphed = STAGES[stage](cfg.replace(runtime={"step_mode": "cuda_graph"}))
    assert [s.mode_used for s in built] == ["cuda_graph"]
    assert built[0].capture_seconds is not None
    lr = cfg.finetune.learning_rate if stage == "finetune" else cfg.global_stage.learning_rate
    _assert_close_on_gpu(graphed, eager, lr, 3)


@pytest.mark.gpu
@pytest.mark.usefixtures("exact_float32")
def test_an_eager_checkpoint_resumes_as_a_cuda_graph_on_cuda(
    tmp_path: Path, built: list[TrainStep]
) -> None:
    """Resume converts the loaded (non-capturable) Adam state and the capture continues it."""
    cfg = tiny_config().replace(runtime={"device": "cuda", "amp": "none"})
    eager = finetune(volumes()["train"], volumes()["val"], cfg, out=tmp_path / "run")
    (tmp_path / "run" / "checkpoints" / "iter_0000003.pt").unlink()
    (tmp_path / "run" / "final.pt").unlink()
    resumed = finetune(volumes()["train"], volumes()["val"],
                       cfg.replace(runtime={"step_mode": "cuda_graph"}), out=tmp_path / "run")
    assert resumed.resumed_from == 2
    assert [s.mode_used for s in built] == ["cuda_graph"]
    _assert_close_on_gpu(resumed, eager, cfg.finetune.learning_rate, 1)


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("stage", "fidelity"),
    [(stage, "paper") for stage in sorted(STAGES)]
    + [(stage, "authors") for stage in sorted(AUTHORS)],
)
def test_stage_batches_do_not_synchronise_on_cuda(
    stage: str, fidelity: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drawing and augmenting a batch never waits for the GPU (no host read, no blocking copy)."""
    from contrastlocal.training import stages

    specs: list[_loop.LoopSpec] = []

    def capture(spec: _loop.LoopSpec) -> Any:
        specs.append(spec)
        raise KeyboardInterrupt  # stop before training

    monkeypatch.setattr(stages, "run_loop", capture)
    runtime = {"device": "cuda", "amp": "none"}
    cfg = (_authors_config(stage, **runtime) if fidelity == "authors"
           else tiny_config().replace(runtime=runtime))
    if stage == "finetune":
        cfg = cfg.replace(finetune={"mixup": True})
    with pytest.raises(KeyboardInterrupt):
        STAGES[stage](cfg)
    spec = specs[0]
    spec.batch(0)  # first call: one-off set-up (tables, caches) may copy
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for it in (1, 2):
            inputs = spec.batch(it)
            assert all(t.device.type == "cuda" for t in inputs)
    finally:
        torch.cuda.set_sync_debug_mode("default")
