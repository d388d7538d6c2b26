import json
import math

import numpy as np
import pytest
import torch

from contrastlocal.models import decoder_block_keys, encoder_keys
from contrastlocal.training import (
    build_unet,
    evaluate,
    finetune,
    format_results_table,
    pretrain_global,
    pretrain_joint,
    pretrain_local,
    read_metrics,
    train_baseline,
    write_results,
)
from contrastlocal.training._loop import derive_seed

from ._helpers import tiny_config, volumes


def _params(net, keys):
    state = net.state_dict()
    return {k: state[k].clone() for k in keys}


def _trainable(net, keys):
    names = {n for n, _ in net.named_parameters()}
    return [k for k in keys if k in names]


@pytest.mark.slow
def test_recipe_end_to_end_hand_overs_and_table(tmp_path):
    cfg = tiny_config()
    data = volumes()
    g = pretrain_global(data["pretrain"], cfg, out=tmp_path / "global")
    assert len(g.history) == 3
    assert all(math.isfinite(r["loss"]) for r in g.history)
    records = read_metrics(tmp_path / "global" / "metrics.jsonl")
    assert [r["iteration"] for r in records] == [1, 2, 3]

    # stage 2 receives exactly the stage-1 encoder, which stays frozen
    loc = pretrain_local(data["pretrain"], cfg, encoder=g.network, out=tmp_path / "local")
    assert sorted(loc.copied_keys) == sorted(encoder_keys(loc.network))
    enc = _trainable(loc.network, encoder_keys(loc.network))
    g_state, l_state = g.network.state_dict(), loc.network.state_dict()
    for k in enc:
        assert torch.equal(g_state[k], l_state[k]), k
    block1 = _trainable(loc.network, decoder_block_keys(loc.network, 1))
    # the decoder block was trained (and not taken from stage 1)
    fresh_local = pretrain_local(data["pretrain"], cfg, encoder=g.network, iterations=0)
    assert any(
        not torch.equal(fresh_local.network.state_dict()[k], l_state[k]) for k in block1
    )
    assert not any(torch.equal(g_state[k], l_state[k]) for k in block1 if "weight" in k)

    # stage 3 starts from encoder + block 1 of stage 2; block 2 and head are fresh
    start = finetune(data["train"], data["val"], cfg, init=loc.network, iterations=0)
    unet = start.network
    u_state = unet.state_dict()
    copied = set(start.copied_keys)
    expected = set(encoder_keys(unet)) | set(decoder_block_keys(unet, 1))
    assert copied == expected
    for k in expected:
        assert torch.equal(u_state[k], l_state["backbone." + k]), k
    torch.manual_seed(derive_seed(cfg.seed, 3, 0))
    fresh = build_unet(cfg).state_dict()
    rest = [k for k in u_state if k not in expected]
    assert any(k.startswith("head.") for k in rest)
    assert any(k.startswith("decoder_blocks.1.") for k in rest)
    for k in rest:
        assert torch.equal(u_state[k], fresh[k]), k

    # the full fine-tuning keeps the best validation checkpoint
    ft = finetune(data["train"], data["val"], cfg, init=loc.network, out=tmp_path / "ft")
    assert len(ft.validation) == 3
    best = max(ft.validation, key=lambda r: r["val_dice"])
    assert ft.best_score == pytest.approx(best["val_dice"])
    again = evaluate(ft.network, data["val"], num_classes=4, compute_hd95=False)
    assert again.mean_dice == pytest.approx(ft.best_score)
    assert (tmp_path / "ft" / "best.pt").is_file()

    base = train_baseline(data["train"], data["val"], cfg)
    joint = pretrain_joint(data["pretrain"], cfg, lambda_local=2.0)
    assert all(math.isfinite(r["loss"]) for r in joint.history)

    results = {}
    for key, net in [("random", base.network), ("GD+LD", ft.network)]:
        res = evaluate(net, data["test"], num_classes=4)
        assert res.dice.shape == (1, 4)
        assert res.hd95 is not None
        assert np.isfinite(res.hd95[:, 1:]).all()
        results[key] = {"1": [res.mean_dice], "2": [res.mean_dice, res.mean_dice]}
    md, csv = write_results(results, tmp_path / "tables")
    lines = md.read_text().strip().splitlines()
    assert len(lines) == 4  # header, rule, 2 rows
    assert lines[0].count("|X_tr| =") == 2
    rows = csv.read_text().strip().splitlines()
    assert len(rows) == 1 + 4
    assert all(math.isfinite(float(r.split(",")[2])) for r in rows[1:])
    assert "±" in format_results_table(results)


@pytest.mark.slow
def test_finetune_rejects_foreign_checkpoint_before_training(tmp_path):
    cfg = tiny_config()
    data = volumes()
    g = pretrain_global(data["pretrain"], cfg, out=tmp_path / "g")
    wider = tiny_config(model={"channels": (8, 8, 16)})
    calls = []
    with pytest.raises(ValueError, match="another architecture"):
        finetune(
            data["train"], data["val"], wider, init=tmp_path / "g" / "final.pt",
            callback=lambda it, rec: calls.append(it),
        )
    assert calls == []
    # resuming a stage folder with different settings is refused too
    with pytest.raises(ValueError, match="different settings"):
        pretrain_global(data["pretrain"], cfg, out=tmp_path / "g", temperature=0.5)
    assert g.iterations == 3


def test_missing_cache_and_bad_volumes_fail_clearly(tmp_path):
    from contrastlocal.training import load_volumes

    with pytest.raises(ValueError, match="cache"):
        load_volumes(tmp_path / "nowhere")
    cfg = tiny_config(model={"image_size": (64, 64)})
    with pytest.raises(ValueError, match="image_size"):
        pretrain_global(volumes()["pretrain"], cfg)
    with pytest.raises(ValueError, match="volumes_per_batch"):
        pretrain_global(volumes()["pretrain"], tiny_config(), volumes_per_batch=9)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_config(global_stage={"iterations": 6})
    data = volumes()

    def poison(iteration, record):
        if iteration == 2:
            with torch.no_grad():
                for p in net_holder[0].parameters():
                    p.fill_(float("nan"))

    net_holder = []
    from contrastlocal.training import stages

    original = stages.GlobalPretrainNetwork

    def capture(*args, **kwargs):
        net = original(*args, **kwargs)
        net_holder.append(net)
        return net

    stages.GlobalPretrainNetwork = capture
    try:
        with pytest.raises(FloatingPointError, match="iter_0000002"):
            pretrain_global(data["pretrain"], cfg, out=tmp_path / "g", callback=poison)
    finally:
        stages.GlobalPretrainNetwork = original
    ckpts = sorted(p.name for p in (tmp_path / "g" / "checkpoints").iterdir())
    assert ckpts[-1] == "iter_0000002.pt"
    state = torch.load(tmp_path / "g" / "checkpoints" / ckpts[-1], weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.slow
def test_demo_quick_writes_results(tmp_path):
    from contrastlocal.training.demo import run_demo

    threads = torch.get_num_threads()
    other = 3  # a caller's setting that differs from the demo's one thread
    torch.set_num_threads(other)
    try:
        res = run_demo(tmp_path, seeds=(0, 1), quick=True, progress=False)
        assert torch.get_num_threads() == other  # the demo restores the caller's thread count
    finally:
        torch.set_num_threads(threads)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == res
    assert sorted(res) == ["GD", "GD+LD", "benchmark", "random"]
    for key, row in res.items():
        assert sorted(row) == (["all"] if key == "benchmark" else ["1", "2"])
        assert all(len(v) == 2 and all(0.0 <= x <= 1.0 for x in v) for v in row.values())
    table = (tmp_path / "results.md").read_text()
    assert table.count("|X_tr| =") == 4  # the scores' header and the paired differences'
    assert "| fully supervised (all labelled) | – | – |" in table
    paired = json.loads((tmp_path / "paired.json").read_text())
    for key in ("GD", "GD+LD"):
        for n in ("1", "2"):
            d = [a - b for a, b in zip(res[key][n], res["random"][n], strict=True)]
            cell = paired[key][n]
            assert cell["n"] == 2
            assert cell["wins"] == sum(x > 0 for x in d)
            assert cell["mean"] == pytest.approx(sum(d) / 2)
            assert cell["se"] == pytest.approx(abs(d[0] - d[1]) / 2)  # std(ddof=1)/sqrt(2)
            assert f"(won {cell['wins']}/2)" in table
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["torch_threads"] == 1
    assert run["timings"]["total_cpu_s"] > 0.0
    assert set(run["load_average_1min"]) == {"start", "end"}
