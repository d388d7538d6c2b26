import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from contrastlocal.training import finetune, pretrain_global

from ._helpers import tiny_config, volumes

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import os, signal, sys
import torch
torch.set_num_threads({threads})
from tests.training._helpers import tiny_config, volumes
from contrastlocal.training import finetune, pretrain_global

def kill(iteration, record):
    if iteration == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)

data = volumes()
cfg = tiny_config()
if {stage!r} == "global":
    pretrain_global(data["pretrain"], cfg, out={out!r}, callback=kill, **{overrides!r})
else:
    finetune(data["train"], data["val"], cfg, out={out!r}, callback=kill, **{overrides!r})
"""


def _child_env():
    # this tree's package first (not another checkout an editable install may point at)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}


def _run(stage, out, **overrides):
    data = volumes()
    cfg = tiny_config()
    if stage == "global":
        return pretrain_global(data["pretrain"], cfg, out=out, **overrides)
    return finetune(data["train"], data["val"], cfg, out=out, **overrides)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["global", "finetune"])
def test_killed_stage_resumes_to_identical_weights(tmp_path, stage):
    overrides = {"iterations": 6, "checkpoint_every": 2}
    reference = _run(stage, tmp_path / "uninterrupted", **overrides)

    out = tmp_path / "killed"
    code = CHILD.format(
        threads=torch.get_num_threads(), kill_at=5, stage=stage, out=str(out),
        overrides=overrides,
    )
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
        text=True, timeout=300, env=_child_env(), check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir() if p.suffix == ".pt")
    assert ckpts[-1] == "iter_0000004.pt"
    assert not (out / "final.pt").exists()

    resumed = _run(stage, out, **overrides)
    assert resumed.resumed_from == 4
    ref_state = reference.network.state_dict()
    new_state = resumed.network.state_dict()
    assert ref_state.keys() == new_state.keys()
    for key in ref_state:
        assert torch.equal(ref_state[key], new_state[key]), key
    assert resumed.best_iteration == reference.best_iteration
    # the metrics log holds each iteration once
    from contrastlocal.training import read_metrics

    its = [r["iteration"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert its == [1, 2, 3, 4, 5, 6]
