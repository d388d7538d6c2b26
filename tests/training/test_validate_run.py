"""validate_for_run: settings that could only fail (or be ignored) later are refused up front."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import torch

from contrastlocal.training import preset
from contrastlocal.training.config import ResolvedRuntime, validate_for_run


def _one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_presets_pass_and_resolve_to_fp32_on_the_cpu():
    for name in ("acdc", "prostate", "mmwhs", "cityscapes", "synthetic"):
        assert validate_for_run(preset(name)) == ResolvedRuntime("cpu", "cpu", "fp32")
    # "auto" amp is documented as fp32 off CUDA
    assert validate_for_run(preset("acdc", **{"runtime.amp": "auto"})).precision == "fp32"


def test_num_regions_outside_the_supported_patterns_is_refused_at_once():
    with pytest.raises(ValueError, match=r"`local_stage.num_regions` must be one of 13, 9; got 4"):
        preset("acdc", **{"local_stage.num_regions": 4})
    assert preset("acdc", **{"local_stage.num_regions": 9}).local_stage.num_regions == 9


def test_image_size_as_one_number_and_too_small_for_the_regions():
    assert preset("acdc", **{"model.image_size": 64}).model.image_size == (64, 64)
    with pytest.raises(TypeError, match=r"`model.image_size` must be an int or a pair"):
        preset("acdc", **{"model.image_size": "64"})
    with pytest.raises(ValueError, match="divisible by 2"):
        preset("acdc", **{"model.image_size": 48})
    # 6 levels, 3 decoder blocks: 32 -> 8x8 maps, just enough for 13 regions of 3x3
    validate_for_run(preset("acdc", **{"model.image_size": 32}))
    cfg = preset("acdc", **{"model.image_size": 32, "local_stage.num_decoder_blocks": 2})
    with pytest.raises(ValueError, match="too small") as info:
        validate_for_run(cfg)
    text = _one_line(info)
    assert "local feature maps of 4x4" in text
    assert "local_stage.num_regions=13" in text


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_half_precision_on_the_cpu_is_refused(amp):
    with pytest.raises(ValueError, match="autocast") as info:
        validate_for_run(preset("acdc", **{"runtime.amp": amp}))
    text = _one_line(info)
    assert f"`runtime.amp` is {amp!r}" in text
    assert "'cpu'" in text
    assert "runtime.amp='none'" in text


@pytest.mark.parametrize(
    ("device", "words"),
    [
        ("mps", "MPS (Apple GPU) is not available"),
        ("cuda", "CUDA is not available"),
        ("cuda:3", "CUDA is not available"),
    ],
)
def test_unavailable_device_is_refused(device, words, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="not available") as info:
        validate_for_run(preset("acdc", **{"runtime.device": device}))
    text = _one_line(info)
    assert f"`runtime.device` is {device!r}" in text
    assert words in text
    assert "use 'cpu' or 'auto'" in text
    assert validate_for_run(preset("acdc", **{"runtime.device": "auto"})).device == "cpu"


def test_cuda_precision_resolution_and_device_index(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    cfg = preset("acdc", **{"runtime.device": "cuda"})
    assert validate_for_run(cfg) == ResolvedRuntime("cuda", "cuda", "fp16")  # auto, no bf16
    with pytest.raises(ValueError, match="does not support bf16"):
        validate_for_run(cfg.replace(**{"runtime.amp": "bf16"}))
    with pytest.raises(ValueError, match="has 1 CUDA device"):
        validate_for_run(cfg, device="cuda:1")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert validate_for_run(cfg).precision == "bf16"
    assert validate_for_run(cfg.replace(**{"runtime.amp": "none"})).precision == "fp32"
    assert validate_for_run(cfg, device="cpu").device_type == "cpu"


@pytest.mark.parametrize("section", ["global_stage", "local_stage", "finetune"])
def test_absurd_learning_rates_are_refused(section):
    with pytest.raises(ValueError, match="learning_rate") as info:
        validate_for_run(preset("acdc", **{f"{section}.learning_rate": 1e38}))
    assert f"`{section}.learning_rate` is 1e+38" in _one_line(info)
    validate_for_run(preset("acdc", **{f"{section}.learning_rate": 1.0}))
    with pytest.raises(ValueError, match="positive finite"):
        preset("acdc", **{f"{section}.learning_rate": float("nan")})
