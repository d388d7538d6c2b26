"""Each authors'-fidelity switch through the stage that uses it, against loop references.

One training step's inputs (captured at the network) and its logged loss are checked against the
loop references written from REFERENCE.md (``tests/_reference_fidelity.py``,
``tests/_reference_original.py``, ``tests/_reference_local.py``) applied to the same batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from contrastlocal.data import augment
from contrastlocal.training import (
    ExperimentConfig,
    Volume,
    finetune,
    preset,
    pretrain_global,
    pretrain_local,
)
from contrastlocal.training.config import validate_for_run
from contrastlocal.training.fidelity import FidelityConfig
from tests import _reference_fidelity as ref
from tests import _reference_original as orig
from tests._reference_local import original_ld_reference, original_lr_reference, reference_tables

SEED = 3
DEPTHS = [8, 9, 8, 10, 8, 8]


def _volumes(size: int = 32) -> list[Volume]:
    rng = np.random.default_rng(0)
    return [
        Volume(rng.random((z, size, size), dtype=np.float32),
               rng.integers(0, 4, (z, size, size)).astype(np.uint8), case_id=f"v{i}")
        for i, z in enumerate(DEPTHS)
    ]


def _config(fidelity: Any, size: int = 32, **overrides: Any) -> ExperimentConfig:
    return preset("synthetic", **{
        "seed": SEED, "fidelity": fidelity, "model.image_size": (size, size),
        "model.channels": (4, 8, 8), "model.global_hidden_features": 16,
        "global_stage.volumes_per_batch": 2, "global_stage.iterations": 1,
        "global_stage.log_every": 1, "local_stage.volumes_per_batch": 2,
        "local_stage.iterations": 1, "local_stage.log_every": 1,
        "local_stage.num_decoder_blocks": 1, "finetune.iterations": 1, "finetune.log_every": 1,
        "finetune.batch_size": 6, "runtime.progress": False, **overrides,
    })


class _Capture:
    """Input and output of a module's first forward call."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.handle = module.register_forward_hook(self)

    def __call__(self, module: Any, inputs: Any, output: torch.Tensor) -> None:
        self.calls.append((inputs[0].detach().clone(), output.detach().clone()))


def _run_capturing(stage: Any, cls: type, *args: Any, **kwargs: Any) -> tuple[Any, Any, float]:
    """Run one step of `stage`, capturing the first forward of its `cls` network."""
    captured: list[_Capture] = []
    original = cls.__init__

    def init(self: Any, *a: Any, **k: Any) -> None:
        original(self, *a, **k)
        captured.append(_Capture(self))

    cls.__init__ = init  # type: ignore[method-assign]
    try:
        result = stage(*args, **kwargs)
    finally:
        cls.__init__ = original  # type: ignore[method-assign]
    x, y = captured[0].calls[0]
    return x, y, float(result.history[0]["loss"])


def _slices(volumes: list[Volume]) -> np.ndarray:
    return np.concatenate([v.image for v in volumes])[:, None]


def _flat(volume: int, slice_: int) -> int:
    return int(sum(DEPTHS[:volume]) + slice_)


# ------------------------------------------------------------------ stage 1
@pytest.mark.parametrize("strategy", ["domain", "domain_negatives", "random"])
def test_global_loss_switch_matches_loop_reference(strategy: str) -> None:
    from contrastlocal.models import GlobalPretrainNetwork

    volumes = _volumes()
    fid = {"global_loss": True, "blank_rows": strategy == "domain"}
    cfg = _config(fid, **{"global_stage.strategy": strategy})
    x, emb, loss = _run_capturing(pretrain_global, GlobalPretrainNetwork, volumes, cfg)
    b, s = 2 * 4, 4
    rng = np.random.default_rng([SEED, 1, 0])  # the stage's (seed, stage 1, iteration 0)
    if strategy == "domain":
        rows = ref.domain_batch_reference(b, s, DEPTHS, rng, blank_rows=True)
    elif strategy == "domain_negatives":
        rows = ref.domain_negatives_batch_reference(b, s, DEPTHS, rng)
    else:
        rows = ref.random_batch_reference(b, DEPTHS, rng)
    assert x.shape[0] == len(rows) == orig.rows_fed(strategy, b, s)
    bank = _slices(volumes)
    for i, row in enumerate(rows):
        if row["blank"]:
            assert torch.count_nonzero(x[i]) == 0
        elif row["view"] == 0:  # the slice itself, the reference's volume and slice
            np.testing.assert_array_equal(x[i].numpy(), bank[_flat(row["volume"], row["slice"])])
    terms, normalizer = orig.terms_for(strategy, b, s)
    want = orig.loss(emb.double(), terms, normalizer, 0.1)
    np.testing.assert_allclose(loss, float(want), rtol=1e-5)


def test_random_slices_switch_is_gr_on_random_slices() -> None:
    from contrastlocal.models import GlobalPretrainNetwork

    volumes = _volumes()
    cfg = _config({"random_slices": True}, **{"global_stage.strategy": "random"})
    x, emb, loss = _run_capturing(pretrain_global, GlobalPretrainNetwork, volumes, cfg)
    rows = ref.random_batch_reference(8, DEPTHS, np.random.default_rng([SEED, 1, 0]))
    assert x.shape[0] == len(rows) == 16
    bank = torch.as_tensor(_slices(volumes))
    for i in range(0, 16, 2):  # rows 2i, 2i+1: two views of one randomly drawn slice
        assert rows[i]["volume"] == rows[i + 1]["volume"]
        source = bank[_flat(rows[i]["volume"], rows[i]["slice"])]
        assert not torch.equal(x[i], source)  # augmented
    terms, normalizer = orig.random_terms(8)  # NT-Xent, mean over the 2B anchors
    np.testing.assert_allclose(loss, float(orig.loss(emb.double(), terms, normalizer, 0.1)),
                               rtol=1e-5)


def _source_and_draw(row: np.ndarray, bank: np.ndarray) -> tuple[int, float]:
    """The slice `row` is an intensity view of, and the u of §4.1 (δ = -0.3 + 0.6u, c = 1 + δ).

    With c = 1 + δ, x' - x = δ (x - mean(x) + 1) on unclipped pixels.
    """
    best: tuple[float, int, float] = (np.inf, -1, 0.0)
    inside = (row > 1e-6) & (row < 1.5 - 1e-6)
    for i, x in enumerate(bank):
        d = ((row - x) / (x - x.mean() + 1.0))[inside]
        best = min(best, (float(np.ptp(d)), i, float(np.median(d))))
    return best[1], (best[2] + 0.3) / 0.6


def test_shared_intensity_switch_one_draw_per_view() -> None:
    from contrastlocal.models import LocalPretrainNetwork

    volumes = _volumes()
    x, _, _ = _run_capturing(pretrain_local, LocalPretrainNetwork, volumes,
                             _config({"shared_intensity": True}))
    bank = _slices(volumes)
    n = x.shape[0] // 2
    for view in (x[:n].numpy(), x[n:].numpy()):  # one call per view: one u for all its rows
        found = [_source_and_draw(row, bank) for row in view]
        u = found[0][1]
        sources = bank[[i for i, _ in found]]
        want = ref.shared_intensity_reference(sources, u, 0.3, 0.3)
        np.testing.assert_allclose(view, want, atol=1e-5)


def test_without_shared_intensity_each_image_has_its_own_draw() -> None:
    from contrastlocal.models import LocalPretrainNetwork

    volumes = _volumes()
    x, _, _ = _run_capturing(pretrain_local, LocalPretrainNetwork, volumes, _config("paper"))
    bank = _slices(volumes)
    draws = [_source_and_draw(row, bank)[1] for row in x[: x.shape[0] // 2].numpy()]
    assert np.ptp(draws) > 1e-3


# ------------------------------------------------------------------ stage 2
@pytest.mark.parametrize("strategy", ["domain", "random"])
def test_local_switches_match_loop_reference(strategy: str) -> None:
    from contrastlocal.models import LocalPretrainNetwork

    volumes = _volumes()
    cfg = _config({"local_batch": True, "local_loss": True},
                  **{"local_stage.strategy": strategy})
    captured: list[Any] = []
    from contrastlocal.nn import LocalContrastiveLoss

    original = LocalContrastiveLoss.__init__

    def init(self: Any, *a: Any, **k: Any) -> None:
        original(self, *a, **k)
        captured.append(self)

    LocalContrastiveLoss.__init__ = init  # type: ignore[method-assign]
    try:
        x, features, loss = _run_capturing(pretrain_local, LocalPretrainNetwork, volumes, cfg)
    finally:
        LocalContrastiveLoss.__init__ = original  # type: ignore[method-assign]
    rng = np.random.default_rng([SEED, 2, 0])
    bank = _slices(volumes)
    if strategy == "domain":
        rows = ref.local_domain_batch_reference(DEPTHS, rng)
    else:
        rows = ref.random_batch_reference(10, DEPTHS, rng)
    assert x.shape[0] == len(rows) == (24 if strategy == "domain" else 20)
    for i, row in enumerate(rows):  # intensity-only views: δ = (out - x) / (x + 1) exists
        source = bank[_flat(row["volume"], row["slice"])]
        assert np.ptp((x[i].numpy() - source) / (source + 1.0)) < 0.61
    assert captured[0].projection is not None  # K = 3: the learned projection W
    size = features.shape[-1]
    positions, negatives = reference_tables(size, 3, 13)
    f = features.double().numpy()
    w = _initial_projection(cfg, volumes)  # W during the step (Adam has moved it since)
    if strategy == "domain":
        want = original_ld_reference(f, positions, negatives, region_size=3, projection=w,
                                     temperature=0.1, num_negatives=4)
    else:
        want = original_lr_reference(f, positions, negatives, batch_size=10, region_size=3,
                                     projection=w, temperature=0.1)
    np.testing.assert_allclose(loss, float(want), rtol=1e-4)


def _initial_projection(cfg: ExperimentConfig, volumes: list[Volume]) -> np.ndarray:
    """The local criterion's projection after set-up, before the first step (0 iterations)."""
    from contrastlocal.nn import LocalContrastiveLoss

    captured: list[Any] = []
    original = LocalContrastiveLoss.__init__

    def init(self: Any, *a: Any, **k: Any) -> None:
        original(self, *a, **k)
        captured.append(self)

    LocalContrastiveLoss.__init__ = init  # type: ignore[method-assign]
    try:
        pretrain_local(volumes, cfg.replace(local_stage={"iterations": 0}))
    finally:
        LocalContrastiveLoss.__init__ = original  # type: ignore[method-assign]
    return captured[0].projection.detach().double().numpy()


def test_local_loss_needs_local_batch() -> None:
    with pytest.raises(ValueError, match=r"`fidelity.local_loss` needs `fidelity.local_batch`"):
        FidelityConfig(local_loss=True)


# ------------------------------------------------------------------ hand-over, fine-tuning
def test_skip_running_stats_switch_copies_no_running_averages() -> None:
    from contrastlocal.models import GlobalPretrainNetwork

    volumes = _volumes()
    source = pretrain_global(volumes, _config("paper")).network
    assert isinstance(source, GlobalPretrainNetwork)
    trained = {k: v for k, v in source.state_dict().items() if "running_mean" in k}
    assert any(torch.count_nonzero(v) for v in trained.values())
    for skip in (False, True):
        cfg = _config({"skip_running_stats": skip}, **{"finetune.iterations": 0})
        result = finetune(volumes[:1], [], cfg, init=source)
        copied = set(result.copied_keys)
        assert any("conv" in k or "weight" in k for k in copied)
        state = result.network.state_dict()
        for key, value in trained.items():
            name = key.removeprefix("unet.")
            if name not in state:
                continue
            if skip:  # §3.4: the authors restore trainable variables only
                assert name not in copied
                assert torch.count_nonzero(state[name]) == 0
            else:
                assert name in copied
                assert torch.equal(state[name], value)


@pytest.mark.parametrize("items", [{"elastic_tail": True}, {"soft_label_warp": True},
                                   {"soft_label_warp": True, "elastic_tail": True}])
def test_finetune_augmentation_switches(items: dict[str, bool]) -> None:
    """The step's targets are those of the authors' augmentation of the step's batch."""
    from contrastlocal.models import UNet
    from contrastlocal.training._loop import derive_seed

    volumes = _volumes()
    cfg = _config(items)
    x, logits, loss = _run_capturing(finetune, UNet, volumes[:2], [], cfg)
    # the step's batch: 6 slices uniformly with replacement, drawn by (seed, stage 3, iteration)
    index = np.random.default_rng([SEED, 3, 0]).integers(0, DEPTHS[0] + DEPTHS[1], size=6)
    images = torch.as_tensor(_slices(volumes[:2])[index])
    labels = torch.as_tensor(np.concatenate([v.label for v in volumes[:2]])[index])
    gen = torch.Generator().manual_seed(derive_seed(SEED, 3, 0))
    if items.get("soft_label_warp"):
        want_x, target = augment.authors_geometric_augment(
            images, labels, gen, num_classes=4, elastic_tail=items.get("elastic_tail", False))
        assert not torch.equal(target, target.round())  # bilinear: soft labels
    else:
        want_x, lab = augment.geometric_augment(images, labels, gen, elastic_tail=True)
        target = torch.nn.functional.one_hot(lab.long(), 4).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(x, want_x)
    probs = torch.softmax(logits.double(), 1)
    dice = 2 * (probs * target).sum((2, 3)) / (probs.sum((2, 3)) + target.sum((2, 3)) + 1e-10)
    np.testing.assert_allclose(loss, float(1 - dice.mean()), rtol=1e-5)


# ------------------------------------------------------------------ validation
def test_fixed_crop_needs_large_images_and_runs_on_them() -> None:
    with pytest.raises(ValueError, match=r"`fidelity.fixed_crop` crops 100 x 100"):
        validate_for_run(_config({"fixed_crop": True}))
    from contrastlocal.models import GlobalPretrainNetwork

    volumes = _volumes(size=96)
    cfg = _config({"fixed_crop": True}, size=96)
    x, _, _ = _run_capturing(pretrain_global, GlobalPretrainNetwork, volumes, cfg)
    assert x.shape[-2:] == (96, 96)


def test_table2_batch_450_fails_before_training_with_why_and_what_to_do() -> None:
    cfg = preset("acdc", **{"global_stage.volumes_per_batch": 113})  # 452 slices
    with pytest.raises(ValueError, match=r"has 52 pre-training volumes.*volumes_per_batch <= 52"):
        validate_for_run(cfg)
    cfg = _config("paper", **{"global_stage.volumes_per_batch": 7})
    with pytest.raises(ValueError, match=r"needs 7 distinct pre-training volumes.*there are 6"):
        pretrain_global(_volumes(), cfg)


# ------------------------------------------------------------------ the `fidelity` setting
def test_fidelity_setting_from_set_items_toml_and_presets(tmp_path: Any) -> None:
    from contrastlocal.cli._settings import parse_set_option
    from contrastlocal.training import load_config

    items = parse_set_option(["fidelity=authors", "fidelity.n4=false"])
    cfg = preset("acdc").replace(**items)
    assert cfg.fidelity == FidelityConfig.preset("authors", n4=False)
    assert cfg.fidelity.name == "custom"
    # the text-vs-code values follow the fidelity on the paper's datasets
    assert (cfg.finetune.batch_size, cfg.model.global_hidden_features) == (20, 1024)
    assert cfg.global_stage.volumes_per_batch * cfg.global_stage.num_partitions == 12
    paper = preset("acdc")
    assert (paper.finetune.batch_size, paper.model.global_hidden_features) == (40, 3200)
    assert paper.global_stage.volumes_per_batch * paper.global_stage.num_partitions == 40
    # an explicit section setting wins over the fidelity's value
    cfg = preset("acdc", **{"fidelity": "authors", "finetune.batch_size": 8})
    assert cfg.finetune.batch_size == 8
    # the CPU preset keeps its sizes
    assert preset("synthetic", fidelity="authors").finetune.batch_size == 10
    path = tmp_path / "f.toml"
    path.write_text('preset = "acdc"\n[fidelity]\nfidelity = "authors"\nblank_rows = false\n')
    assert load_config(path).fidelity == FidelityConfig.preset("authors", blank_rows=False)


def test_fidelity_setting_errors_are_one_line() -> None:
    with pytest.raises(ValueError, match=r"unknown fidelity item 'blank_row' \(did you mean "
                                         r"'blank_rows'\?\); accepted: blank_rows, global_loss"):
        preset("acdc", **{"fidelity.blank_row": True})
    with pytest.raises(ValueError, match=r"`fidelity` must be one of 'paper', 'authors'"):
        preset("acdc", fidelity="author")
    with pytest.raises(TypeError, match=r"`fidelity.n4` must be a bool"):
        preset("acdc", **{"fidelity.n4": "yes"})


def test_paper_fidelity_adds_nothing_to_stage_keys_authors_does() -> None:
    from contrastlocal.training.stages import _settings

    volumes = _volumes()[:1]
    assert "fidelity" not in _settings(_config("paper"), "global_stage", volumes)
    key = _settings(_config({"elastic_tail": True}), "finetune", volumes)
    assert key["fidelity"] == ["elastic_tail"]


# ------------------------------------------------------------------ Cityscapes
def _cityscapes(n: int = 4, size: tuple[int, int] = (32, 64)) -> list[Volume]:
    rng = np.random.default_rng(1)
    return [Volume(rng.random((1, 3, *size), dtype=np.float32),
                   rng.integers(0, 3, (1, *size)).astype(np.uint8), case_id=f"c{i}")
            for i in range(n)]


def _cityscapes_config(**overrides: Any) -> ExperimentConfig:
    return preset("cityscapes", **{
        "model.image_size": (32, 64), "model.channels": (4, 8, 8), "model.num_classes": 3,
        "model.global_hidden_features": 16, "global_stage.volumes_per_batch": 2,
        "global_stage.iterations": 1, "global_stage.log_every": 1,
        "local_stage.volumes_per_batch": 2, "local_stage.iterations": 1,
        "local_stage.log_every": 1, "local_stage.num_decoder_blocks": 1,
        "finetune.iterations": 1, "finetune.batch_size": 3, "finetune.log_every": 1,
        "runtime.progress": False, **overrides,
    })


def test_cityscapes_pretraining_uses_colour_views() -> None:
    from contrastlocal.models import GlobalPretrainNetwork
    from contrastlocal.training._loop import derive_seed

    volumes = _cityscapes()
    cfg = _cityscapes_config()
    assert (cfg.global_stage.strategy, cfg.local_stage.strategy) == ("random", "random")
    x, _, _ = _run_capturing(pretrain_global, GlobalPretrainNetwork, volumes, cfg)
    # the same batch through colour_global views gives the step's input
    from contrastlocal.training.stages import _SliceBank

    bank = _SliceBank(volumes, 1, torch.device("cpu"))
    from contrastlocal.samplers import PartitionBatchSampler

    sampler = PartitionBatchSampler(bank.dataset.slices_per_volume, num_partitions=1,
                                    volumes_per_batch=2, seed=derive_seed(0, 1) % (2**31))
    sampler.set_epoch(0)
    batch = bank.batch(next(iter(sampler)))
    gen = torch.Generator().manual_seed(derive_seed(0, 1, 0))
    want = augment.two_views(batch, gen, kind="colour_global")["images"]
    torch.testing.assert_close(x, want)


def test_cityscapes_finetune_crops_then_jitters_and_mixup_row_runs() -> None:
    from contrastlocal.models import UNet
    from contrastlocal.training._loop import derive_seed

    volumes = _cityscapes()
    for mixup in (False, True):
        cfg = _cityscapes_config(**{"finetune.mixup": mixup})
        x, _, loss = _run_capturing(finetune, UNet, volumes[:2], volumes[2:], cfg)
        index = np.random.default_rng([0, 3, 0]).integers(0, 2, size=3)
        images = torch.as_tensor(np.concatenate([v.image for v in volumes[:2]])[index])
        labels = torch.as_tensor(np.concatenate([v.label for v in volumes[:2]])[index])
        gen = torch.Generator().manual_seed(derive_seed(0, 3, 0))
        # a crop of 3/4 of each side (192 x 384 of 256 x 512), then colour jitter
        want, lab = augment.cityscapes_finetune_augment(images, labels, gen, size=(24, 48))
        assert lab is not None
        if mixup:  # the Mixup row of Table 8, α = MIXUP_ALPHA
            target = torch.nn.functional.one_hot(lab.long(), 3).permute(0, 3, 1, 2).float()
            want, _ = augment.mixup(want, target, gen, alpha=augment.MIXUP_ALPHA)
        torch.testing.assert_close(x, want)
        assert np.isfinite(loss)


def test_cityscapes_scores_per_image_and_records_the_definition() -> None:
    from contrastlocal.training import evaluate

    class Fixed(torch.nn.Module):
        """Predicts class 1 on the left half, 0 elsewhere (3 classes)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(x.shape[0], 3, *x.shape[-2:])
            out[:, 0] = 1.0
            out[..., : x.shape[-1] // 2] = torch.tensor([0.0, 2.0, 0.0])[:, None, None]
            return out

    img = np.zeros((1, 3, 4, 4), np.float32)
    a = np.zeros((1, 4, 4), np.uint8)
    a[0, :, :1] = 1  # image 1: class 1 on 4 px, predicted on 8 (2/3); class 2 absent from both
    b = np.zeros((1, 4, 4), np.uint8)
    b[0, :, 3] = 2  # image 2: class 1 predicted (8 px), absent in truth; class 2 missed (4 px)
    res = evaluate(Fixed(), [Volume(img, a, case_id="a"), Volume(img, b, case_id="b")],
                   num_classes=3, compute_hd95=False, dice_definition="per_image")
    # by hand: image 1 scores class 1 only: 2·4 / (8 + 4) = 2/3; image 2 classes 1 and 2: 0
    assert res.mean_dice == pytest.approx(1 / 3)
    summary = res.summary()
    assert summary["dice_definition"] == "per_image"
    assert "absent from both is skipped" in summary["dice_definition_description"]
    assert summary["dice_mean"] == pytest.approx(1 / 3)
    # the per-volume mean would count image 1's absent class 2 as a perfect 1: (5/6 + 0) / 2
    assert float(res.volume_dice.mean()) == pytest.approx(5 / 12)
