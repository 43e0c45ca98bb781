"""Trainer (docs/method.md §6): a few dozen steps of stage 1 then stage 2 lower the loss; checkpoint contents."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from train_helpers import TinyNet, make_cache, metrics_rows, tiny_run_config

from rsuper.config import TrainConfig
from rsuper.data.dataset import MixedBatchSampler
from rsuper.models.checkpoint import load_checkpoint, model_from_checkpoint
from rsuper.reports.tables import write_tumors_csv
from rsuper.train.distributed import DistributedContext
from rsuper.train.schedule import warmup_poly_factor
from rsuper.train.trainer import Trainer, train

TINY = "train_helpers:make_tiny_net"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    findings = make_cache(root / "cache", report_cache=root / "report_cache")  # two caches, as prepared
    write_tumors_csv(findings.values(), root / "tumors.csv")
    return root


def _config(root, out, **kw):
    """A tiny run on both caches; width 16: at 8 the tiny net's loss fell by barely more than the 0.1 asserted below."""
    return tiny_run_config(root, out, **{"cache": [root / "cache", root / "report_cache"], "model_kwargs": {"width": 16},
                                         **kw})


_rows = metrics_rows



def _fixed_loss(trainer: Trainer, state_dict, steps=range(4)) -> float:
    """Total loss of fixed batches (same keys) with the given weights, no update."""
    trainer.model.load_state_dict(state_dict)
    sampler = MixedBatchSampler(trainer.n_mask, trainer.n_report, 2, 0.5, 100, seed=123)
    totals = []
    with torch.no_grad():
        for step in steps:
            samples = [trainer.dataset[k] for k in sampler.batch_keys(step)]
            batch = torch.utils.data.default_collate(samples)
            batch = {k: (v.float() if torch.is_tensor(v) else v) for k, v in batch.items()}
            final, aux = trainer.model(batch["image"])
            totals.append(float(trainer.loss_fn(final, aux, batch)["total"]))
    return float(np.mean(totals))


def test_stage1_then_stage2_lower_the_loss(data):
    final1 = train(_config(data, "s1"), show_progress=False)
    rows = _rows(data / "s1" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20, 25, 30]
    assert float(rows[-1]["total"]) < float(rows[0]["total"]) - 0.1
    assert all(float(r["ball"]) == 0 and float(r["volume"]) == 0 for r in rows)  # stage 1: masks only
    payload = load_checkpoint(final1)
    assert payload["training"]["step"] == 30 and payload["training"]["stage"] == 1
    assert payload["class_names"] == TrainConfig().classes and payload["spacing_mm"] == [2.0, 2.0, 2.0]
    assert payload["config"]["model"] == TINY
    net = model_from_checkpoint(payload, model=TINY)  # an import path is built only when the caller names it
    assert isinstance(net, TinyNet)

    cfg2 = _config(data, "s2", stage=2, init=final1, tumors=data / "tumors.csv", init_use_ema=False)
    final2 = train(cfg2, show_progress=False)
    rows2 = _rows(data / "s2" / "metrics.csv")
    assert any(float(r["ball"]) > 0 for r in rows2) and any(float(r["volume"]) > 0 for r in rows2)
    assert float(rows2[0]["lr"]) == pytest.approx(1e-3 * warmup_poly_factor(4, 2, 30), rel=1e-3)
    # Same fixed mask + report batches: the stage-2 weights have a lower total loss than the stage-1 ones.
    probe = Trainer(cfg2, DistributedContext())
    before = _fixed_loss(probe, load_checkpoint(final1)["state_dict"])
    after = _fixed_loss(probe, load_checkpoint(final2)["state_dict"])
    assert after < before


def test_report_loss_options_reach_the_loss(data):
    """The docs/method.md §5 options of a run file (tau, m, positives rule, rank weights, term weights) are used."""
    final1 = data / "s1" / "final.pt"
    if not final1.is_file():
        final1 = train(_config(data, "s1"), show_progress=False)
    options = dict(volume_tolerance=0.2, ball_margin=0.1, ball_volume_mode="rsuper_code", ball_rank_weighted=True,
                   ball_weight=0.0, volume_weight=2.0)
    cfg = _config(data, "s2_options", stage=2, init=final1, tumors=data / "tumors.csv", **options)
    loss_fn = Trainer(cfg, DistributedContext()).loss_fn
    train(cfg.updated({"steps": 4}), show_progress=False)
    rows = _rows(data / "s2_options" / "metrics.csv")
    assert rows and all(math.isfinite(float(r["total"])) for r in rows)
    assert (loss_fn.volume.tolerance, loss_fn.ball.margin) == (0.2, 0.1)
    assert (loss_fn.ball.volume_mode, loss_fn.ball.rank_weighted) == ("rsuper_code", True)
    assert (loss_fn.ball.weight, loss_fn.volume.weight, loss_fn.report_weight) == (0.0, 2.0, 0.1)
    with pytest.raises(ValueError, match="ball_volume_mode"):
        _config(data, "bad", ball_volume_mode="sphere")


def test_checkpoint_records_supervised_voxels_per_class(data):
    """Known voxels per class are counted (a class no case annotates stays 0) and carried into stage 2."""
    names = [*TrainConfig().classes, "stomach"]  # no case of the cache has a stomach mask
    cfg = _config(data, "sv1", steps=4, class_names=names)
    counts = load_checkpoint(train(cfg, show_progress=False))["supervised_voxels"]
    per_class = cfg.optim.steps * cfg.data.batch_size * int(np.prod(cfg.data.patch_size))  # mask cases: every other class
    assert counts == {**{name: per_class for name in TrainConfig().classes}, "stomach": 0}
    cfg2 = _config(data, "sv2", steps=2, class_names=names, stage=2, init=data / "sv1" / "final.pt",
                   tumors=data / "tumors.csv")
    counts2 = load_checkpoint(train(cfg2, show_progress=False))["supervised_voxels"]
    assert counts2["stomach"] == 0 and counts2["liver"] > counts["liver"]


def test_init_from_another_network_is_refused_naming_it(data):
    """A checkpoint that claims another network (here an import path) is not used as --init, and is named."""
    final1 = data / "s1" / "final.pt"
    if not final1.is_file():
        final1 = train(_config(data, "s1"), show_progress=False)
    payload = torch.load(final1, weights_only=True)
    payload["model"]["name"] = "builtins:print"
    other = data / "other_network.pt"
    torch.save(payload, other)
    cfg = _config(data, "s2_other", stage=2, init=other, tumors=data / "tumors.csv")
    with pytest.raises(ValueError, match=r"holds weights of model 'builtins:print', this run trains"):
        Trainer(cfg, DistributedContext())
