"""What a stage is built from: the dataset of config.data and the loss of config.loss (docs/method.md §4-§5)."""

from __future__ import annotations

import pytest
from train_helpers import SPACING_MM, make_cache

from rsuper.config import TrainConfig
from rsuper.errors import ConfigError
from rsuper.losses import BallLossOptions, VolumeLossOptions
from rsuper.reports.tables import write_tumors_csv
from rsuper.train.build import build_loss, build_training_data


def test_the_loss_of_each_stage_follows_config_loss():
    loss = {"report_weight": 0.3, "volume": {"tolerance": 0.2, "weight": 2.0},
            "ball": {"margin": 0.1, "volume_mode": "rsuper_code", "rank_weighted": True, "weight": 0.0}}
    stage2 = TrainConfig(stage=2, init="stage1.pt", loss=loss)
    loss_fn = build_loss(stage2, stage2.classes, SPACING_MM)
    assert loss_fn.report_weight == 0.3 and loss_fn.spacing_mm == SPACING_MM
    assert loss_fn.ball == BallLossOptions(margin=0.1, volume_mode="rsuper_code", rank_weighted=True, weight=0.0)
    assert loss_fn.volume == VolumeLossOptions(tolerance=0.2, weight=2.0)
    assert [stage2.classes[i] for i in loss_fn.lesion_channels] == ["pancreatic_lesion", "kidney_lesion", "liver_lesion"]
    assert build_loss(TrainConfig(loss=loss), stage2.classes, SPACING_MM).report_weight == 0.0  # stage 1: masks only


def test_the_dataset_follows_config_data(tmp_path):
    findings = make_cache(tmp_path / "cache")
    write_tumors_csv(findings.values(), tmp_path / "tumors.csv")
    data = {"patch_size": (32, 32, 32), "max_tumors": 8, "augment": {"mirror_prob": 0.25},
            "crops": {"mask_crop_probs": {"tumor": 1.0}, "report_random_crop_prob": 0.0}}
    stage1 = TrainConfig(cache=tmp_path / "cache", data=data)
    built = build_training_data(stage1, stage1.classes, SPACING_MM)
    assert (built.n_mask, built.n_report) == (2, 0)
    assert built.summary() == "2 mask cases, 0 report cases, 4 case(s) without lesion masks unused (stage 1 trains on masks only)"
    dataset = built.dataset
    assert (dataset.patch_size, dataset.max_tumors, dataset.crops.mask_crop_probs) == ((32, 32, 32), 8, {"tumor": 1.0})
    assert dataset.crops.report_random_crop_prob == 0.0 and dataset.augmentation.mirror.prob == 0.25
    off = build_training_data(stage1.updated({"augment": False}), stage1.classes, SPACING_MM)
    assert off.dataset.augmentation is None
    stage2 = stage1.updated({"stage": 2, "init": "stage1.pt", "tumors": tmp_path / "tumors.csv"})
    assert build_training_data(stage2, stage2.classes, SPACING_MM).n_report == 4
    with pytest.raises(ConfigError, match="stage 2 trains on reports: pass --tumors"):
        build_training_data(stage2.updated({"tumors": None}), stage2.classes, SPACING_MM)
