"""Output-bias initialisation (docs/method.md §6): foreground fractions of sampled mask patches as log-odds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from train_helpers import SPACING_MM, TinyNet, make_cache

from rsuper.config import TrainConfig
from rsuper.models.registry import build_model
from rsuper.train.bias_init import foreground_fractions, init_output_bias, output_bias_parameters
from rsuper.train.build import build_training_data


def test_biases_of_both_heads_are_the_log_odds_of_the_foreground_fractions(tmp_path):
    make_cache(tmp_path / "cache")
    config = TrainConfig(cache=tmp_path / "cache", data={"patch_size": (32, 32, 32), "augment": {"enabled": False}})
    data = build_training_data(config, config.classes, SPACING_MM)
    fractions = foreground_fractions(data.dataset, data.n_mask, batch_size=2, seed=7)
    assert fractions.shape == (len(config.classes),) and bool(((fractions >= 1e-4) & (fractions <= 1 - 1e-4)).all())
    net = TinyNet(1, len(config.classes))
    heads = init_output_bias(net, data.dataset, data.n_mask, batch_size=2, seed=7)
    assert {id(h) for h in heads} == {id(net.final.bias), id(net.aux.bias)}
    expected = torch.tensor(np.log(fractions / (1 - fractions)), dtype=torch.float32)
    assert torch.equal(net.final.bias.detach(), expected) and torch.equal(net.aux.bias.detach(), expected)
    assert expected[config.classes.index("liver_lesion")] < expected[config.classes.index("liver")] < 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_output_bias_probe_runs_on_the_models_device():
    model = build_model("dynunet_small", 1, 3).cuda()
    heads = output_bias_parameters(model, 3, 2 * model.size_divisor)
    assert len(heads) == 2 and all(h.is_cuda for h in heads)
