"""Registry contract: every network returns (final, aux) at input size in train and eval mode."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from torch import nn

from rsuper.models import registry
from rsuper.models.registry import available_models, build_model, register_model


@pytest.mark.parametrize("name", ["medformer_small", "dynunet_small"])
def test_small_models_train_and_eval_return_tuple_at_input_size(name):
    torch.manual_seed(0)
    net = build_model(name, 1, 3)
    assert net.size_divisor == 16
    x = torch.randn(1, 1, 32, 48, 32)
    net.train()
    final, aux = net(x)
    assert final.shape == aux.shape == (1, 3, 32, 48, 32)
    (final.mean() + aux.mean()).backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None for g in grads), "some parameters get no gradient from (final, aux)"
    net.eval()
    with torch.no_grad():
        final_eval, aux_eval = net(x)
    assert final_eval.shape == aux_eval.shape == (1, 3, 32, 48, 32)
    assert not torch.allclose(final_eval, aux_eval)


def test_medformer_small_is_mode_independent():
    """No dropout and no running statistics: train and eval give the same outputs."""
    torch.manual_seed(0)
    net = build_model("medformer_small", 1, 2)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        train_out = net.train()(x)
        eval_out = net.eval()(x)
    for a, b in zip(train_out, eval_out):
        torch.testing.assert_close(a, b)


def test_paper_dynunet_is_nnunet_like():
    """6 levels (5 down-samplings), widths 32..320, MONAI's own key names (no wrapper prefix)."""
    net = build_model("dynunet", 1, 2)
    assert net.size_divisor == 32
    assert list(net.filters) == [32, 64, 128, 256, 320, 320]
    assert net.deep_supervision and net.deep_supr_num == 1
    assert list(net.state_dict())[0] == "input_block.conv1.conv.weight"


def test_paper_medformer_keys_have_no_wrapper_prefix():
    net = build_model("medformer", 1, 42)
    keys = list(net.state_dict())
    assert keys[0] == "inc.conv1.weight" and keys[-1] == "outc.bias"
    assert sum(p.numel() for p in net.parameters()) == 37_889_140
    assert net.size_divisor == 16


def test_builtin_names_listed():
    assert {"medformer", "medformer_small", "dynunet", "dynunet_small"} <= set(available_models())


def test_unknown_name_lists_registered_models():
    with pytest.raises(ValueError, match="medformer_small"):
        build_model("unet9000", 1, 2)


class _TinyNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int = 4) -> None:
        super().__init__()
        self.body = nn.Conv3d(in_channels, width, 3, padding=1)
        self.final = nn.Conv3d(width, num_classes, 1)
        self.aux = nn.Conv3d(width, num_classes, 1)

    def forward(self, x):
        h = torch.relu(self.body(x))
        return self.final(h), self.aux(h)


def test_register_plugin_sets_size_divisor_and_passes_kwargs():
    name = "test_tiny_plugin"
    registry._REGISTRY.pop(name, None)
    try:
        register_model(name, size_divisor=4)(lambda c_in, n_cls, **kw: _TinyNet(c_in, n_cls, **kw))
        net = build_model(name, 1, 3, width=6)
        assert net.size_divisor == 4 and net.body.out_channels == 6
        with pytest.raises(ValueError, match="already registered"):
            register_model(name)(_TinyNet)
    finally:
        registry._REGISTRY.pop(name, None)


def test_import_path_plugin_and_missing_size_divisor(tmp_path, monkeypatch):
    (tmp_path / "my_test_nets.py").write_text(textwrap.dedent("""
        from torch import nn
        class Net(nn.Module):
            size_divisor = 8
            def __init__(self, in_channels, num_classes):
                super().__init__()
                self.conv = nn.Conv3d(in_channels, num_classes, 1)
            def forward(self, x):
                return self.conv(x), self.conv(x)
        def make(in_channels, num_classes):
            return Net(in_channels, num_classes)
        def make_bare(in_channels, num_classes):
            return nn.Conv3d(in_channels, num_classes, 1)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        net = build_model("my_test_nets:make", 1, 2)
        assert net.size_divisor == 8
        with pytest.raises(ValueError, match="size_divisor"):
            build_model("my_test_nets:make_bare", 1, 2)
        with pytest.raises(ValueError, match="cannot import"):
            build_model("my_test_nets:nope", 1, 2)
    finally:
        sys.modules.pop("my_test_nets", None)


def test_cli_lists_models():
    from typer.testing import CliRunner

    from rsuper.cli import app

    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert "medformer_small" in result.output and "dynunet" in result.output


def test_constructor_arguments_from_a_file_are_checked():
    """Issue #26 item 1: arguments read from a file must be declared by the network and plain data."""
    from rsuper.models.registry import ModelSpecError, check_model_kwargs, check_model_name_syntax, model_for_file

    name, loose = "test_declared_plugin", "test_loose_plugin"
    try:
        register_model(name, size_divisor=4, kwargs={"width": int})(lambda c, n, **kw: _TinyNet(c, n, **kw))
        register_model(loose, size_divisor=4)(lambda c, n, **kw: _TinyNet(c, n, **kw))
        assert check_model_kwargs(name, {"width": 6}) == {"width": 6}
        with pytest.raises(ModelSpecError, match=r"model\.kwargs\.width must be an integer, got '6'"):
            check_model_kwargs(name, {"width": "6"})
        with pytest.raises(ModelSpecError, match="unknown constructor argument 'depth'.*accepts: width"):
            check_model_kwargs(name, {"depth": 2})
        assert check_model_kwargs(loose, {"width": 6, "mode": "fast"}) == {"width": 6, "mode": "fast"}
        with pytest.raises(ModelSpecError, match=r"model\.kwargs\.width must be a number, string, bool"):
            check_model_kwargs(loose, {"width": {"__class__": "os.system"}})
        with pytest.raises(ModelSpecError, match="not an argument name"):
            check_model_kwargs(loose, {"__init__ ": 1})
        assert check_model_kwargs("dynunet_small", {"filters": [8, 16, 32], "res_block": True})
        assert model_for_file("dynunet_small") == "dynunet_small"
        assert model_for_file("os:system", chosen="dynunet_small") == "dynunet_small"
        with pytest.raises(ModelSpecError, match="never imports code named in a file.*--model os:system"):
            model_for_file("os:system")
        with pytest.raises(ModelSpecError, match="give its import path yourself: `--model package.module:factory`"):
            model_for_file("mynet")  # registered in the training process, not here
        assert check_model_name_syntax("mynet") == "mynet"  # readable; only model_for_file decides what is built
        with pytest.raises(ModelSpecError, match="model.name must be a network name"):
            check_model_name_syntax("os.system")
    finally:
        registry._REGISTRY.pop(name, None)
        registry._REGISTRY.pop(loose, None)
