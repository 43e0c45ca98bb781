"""TrainConfig: the nested layout, run files and stored configs of older rsuper versions (flat layout, removed
options) and what prediction reads from a stored config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rsuper import labels
from rsuper.config import FLAT_KEYS, REMOVED_OPTIONS, TrainConfig, default_class_names, mirror_augmented
from rsuper.demo import DemoPlan
from rsuper.errors import ConfigError

FIXTURES = Path(__file__).parent / "fixtures" / "config"
# Written by rsuper 0acd596 (flat layout): `TrainConfig().to_yaml()` and the R-Super arm of `DemoPlan.default`, seed 21.
FLAT_DEFAULT = FIXTURES / "flat_config_0acd596.yaml"
FLAT_DEMO_ARM = FIXTURES / "demo_rsuper_arm_0acd596.yaml"

# The removed options as an older rsuper wrote them into every run file and checkpoint (all "off").
OLD_OFF_VALUES = {
    "absence_weight": 0.0, "absence_volume_mm3": 300.0, "absence_min_prob": 0.5, "ball_attenuation_weight": 0.0,
    "organ_shift_hu": 0.0, "organ_shift_prob": 0.5, "lesion_organ_bce": 0.0, "lesion_organ_bce_organs": None,
    "lesion_pooled_dice": False, "ball_min_confidence": 0.0, "ball_region_background": True,
    "data.augment.organ_shift_prob": 0.0, "data.augment.organ_shift_hu": 150.0,
}


def test_groups_and_their_defaults():
    cfg = TrainConfig()
    assert (cfg.data.patch_size, cfg.data.batch_size, cfg.data.report_fraction) == ((128, 128, 128), 2, 0.5)
    assert cfg.data.crops.mask_crop_probs == {"tumor": 0.5, "organ": 0.3, "random": 0.2}
    assert (cfg.data.augment.enabled, cfg.data.augment.mirror_prob) == (True, 0.5)
    assert (cfg.optim.steps, cfg.optim.lr, cfg.optim.stage2_lr_factor, cfg.optim.bias_init) == (1000, 3e-4, 0.1, True)
    assert (cfg.loss.report_weight, cfg.loss.volume.tolerance, cfg.loss.ball.margin) == (0.1, 0.1, 0.2)
    assert (cfg.loss.ball.volume_mode, cfg.loss.ball.rank_weighted, cfg.loss.ball.weight) == ("report", False, 1.0)
    assert set(cfg.to_dict()) >= {"cache", "stage", "model", "data", "optim", "loss", "device", "seed"}


def test_every_flat_key_has_one_nested_home():
    nested = TrainConfig().model_dump()
    for key, path in FLAT_KEYS.items():
        node = nested
        for part in path.split("."):
            node = node[part]  # the path exists
    assert len(set(FLAT_KEYS.values())) == len(FLAT_KEYS)


def test_old_flat_run_file_loads_into_the_nested_layout(tmp_path):
    old = TrainConfig.from_yaml(FLAT_DEFAULT)  # class_names stored resolved: that run keeps its kidney side channels
    assert old.to_dict() == TrainConfig(class_names=old.class_names).to_dict()
    assert "kidney_left" in old.class_names and "kidney_left" not in TrainConfig().classes
    run = tmp_path / "run.yaml"
    run.write_text("model: dynunet_small\nsteps: 7\nlr: 0.01\npatch_size: [64, 64, 32]\naugment: false\n"
                   "ball_weight: 0.0\nvolume_tolerance: 0.2\nmask_crop_probs: {tumor: 1.0}\n")
    cfg = TrainConfig.from_yaml(run, overrides={"seed": 3, "lr": 0.02})  # a flag wins over the file
    assert (cfg.model, cfg.seed, cfg.optim.steps, cfg.optim.lr) == ("dynunet_small", 3, 7, 0.02)
    assert (cfg.data.patch_size, cfg.data.augment.enabled, cfg.data.crops.mask_crop_probs) == (
        (64, 64, 32), False, {"tumor": 1.0})
    assert (cfg.loss.ball.weight, cfg.loss.volume.tolerance) == (0.0, 0.2)
    assert TrainConfig.from_yaml(_written(tmp_path, cfg.to_yaml())).to_dict() == cfg.to_dict()  # nested YAML reads back


def test_old_demo_checkpoint_config_is_the_demo_config_of_today():
    """The demo's R-Super arm as rsuper 0acd596 stored it in its checkpoints = the arm DemoPlan builds now."""
    stored = yaml.safe_load(FLAT_DEMO_ARM.read_text())
    assert {k for k in OLD_OFF_VALUES if "." not in k} <= set(stored)
    plan = DemoPlan.default(Path("demo_out"), seed=21)
    today = plan.train_config("R-Super", 2, plan.stage2_steps, Path("demo_out/runs/stage1/final.pt"), 0.5)
    loaded = TrainConfig.from_stored(stored, "final.pt")  # its channels are its own (today's defaults differ)
    assert loaded.to_dict() == today.updated({"class_names": loaded.class_names}).to_dict()


def test_nested_run_file_and_dotted_keys(tmp_path):
    run = _written(tmp_path, "optim: {steps: 7, lr: 0.01}\nloss: {ball: {weight: 0.0}}\ndata: {augment: {enabled: false}}\n")
    cfg = TrainConfig.from_yaml(run, overrides={"optim.warmup_steps": 3, "loss": {"volume": {"weight": 2.0}}})
    assert (cfg.optim.steps, cfg.optim.lr, cfg.optim.warmup_steps) == (7, 0.01, 3)
    assert (cfg.loss.ball.weight, cfg.loss.volume.weight, cfg.loss.report_weight) == (0.0, 2.0, 0.1)
    assert cfg.updated({"ball_margin": 0.3, "data.batch_size": 4}).loss.ball.margin == 0.3


def test_layout_problems_are_one_line_each(tmp_path):
    run = _written(tmp_path, "lr: 0.01\noptim: {lr: 0.02, stpes: 3}\nsteps: -1\n")
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_yaml(run)
    assert caught.value.problems == ["lr is given twice: as lr and as optim.lr; keep one"]
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_yaml(_written(tmp_path, "optim: {stpes: 3}\nsteps: -1\nball_volume_mode: sphere\n"))
    assert caught.value.problems == [
        "steps must be greater than or equal to 1, got -1",
        "optim.stpes is not a TrainConfig field (did you mean optim.steps?)",
        "ball_volume_mode must be 'report' or 'rsuper_code', got 'sphere'",
    ]


def test_removed_options_at_off_are_dropped():
    assert set(OLD_OFF_VALUES) == set(REMOVED_OPTIONS)
    assert TrainConfig.from_stored(OLD_OFF_VALUES, "old.pt") == TrainConfig()
    assert TrainConfig(**OLD_OFF_VALUES) == TrainConfig()
    # A qualifier of a removed option goes with it, whatever its value (it sized an option that was off).
    assert TrainConfig.from_stored({"absence_volume_mm3": 200.0, "organ_shift_prob": 1.0}, "old.pt") == TrainConfig()


def test_removed_nested_options_of_a_stored_run_file(tmp_path):
    """Run files and checkpoints of session 19 hold the contrast-phase augmentation nested under data.augment."""
    stored = TrainConfig().to_dict()
    stored["data"]["augment"].update(organ_shift_prob=0.0, organ_shift_hu=150.0)
    assert TrainConfig.from_stored(stored, "old.pt").to_dict() == TrainConfig().to_dict()
    assert "organ_shift_hu" in stored["data"]["augment"]  # the caller's mapping is not changed
    run = _written(tmp_path, "data: {augment: {organ_shift_prob: 0.3, organ_shift_hu: 150.0}}\n")
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_yaml(run)
    assert caught.value.problems == ["data.augment.organ_shift_prob was removed: not adopted, see BENCHMARKS.md "
                                     "decisions; delete it from the run file, got 0.3"]


def test_removed_option_in_use_is_refused_one_line_each(tmp_path):
    run = _written(tmp_path, "absence_weight: 1.0\nball_region_background: false\nsteps: 5\n")
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_yaml(run)
    assert str(caught.value).splitlines() == [
        f"invalid training configuration in {run}:",
        "  absence_weight was removed: not adopted, see BENCHMARKS.md decisions; delete it from the run file, got 1.0",
        "  ball_region_background was removed: not adopted, see BENCHMARKS.md decisions; delete it from the run file, "
        "got False",
    ]
    with pytest.raises(ConfigError, match="lesion_pooled_dice was removed: .*delete it from the stored config, got True"):
        TrainConfig.from_stored({"lesion_pooled_dice": True}, "old.pt")


@pytest.mark.parametrize(("stored", "mirrored"), [
    (None, False), ({}, False), ({"converted_from": "x.pth"}, False),
    ({"augment": True, "mirror_prob": 0.5}, True), ({"augment": True, "mirror_prob": 0.0}, False),
    ({"augment": False, "mirror_prob": 0.5}, False),
    (TrainConfig().to_dict(), True), (TrainConfig(augment=False).to_dict(), False),
    (TrainConfig(mirror_prob=0.0).to_dict(), False),
])
def test_prediction_reads_the_mirror_augmentation_of_both_layouts(stored, mirrored):
    assert mirror_augmented(stored) is mirrored


def _written(folder: Path, text: str) -> Path:
    path = folder / f"run{len(list(folder.iterdir()))}.yaml"
    path.write_text(text)
    return path


def test_default_channels_have_a_side_free_organ_per_target_and_no_mirror_swapped_pair():
    """Guard of the side lock (docs/method.md §4): beside mirror-swapped side channels (kidney_left/kidney_right) a
    lesion channel takes one side's features and finds tumors on that side only; the defaults keep whole organs."""
    names = default_class_names()
    for organ in ("pancreas", "kidney", "liver"):
        assert labels.lesion_class(organ) in names and organ in names, f"no side-free {organ} channel"
        assert not (set(labels.ORGAN_MASK_CLASSES[organ]) - {organ}) & set(names), f"{organ} side channels"
    assert [n for n in names if labels.mirror_partner(n) not in (n, None)] == []
    assert TrainConfig(cache=["c"], out="o").classes == names
