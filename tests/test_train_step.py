"""TrainStep: eager, CUDA-graph and compiled training steps give the same training trajectory.

The CPU tests cover the refusal / fallback of graph capture off CUDA and a compiled step (backend
``aot_eager``: traced, no code generation) against eager. The ``gpu``-marked tests compare the
CUDA-graph and ``reduce-overhead`` steps with eager on a GPU (skipped where there is none).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

torch = pytest.importorskip("torch")

from contrastlocal.models import GroupedUNet, UNet  # noqa: E402
from contrastlocal.training._graphs import TrainStep  # noqa: E402

STEPS = 4


Setup = tuple[UNet, torch.optim.Optimizer, Callable[..., torch.Tensor]]


def _setup(device: str, seed: int = 0) -> Setup:
    torch.manual_seed(seed)
    net = UNet(1, 3, channels=(4, 8, 8)).to(device)
    # eps 1e-3: the gradient of a convolution bias before batch norm is zero up to rounding,
    # which Adam with eps 1e-8 would turn into steps of size lr whose sign depends on the
    # reduction order (GPU kernels are free to change it); with 1e-3 such noise moves nothing
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, eps=1e-3)

    def loss_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(net(x), y)

    return net, opt, loss_fn


def _batches(device: str, n: int = STEPS) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    return [
        (torch.randn(4, 1, 16, 16, generator=g).to(device),
         torch.randint(0, 3, (4, 16, 16), generator=g).to(device))
        for _ in range(n)
    ]


Run = tuple[list[float], dict[str, torch.Tensor], TrainStep]


def _train(mode: str, device: str, **kw: object) -> Run:
    net, opt, loss_fn = _setup(device)
    data = _batches(device)
    step = TrainStep(net, loss_fn, opt, data[0], mode=mode, **kw)  # type: ignore[arg-type]
    losses = [float(step(x, y)) for x, y in data]
    return losses, {k: v.detach().cpu() for k, v in net.state_dict().items()}, step


def _assert_same(a, b, rtol: float, atol: float) -> None:  # type: ignore[no-untyped-def]
    torch.testing.assert_close(torch.tensor(a[0]), torch.tensor(b[0]), rtol=rtol, atol=atol)
    for key in a[1]:
        torch.testing.assert_close(a[1][key], b[1][key], rtol=rtol, atol=atol, msg=key)


def test_cuda_graph_off_cuda_is_refused_with_a_clear_message():
    net, opt, loss_fn = _setup("cpu")
    with pytest.raises(ValueError, match=r"needs the model on a CUDA device.*fallback=True"):
        TrainStep(net, loss_fn, opt, _batches("cpu")[0], mode="cuda_graph")


def test_cuda_graph_off_cuda_falls_back_to_eager_when_asked():
    eager = _train("eager", "cpu")
    fell = _train("cuda_graph", "cpu", fallback=True)
    assert fell[2].mode_used == "eager"
    assert fell[2].capture_seconds is None
    _assert_same(fell, eager, rtol=0, atol=0)
    # the step trains: the loss moves
    assert eager[0][0] != eager[0][-1]


def test_compiled_step_equals_eager_on_cpu():
    eager = _train("eager", "cpu")
    compiled = _train("compile", "cpu", compile_backend="aot_eager")
    assert compiled[2].mode_used == "compile"
    assert compiled[2].first_call_seconds is not None
    _assert_same(compiled, eager, rtol=1e-5, atol=1e-6)


def test_bad_arguments():
    net, opt, loss_fn = _setup("cpu")
    batch = _batches("cpu")[0]
    with pytest.raises(ValueError, match="`mode`"):
        TrainStep(net, loss_fn, opt, batch, mode="graph")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`warmup`"):
        TrainStep(net, loss_fn, opt, batch, warmup=0)
    with pytest.raises(ValueError, match=r"example_inputs\[1\]"):
        TrainStep(net, loss_fn, opt, (batch[0], "labels"))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.usefixtures("exact_float32")
def test_cuda_graph_step_equals_eager_on_cuda():
    eager = _train("eager", "cuda")
    graphed = _train("cuda_graph", "cuda")
    assert graphed[2].mode_used == "cuda_graph"
    assert graphed[2].capture_seconds is not None
    _assert_same(graphed, eager, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.usefixtures("exact_float32")
def test_cuda_graph_rejects_other_shapes_and_optimisers_on_cuda():
    net, opt, loss_fn = _setup("cuda")
    data = _batches("cuda")
    step = TrainStep(net, loss_fn, opt, data[0], mode="cuda_graph")
    with pytest.raises(ValueError, match="captured shape"):
        step(data[0][0][:2], data[0][1][:2])
    sgd = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="Adam and AdamW"):
        TrainStep(net, loss_fn, sgd, data[0], mode="cuda_graph")


@pytest.mark.gpu
def test_cuda_graph_refuses_a_step_that_reads_back_to_the_host_on_cuda():
    net, opt, loss_fn = _setup("cuda")

    def syncing(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = loss_fn(x, y)
        return loss * 2 if loss.item() > 0 else loss

    with pytest.raises(ValueError, match="synchronises with the host"):
        TrainStep(net, syncing, opt, _batches("cuda")[0], mode="cuda_graph")
    # the CUDA context is still usable
    assert float(torch.ones(2, device="cuda").sum()) == 2.0


@pytest.mark.gpu
def test_cuda_graph_allows_one_off_set_up_in_the_first_call_on_cuda():
    """A table copied to the device once and cached (as the local loss's) is no host read."""
    net, opt, loss_fn = _setup("cuda")
    cache: dict[str, torch.Tensor] = {}

    def with_table(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if "w" not in cache:  # a blocking host-to-device copy, on the first call only
            cache["w"] = torch.tensor([1.0, 2.0, 3.0], device="cuda")
        return loss_fn(x, y) * cache["w"].sum() / 6

    step = TrainStep(net, with_table, opt, _batches("cuda")[0], mode="cuda_graph")
    assert step.mode_used == "cuda_graph"
    assert torch.isfinite(step(*_batches("cuda")[1])).item()


@pytest.mark.gpu
@pytest.mark.usefixtures("exact_float32")
def test_reduce_overhead_compiled_step_equals_eager_on_cuda():
    eager = _train("eager", "cuda")
    compiled = _train("compile", "cuda")
    _assert_same(compiled, eager, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.usefixtures("exact_float32")
def test_grouped_unet_on_cuda_equals_separate_networks_cuda_graph():
    torch.manual_seed(0)
    nets = [UNet(1, 3, channels=(4, 8, 8)).cuda() for _ in range(3)]
    grouped = GroupedUNet.from_unets(nets).to(memory_format=torch.channels_last)
    xs = [torch.randn(4, 1, 16, 16, device="cuda") for _ in range(3)]
    got = grouped.split(grouped(grouped.stack(xs).contiguous(memory_format=torch.channels_last)))
    for net, x, y in zip(nets, xs, got, strict=True):
        torch.testing.assert_close(y, net(x), rtol=1e-4, atol=1e-5)
