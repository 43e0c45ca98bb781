"""Trainer (docs/method.md §6): exact resume, NaN stop, schedule, output-bias init, CLI configuration."""

from __future__ import annotations


import pytest
import torch
from train_helpers import make_cache, metrics_rows, tiny_run_config
from typer.testing import CliRunner

from rsuper.cli import app
from rsuper.config import TrainConfig
from rsuper.models.checkpoint import CheckpointError, load_checkpoint, make_payload, save_checkpoint
from rsuper.models.registry import build_model
from rsuper.reports.tables import write_tumors_csv
from rsuper.train.schedule import warmup_poly_factor
from rsuper.train.distributed import DistributedContext
from rsuper.train.bias_init import output_bias_parameters
from rsuper.train.trainer import Trainer, TrainingDiverged, train

TINY = "train_helpers:make_tiny_net"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    findings = make_cache(root / "cache")
    write_tumors_csv(findings.values(), root / "tumors.csv")
    return root


def _config(root, out, **kw):
    """A tiny run's config; ``kw``: settings on top."""
    return tiny_run_config(root, out, **kw)


_rows = metrics_rows



def test_resume_after_interruption_is_exact(data):
    # Bit-exact on CPU; on a GPU cuDNN's non-deterministic convolution backward changes the last bits.
    cfg = _config(data, "full", steps=8, checkpoint_every=3, augment=True, device="cpu")
    full = load_checkpoint(train(cfg, show_progress=False))

    def interrupt(step, _losses):
        if step == 5:
            raise KeyboardInterrupt

    cut = _config(data, "cut", steps=8, checkpoint_every=3, augment=True, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        train(cut, show_progress=False, on_step=interrupt)
    assert load_checkpoint(data / "cut" / "last.pt")["training"]["step"] == 3
    resumed = load_checkpoint(train(cut.model_copy(update={"resume": True}), show_progress=False))
    for key in ("state_dict", "ema_state_dict"):
        for name, tensor in full[key].items():
            assert torch.equal(tensor, resumed[key][name]), (key, name)
    assert [r["step"] for r in _rows(data / "cut" / "metrics.csv")] == ["5", "8"]


def test_nan_stops_with_clear_message_and_keeps_last_checkpoint(data, monkeypatch):
    cfg = _config(data, "nan", steps=6, checkpoint_every=2, workers=2)  # also runs DataLoader workers
    original = Trainer._train_step

    def poisoned(self, batch):
        if self.step == 3:
            batch = {**batch, "image": batch["image"] * float("nan")}
        return original(self, batch)

    monkeypatch.setattr(Trainer, "_train_step", poisoned)
    with pytest.raises(TrainingDiverged, match=r"step 4: loss is not finite.*last good checkpoint .*last.pt is kept"):
        train(cfg, show_progress=False)
    assert load_checkpoint(data / "nan" / "last.pt")["training"]["step"] == 2


def test_output_bias_is_log_odds_of_foreground(data):
    trainer = Trainer(_config(data, "bias", steps=1), DistributedContext())
    heads = output_bias_parameters(trainer.model, len(trainer.class_names), 4)
    assert {id(h) for h in heads} == {id(trainer.model.final.bias), id(trainer.model.aux.bias)}
    bias = trainer.model.final.bias.detach()
    lesion = trainer.class_names.index("liver_lesion")
    liver = trainer.class_names.index("liver")
    assert bias[lesion] < bias[liver] < 0  # rare lesion voxels, common liver voxels: log-odds < 0
    assert torch.equal(trainer.model.final.bias, trainer.model.aux.bias)


def test_schedule_warmup_then_poly():
    assert warmup_poly_factor(0, 4, 100) == pytest.approx(0.2)
    assert warmup_poly_factor(3, 4, 100) == pytest.approx(0.8)
    assert warmup_poly_factor(4, 4, 100) == 1.0
    assert warmup_poly_factor(52, 4, 100) == pytest.approx(0.5**0.9)
    assert warmup_poly_factor(100, 4, 100) == 0.0


def test_cli_print_config_and_errors(data, tmp_path):
    runner = CliRunner()
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text("model: dynunet_small\nsteps: 7\ntarget_organs: [pancreas]\n")
    result = runner.invoke(app, ["train", "--config", str(run_yaml), "--patch-size", "64,64,32", "--print-config"])
    assert result.exit_code == 0, result.output
    printed = TrainConfig.model_validate(__import__("yaml").safe_load(result.stdout))
    assert printed.optim.steps == 7 and printed.data.patch_size == (64, 64, 32)
    assert printed.classes[-1] == "pancreatic_lesion"
    bad = runner.invoke(app, ["train", "--config", str(run_yaml), "--stage", "2", "--print-config"])
    assert bad.exit_code == 2 and "init" in bad.output
    (tmp_path / "typo.yaml").write_text("stpes: 3\n")
    assert runner.invoke(app, ["train", "--config", str(tmp_path / "typo.yaml")]).exit_code == 2
    missing = runner.invoke(app, ["train", "--cache", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 1 and "rsuper prepare" in missing.output


def test_resume_never_imports_a_network_named_only_by_the_checkpoint(data, tmp_path, monkeypatch):
    """Issue #26 item 1: OUT/last.pt's stored run config names an import path; resuming must not import it
    unless the user names the same network (--model / `model:` in the run file)."""
    (tmp_path / "rsuper_evil_resume.py").write_text(
        "from pathlib import Path\n"
        "Path(__file__).with_name('imported.marker').write_text('imported')\n"
        "from train_helpers import make_tiny_net as make\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    evil = "rsuper_evil_resume:make"
    stored = _config(data, "evil_resume", model=evil)
    net = build_model(TINY, 1, len(stored.classes))
    (data / "evil_resume").mkdir(exist_ok=True)
    save_checkpoint(data / "evil_resume" / "last.pt", make_payload(
        evil, 1, stored.classes, (2.0, 2.0, 2.0), stored.data.patch_size, net.state_dict(), config=stored.to_dict(),
        training={"step": 1}))
    plain = TrainConfig(cache=data / "cache", out=data / "evil_resume", resume=True)
    with pytest.raises(CheckpointError, match=rf"'{evil}'.*--model {evil}"):
        Trainer(plain, DistributedContext())
    other = TrainConfig(cache=data / "cache", out=data / "evil_resume", resume=True, model="dynunet_small")
    with pytest.raises(CheckpointError, match=rf"'{evil}'.*--model {evil}"):
        Trainer(other, DistributedContext())
    assert not (tmp_path / "imported.marker").exists()
    small = build_model("dynunet_small", 1, len(stored.classes))
    save_checkpoint(data / "evil_resume" / "last.pt", make_payload(
        "dynunet_small", 1, stored.classes, (2.0, 2.0, 2.0), stored.data.patch_size, small.state_dict(),
        config=_config(data, "evil_resume", model="dynunet_small", model_kwargs={"filters": "8,16"}).to_dict(),
        training={"step": 1}))
    with pytest.raises(CheckpointError, match=r"last\.pt.*kwargs\.filters must be a list of integers"):
        Trainer(plain, DistributedContext())
