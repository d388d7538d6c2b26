"""finetune_grouped: K fine-tuning cells trained together give each cell's own results."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from contrastlocal.models import UNet  # noqa: E402
from contrastlocal.training import Volume, finetune, train_baseline  # noqa: E402
from contrastlocal.training._grouped import (  # noqa: E402
    GroupedCell,
    check_concurrent,
    default_concurrent,
    estimate_concurrent,
    finetune_grid,
    finetune_grouped,
)

from .training._helpers import tiny_config, volumes  # noqa: E402

TOL = {"rtol": 1e-6, "atol": 1e-7}


def _config(**finetune: object):  # type: ignore[no-untyped-def]
    base = {"iterations": 3, "batch_size": 4, "validate_every": 2, "log_every": 1}
    return tiny_config().replace(finetune={**base, **finetune})


def _extra_volumes(seed: int) -> list[Volume]:
    rng = np.random.default_rng(seed)
    return [
        Volume(rng.random((5, 32, 32), dtype=np.float32),
               rng.integers(0, 4, (5, 32, 32)).astype(np.uint8), case_id=f"x{seed}{i}")
        for i in range(2)
    ]


def _init_unet(config, seed: int) -> UNet:  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    m = config.model
    return UNet(in_channels=m.in_channels, out_channels=m.num_classes, channels=m.channels)


def _cells(config):  # type: ignore[no-untyped-def]
    v = volumes()
    extra = _extra_volumes(1)
    return [
        GroupedCell(v["train"], v["val"], init=None, seed=0),
        GroupedCell(extra[:1], v["val"], init=_init_unet(config, 5), seed=11),
        GroupedCell(v["train"] + extra[1:], [], seed=12, baseline=True),
    ]


def _assert_same_result(a, b, **tol: float) -> None:  # type: ignore[no-untyped-def]
    tol = tol or TOL
    assert [h["iteration"] for h in a.history] == [h["iteration"] for h in b.history]
    np.testing.assert_allclose(
        [h["loss"] for h in a.history], [h["loss"] for h in b.history], **tol
    )
    assert [r["iteration"] for r in a.validation] == [r["iteration"] for r in b.validation]
    np.testing.assert_allclose(
        [r["val_dice"] for r in a.validation], [r["val_dice"] for r in b.validation], **tol
    )
    assert a.best_iteration == b.best_iteration
    assert a.copied_keys == b.copied_keys
    sa, sb = a.network.state_dict(), b.network.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], msg=key, **tol)


def test_grouped_equals_cells_one_after_another():
    config = _config(mixup=True)
    cells = _cells(config)
    # float64 networks: Adam turns float32 rounding in the (truly zero) gradient of a convolution
    # bias before batch norm into steps of size lr, so only float64 separates equal from unequal
    together = finetune_grouped(cells, config, dtype=torch.float64)
    alone = [finetune_grouped([cell], config, dtype=torch.float64)[0] for cell in cells]
    assert len(together) == 3
    for a, b in zip(together, alone, strict=True):
        assert next(a.network.parameters()).dtype == torch.float64
        _assert_same_result(a, b, rtol=1e-9, atol=1e-11)
    # the cells really differ (own data, seeds, initialisation)
    losses = [r.history[0]["loss"] for r in together]
    assert len({round(x, 6) for x in losses}) == 3
    assert together[2].validation == []  # no validation volumes: last weights
    assert together[0].best_iteration in (2, 3)
    # the grid runner: 3 cells, 2 at a time, in order
    grid = finetune_grid(cells, config, concurrent=2, dtype=torch.float64)
    for a, b in zip(grid, alone, strict=True):
        _assert_same_result(a, b, rtol=1e-9, atol=1e-11)


def test_compiled_and_graph_fallback_steps_equal_eager():
    config = _config(iterations=2)
    cells = _cells(config)[:2]
    eager = finetune_grouped(cells, config, dtype=torch.float64)
    compiled = finetune_grouped(
        cells, config, dtype=torch.float64, step_mode="compile", compile_backend="aot_eager"
    )
    fallback = finetune_grouped(cells, config, dtype=torch.float64, step_mode="cuda_graph")
    for a, b, c in zip(eager, compiled, fallback, strict=True):
        _assert_same_result(b, a, rtol=1e-9, atol=1e-11)
        _assert_same_result(c, a, rtol=0, atol=0)


def test_k1_equals_finetune_and_baseline():
    """One cell through the driver is stages.finetune / train_baseline (same draws, same steps)."""
    config = _config()
    v = volumes()
    init = _init_unet(config, 5)
    ours = finetune_grouped([GroupedCell(v["train"], v["val"], init=init, seed=7)], config)[0]
    ref = finetune(v["train"], v["val"], config.replace(seed=7), init=init)
    _assert_same_result(ours, ref)
    ours_b = finetune_grouped(
        [GroupedCell(v["train"], v["val"], seed=3, baseline=True)],
        config.replace(finetune={"augment": False}),
    )[0]
    ref_b = train_baseline(
        v["train"], v["val"], config.replace(seed=3, finetune={"augment": False})
    )
    _assert_same_result(ours_b, ref_b)


@pytest.mark.parametrize(
    "fidelity",
    [{"soft_label_warp": True, "elastic_tail": True}, {"elastic_tail": True}],
    ids=["soft-label-warp", "elastic-tail"],
)
def test_k1_equals_finetune_with_the_authors_augmentation(fidelity):
    """The grouped driver draws the batches of ``finetune`` itself, fidelity switches included."""
    config = _config(mixup=True).replace(fidelity=fidelity)
    v = volumes()
    ours = finetune_grouped([GroupedCell(v["train"], v["val"], seed=7)], config)[0]
    ref = finetune(v["train"], v["val"], config.replace(seed=7))
    _assert_same_result(ours, ref)
    plain = finetune(v["train"], v["val"], _config(mixup=True).replace(seed=7))
    assert ours.history[0]["loss"] != pytest.approx(plain.history[0]["loss"], rel=1e-6)


def test_step_mode_comes_from_the_config():
    config = _config(iterations=1).replace(runtime={"step_mode": "cuda_graph"})
    with pytest.raises(ValueError, match="cannot capture CUDA graphs"):
        finetune_grouped(_cells(config)[:1], config)


def test_a_killed_group_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """Kill after iteration 3 of 5, rerun: the same results as an uninterrupted group."""
    from contrastlocal.training import _grouped

    config = _config(iterations=5, checkpoint_every=2, validate_every=2, log_every=1)
    cells = _cells(config)[:2]
    whole = finetune_grouped(cells, config, dtype=torch.float64)
    real = _grouped._finetune_inputs

    def killed_at_3(cfg, bank, device, it):  # type: ignore[no-untyped-def]
        if it == 3:
            raise KeyboardInterrupt
        return real(cfg, bank, device, it)

    root = tmp_path / "groups"
    monkeypatch.setattr(_grouped, "_finetune_inputs", killed_at_3)
    with pytest.raises(KeyboardInterrupt):
        finetune_grouped(cells, config, dtype=torch.float64, checkpoint_root=root)
    (folder,) = root.iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["iter_0000002.pt"]
    monkeypatch.setattr(_grouped, "_finetune_inputs", real)
    resumed = finetune_grouped(cells, config, dtype=torch.float64, checkpoint_root=root)
    assert not root.exists()  # removed once every cell's outputs are written
    for a, b in zip(resumed, whole, strict=True):
        assert a.resumed_from == 2
        _assert_same_result(a, b, rtol=0, atol=0)
    # other cells (another seed) never resume from this group's checkpoint
    monkeypatch.setattr(_grouped, "_finetune_inputs", killed_at_3)
    with pytest.raises(KeyboardInterrupt):
        finetune_grouped(cells, config, dtype=torch.float64, checkpoint_root=root)
    monkeypatch.setattr(_grouped, "_finetune_inputs", real)
    other = [GroupedCell(c.train, c.val, init=c.init, seed=99, baseline=c.baseline)
             for c in cells]
    fresh = finetune_grouped(other, config, dtype=torch.float64, checkpoint_root=root)
    assert all(r.resumed_from == 0 for r in fresh)
    assert len(list(root.iterdir())) == 1  # the first group's checkpoint is still there


def test_outputs_written_like_finetune(tmp_path):
    from contrastlocal.training import load_weights, read_metrics

    config = _config()
    v = volumes()
    cell = GroupedCell(v["train"], v["val"], seed=7, out=tmp_path / "grouped")
    # one cell: float32 results equal finetune's (several cells: see the float64 test above)
    ours = finetune_grouped([cell], config)[0]
    finetune(v["train"], v["val"], config.replace(seed=7), out=tmp_path / "ref")
    assert ours.stage_dir == tmp_path / "grouped"
    for name in ("best.pt", "final.pt"):
        a, b = UNet(1, 4, channels=(4, 8, 16)), UNet(1, 4, channels=(4, 8, 16))
        pa = load_weights(a, tmp_path / "grouped" / name)
        pb = load_weights(b, tmp_path / "ref" / name)
        assert pa["iteration"] == pb["iteration"]
        assert pa.get("settings") == pb.get("settings")
        for key, value in a.state_dict().items():
            torch.testing.assert_close(value, b.state_dict()[key], msg=key, **TOL)
    ra = read_metrics(tmp_path / "grouped" / "metrics.jsonl")
    rb = read_metrics(tmp_path / "ref" / "metrics.jsonl")
    assert [(r["iteration"], "val_dice" in r) for r in ra] == [
        (r["iteration"], "val_dice" in r) for r in rb
    ]
    np.testing.assert_allclose(
        [r.get("val_dice", r.get("loss")) for r in ra],
        [r.get("val_dice", r.get("loss")) for r in rb], **TOL,
    )
    best = UNet(1, 4, channels=(4, 8, 16))
    load_weights(best, tmp_path / "grouped" / "best.pt")
    for key, value in best.state_dict().items():
        torch.testing.assert_close(value, ours.network.state_dict()[key], rtol=0, atol=0)


def test_bad_cells():
    config = _config()
    v = volumes()
    with pytest.raises(ValueError, match="non-empty"):
        finetune_grouped([], config)
    with pytest.raises(TypeError, match=r"cells\[0\]"):
        finetune_grouped([(v["train"], v["val"])], config)  # type: ignore[list-item]
    unlabelled = [Volume(v["train"][0].image, None, case_id="u")]
    with pytest.raises(ValueError, match=r"cells\[1\].train"):
        finetune_grouped([GroupedCell(v["train"], []), GroupedCell(unlabelled, [])], config)
    with pytest.raises(ValueError, match="do not fit"):
        finetune_grouped([GroupedCell(v["train"], [])] * 3, config, memory_limit=1000)


def test_estimate_and_limit():
    config = _config()
    est = estimate_concurrent(config, "cpu", memory_limit=10**9)
    assert est.activation_bytes > 0
    assert est.state_bytes > 0
    assert est.max_cells == 10**9 // est.per_cell_bytes
    # activations grow linearly with the batch
    est2 = estimate_concurrent(config.replace(finetune={"batch_size": 8}), "cpu",
                               memory_limit=10**9)
    assert est2.activation_bytes == 2 * est.activation_bytes
    assert est2.state_bytes == est.state_bytes
    # state: 4 float32 copies of every parameter
    m = config.model
    params = sum(p.numel() for p in UNet(m.in_channels, m.num_classes, channels=m.channels)
                 .parameters())
    assert est.state_bytes == 16 * params
    # fake limit: exactly three cells fit
    limit = 3 * est.per_cell_bytes + 1
    assert check_concurrent(3, config, "cpu", memory_limit=limit).max_cells == 3
    with pytest.raises(ValueError, match=r"`concurrent` = 4 .*limit .*at most 3 cell") as info:
        check_concurrent(4, config, "cpu", memory_limit=limit)
    assert "GiB per cell" in str(info.value)
    with pytest.raises(ValueError, match="positive integer"):
        check_concurrent(0, config, "cpu")
    with pytest.raises(ValueError, match="memory_limit"):
        estimate_concurrent(config, "cpu", memory_limit=-1)
    # the real free memory of this machine fits at least one tiny cell
    assert estimate_concurrent(config, "cpu").max_cells >= 1
    assert default_concurrent(config, "cpu", memory_limit=limit) == 3
    assert default_concurrent(config, "cpu", memory_limit=10**12) == 8
    assert default_concurrent(config, "cpu", memory_limit=1) == 1
    with pytest.raises(ValueError, match="do not fit"):
        finetune_grid([GroupedCell(volumes()["train"], [])], config, concurrent=4,
                      memory_limit=limit)


def test_activation_estimate_matches_layer_outputs():
    """The meta-device count equals the sum of layer outputs of a real forward pass."""
    from contrastlocal.training._grouped import _activation_bytes

    config = _config()
    m = config.model
    torch.manual_seed(0)
    net = UNet(m.in_channels, m.num_classes, channels=m.channels)
    total = 0

    def hook(_m, _i, out):  # type: ignore[no-untyped-def]
        nonlocal total
        total += out.numel() * 4

    for mod in net.modules():
        if not list(mod.children()) and not isinstance(mod, torch.nn.Identity):
            mod.register_forward_hook(hook)
    net(torch.zeros(4, m.in_channels, *m.image_size))
    got, params = _activation_bytes(config, 4)
    pixels = 4 * int(np.prod(m.image_size))
    assert got - total == pixels * 4 * (2 * m.in_channels + 2 * m.num_classes + 4)
    assert params == sum(p.numel() for p in net.parameters())
