"""Stage keys for resume (issue 18 cases 2 and 3): upstream weights, precision, device type and
iteration counts decide whether a stage may resume; every refusal is one line naming the change."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import torch
from torch import nn

from contrastlocal.training import preset
from contrastlocal.training.checkpoint import (
    NON_TRAJECTORY_SETTINGS,
    ResumeRefusedError,
    check_resume,
    load_checkpoint,
    save_checkpoint,
    stage_key,
    weights_fingerprint,
)
from contrastlocal.training.config import validate_for_run


def _net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))


def test_weights_fingerprint_follows_the_weights_not_the_file(tmp_path):
    net = _net(0)
    payload = {"model": net.state_dict(), "iteration": 5, "stage": "global"}
    a = save_checkpoint(tmp_path / "a.pt", payload)
    b = save_checkpoint(tmp_path / "b.pt", {**payload, "iteration": 7, "note": "other"})
    fp = weights_fingerprint(net)
    assert fp == weights_fingerprint(net.state_dict()) == weights_fingerprint(a)
    assert weights_fingerprint(b) == fp  # same weights, other metadata
    assert weights_fingerprint(_net(1)) != fp
    with torch.no_grad():
        net[0].weight[0, 0, 0, 0] += 1e-6
    assert weights_fingerprint(net) != fp
    net2 = _net(0)
    net2[1].running_mean += 1  # buffers count too
    assert weights_fingerprint(net2) != fp
    assert weights_fingerprint(None) is None
    with pytest.raises(ValueError, match="holds no network weights"):
        weights_fingerprint(save_checkpoint(tmp_path / "c.pt", {"iteration": 1}))


def _key(upstream="u1", device_type="cpu", precision="fp32", **settings):
    base = {"learning_rate": 1e-3, "batch_size": 4, "iterations": 100, "log_every": 10}
    return stage_key(
        {**base, **settings}, upstream=upstream, device_type=device_type, precision=precision
    )


def test_finetune_does_not_resume_from_other_upstream_weights(tmp_path):
    # case 2: stage 1 redone (``--fresh`` killed after it), the fine-tuning checkpoint on disk
    # was trained from the previous pre-trained weights
    old_upstream = save_checkpoint(tmp_path / "old.pt", {"model": _net(0).state_dict()})
    new_upstream = save_checkpoint(tmp_path / "new.pt", {"model": _net(1).state_dict()})
    ckpt = save_checkpoint(
        tmp_path / "iter_50.pt",
        {"iteration": 50, "settings": _key(upstream=weights_fingerprint(old_upstream))},
    )
    saved = load_checkpoint(ckpt)
    same = _key(upstream=weights_fingerprint(old_upstream))
    check_resume(saved["settings"], same, done=50, iterations=100, stage="finetune", source=ckpt)
    with pytest.raises(ResumeRefusedError) as info:
        check_resume(
            saved["settings"],
            _key(upstream=weights_fingerprint(new_upstream)),
            done=50,
            iterations=100,
            stage="finetune",
            source=ckpt,
        )
    text = str(info.value)
    assert "\n" not in text
    assert "stage 'finetune'" in text
    assert "upstream_weights" in text
    assert weights_fingerprint(new_upstream) in text
    assert "--fresh" in text


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"precision": "bf16"}, "precision 'fp32' -> 'bf16'"),
        ({"device_type": "cuda"}, "device_type 'cpu' -> 'cuda'"),
        ({"learning_rate": 1e-4}, "learning_rate 0.001 -> 0.0001"),
    ],
)
def test_precision_device_and_settings_are_part_of_the_key(change, words):
    with pytest.raises(ResumeRefusedError, match=words):
        check_resume(_key(), _key(**change), done=10, iterations=100, stage="s", source="d")


def test_non_trajectory_settings_may_change():
    assert {"iterations", "log_every"} <= NON_TRAJECTORY_SETTINGS
    check_resume(
        _key(), _key(iterations=200, log_every=5), done=100, iterations=200, stage="s", source="d"
    )


def test_fewer_iterations_than_done_are_refused_not_mislabelled():
    # case 3: a rerun asking for 40 iterations over a stage that has done 100
    with pytest.raises(ResumeRefusedError) as info:
        check_resume(
            _key(),
            _key(iterations=40),
            done=100,
            iterations=40,
            stage="global",
            source="out/global/final.pt",
        )
    text = str(info.value)
    assert "already done 100 iterations, more than the 40 asked for" in text
    assert "--fresh" in text
    check_resume(_key(), _key(), done=100, iterations=100, stage="global", source="d")


def test_stage_key_refuses_bad_precision_and_reserved_names():
    with pytest.raises(ValueError, match="precision"):
        stage_key({}, upstream=None, device_type="cpu", precision="half")
    with pytest.raises(ValueError, match="upstream_weights"):
        stage_key({"upstream_weights": 1}, upstream=None, device_type="cpu", precision="fp32")


def test_stage_key_from_validate_for_run():
    rt = validate_for_run(preset("synthetic"))
    key = stage_key({"a": 1}, upstream=None, device_type=rt.device_type, precision=rt.precision)
    assert (key["device_type"], key["precision"], key["upstream_weights"]) == ("cpu", "fp32", None)
