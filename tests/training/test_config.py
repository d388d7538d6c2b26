import pytest

from contrastlocal.training import (
    ExperimentConfig,
    config_to_dict,
    load_config,
    preset,
)


def test_preset_paper_settings():
    cfg = preset("acdc")
    assert cfg.global_stage.learning_rate == 1e-3
    assert cfg.global_stage.iterations == 10_000
    assert (cfg.global_stage.volumes_per_batch, cfg.global_stage.num_partitions) == (10, 4)
    assert cfg.global_stage.temperature == 0.1
    assert (cfg.local_stage.num_decoder_blocks, cfg.local_stage.region_size) == (3, 3)
    assert cfg.local_stage.num_regions == 13
    # where text and code disagree the default fidelity ("paper") takes the text's value:
    # fine-tuning batch 40 (supplement §1.2; the authors' code: 20), g_1 width 3200 (code: 1024)
    assert (cfg.finetune.batch_size, cfg.finetune.validate_every) == (40, 50)
    assert cfg.model.global_hidden_features == 3200
    assert cfg.fidelity.name == "paper"
    assert cfg.finetune.augment
    assert preset("mmwhs").model.num_classes == 8
    assert preset("mmwhs").model.image_size == (160, 160)
    assert preset("prostate").model.num_classes == 3
    city = preset("cityscapes")
    assert (city.global_stage.strategy, city.local_stage.strategy) == ("random", "random")
    assert (city.model.in_channels, city.model.num_classes, city.model.image_size) == (
        3, 13, (256, 512))


def test_preset_overrides_nested_and_dotted():
    cfg = preset("acdc", seed=4, finetune={"iterations": 7}, **{"local_stage.region_size": 1})
    assert (cfg.seed, cfg.finetune.iterations, cfg.local_stage.region_size) == (4, 7, 1)
    assert cfg.finetune.batch_size == 40  # untouched


def test_load_config_toml(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text(
        'preset = "prostate"\nnum_labelled = 2\n[model]\nchannels = [8, 16, 32, 64, 64, 64]\n'
        "[global_stage]\niterations = 5\nlearning_rate = 1\n"
    )
    cfg = load_config(path, seed=2)
    assert cfg.dataset == "prostate"
    assert cfg.num_labelled == 2
    assert cfg.model.channels == (8, 16, 32, 64, 64, 64)
    assert cfg.global_stage.learning_rate == 1.0
    assert isinstance(cfg.global_stage.learning_rate, float)
    assert cfg.seed == 2
    assert config_to_dict(cfg)["model"]["channels"] == [8, 16, 32, 64, 64, 64]


def test_unknown_key_lists_valid_keys(tmp_path):
    with pytest.raises(ValueError, match=r"global_stage\.iterationz.*valid settings:.*iterations"):
        preset("acdc", global_stage={"iterationz": 3})
    with pytest.raises(ValueError, match="unknown setting `colour`"):
        preset("acdc", colour="red")
    path = tmp_path / "bad.toml"
    path.write_text("[finetune]\nbatchsize = 3\n")
    with pytest.raises(ValueError, match=r"finetune\.batchsize"):
        load_config(path)


def test_bad_configurations_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="`dataset`"):
        preset("brats")
    with pytest.raises(ValueError, match="num_labelled"):
        preset("acdc", num_labelled=3)
    with pytest.raises(ValueError, match="combination"):
        preset("mmwhs", num_labelled=2, combination=5)
    with pytest.raises(ValueError, match="num_decoder_blocks"):
        preset("acdc", local_stage={"num_decoder_blocks": 6})
    with pytest.raises(ValueError, match="num_decoder_blocks"):
        preset("acdc", local_stage={"num_decoder_blocks": 0})
    with pytest.raises(ValueError, match="image_size"):
        preset("acdc", model={"image_size": (100, 100)})
    with pytest.raises(ValueError, match="strategy"):
        preset("acdc", global_stage={"strategy": "domain_positive"})
    with pytest.raises(ValueError, match="path"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(TypeError, match="iterations"):
        ExperimentConfig(global_stage=preset("acdc").global_stage).replace(
            global_stage={"iterations": 1.5}
        )


def test_restating_the_fidelity_keeps_explicit_settings():
    # the table runner passes `fidelity=...` again over a config whose sizes were set by hand:
    # re-stating the same fidelity must not reset them; switching it moves what differs
    cfg = preset("acdc", **{"global_stage.volumes_per_batch": 2, "finetune.batch_size": 4})
    same = cfg.replace(fidelity="paper")
    assert same.global_stage.volumes_per_batch == 2
    assert same.finetune.batch_size == 4
    authors = cfg.replace(fidelity="authors")
    assert authors.finetune.batch_size == 20
    assert authors.model.global_hidden_features == 1024
    assert authors.global_stage.volumes_per_batch == 12 // 4
    item = cfg.replace(**{"fidelity.n4": True})  # an item that sets no size
    assert item.global_stage.volumes_per_batch == 2
    assert item.finetune.batch_size == 4
