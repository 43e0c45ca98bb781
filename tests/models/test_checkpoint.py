"""rsuper checkpoints (docs/method.md §11) and conversion of R-Super checkpoints (prefixes, EMA, pickled modules)."""

from __future__ import annotations

import re
import shlex
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rsuper.cli import app
from rsuper.io import CT_NORMALISATION
from rsuper.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    make_payload,
    model_from_checkpoint,
    save_checkpoint,
)
from rsuper.models.convert import convert_rsuper_checkpoint, load_class_list, read_rsuper_state_dict
from rsuper.models.registry import build_model

CLASSES = ["liver", "pancreas", "pancreatic_lesion"]


def _small_payload(**kwargs) -> dict:
    torch.manual_seed(0)
    model = build_model("medformer_small", 1, len(CLASSES))
    ema = {k: v + 1.0 for k, v in model.state_dict().items()}
    return make_payload("medformer_small", 1, CLASSES, (2.0, 2.0, 2.0), (64, 64, 64), model.state_dict(),
                        ema_state_dict=ema, **kwargs)


def test_roundtrip_weights_only_with_ema_choice(tmp_path):
    payload = _small_payload(training={"stage": 1, "step": 10}, config={"lr": 1e-3})
    path = save_checkpoint(tmp_path / "run" / "last.pt", payload)
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left behind
    torch.load(path, weights_only=True)  # plain data only
    loaded = load_checkpoint(path)
    assert loaded["class_names"] == CLASSES and loaded["normalisation"] == CT_NORMALISATION
    assert loaded["orientation"] == "RAS" and loaded["spacing_mm"] == [2.0, 2.0, 2.0]
    ema_model = model_from_checkpoint(loaded)
    raw_model = model_from_checkpoint(loaded, use_ema=False)
    key = "outc.bias"
    torch.testing.assert_close(ema_model.state_dict()[key], payload["ema_state_dict"][key])
    torch.testing.assert_close(raw_model.state_dict()[key], payload["state_dict"][key])
    final, aux = raw_model.eval()(torch.zeros(1, 1, 32, 32, 32))
    assert final.shape == aux.shape == (1, 3, 32, 32, 32)


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="is not a file"):
        load_checkpoint(tmp_path / "missing.pt")
    good = save_checkpoint(tmp_path / "good.pt", _small_payload())
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(truncated)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pt"):
        load_checkpoint(text)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model_state_dict": {"w": torch.zeros(1)}, "epoch": 3}, foreign)
    with pytest.raises(CheckpointError, match="convert-checkpoint"):
        load_checkpoint(foreign)
    future = _small_payload()
    future["format_version"] = 99
    torch.save(future, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_checkpoint(tmp_path / "future.pt")


def test_save_refuses_objects_that_weights_only_cannot_load(tmp_path):
    payload = _small_payload(config={"data": {"cache": tmp_path}})
    with pytest.raises(CheckpointError, match=r"payload\.config\.data\.cache is a pathlib\.\w*Path"):
        save_checkpoint(tmp_path / "bad.pt", payload)
    assert list(tmp_path.iterdir()) == []


def test_mismatched_state_dict_names_keys_and_shapes():
    payload = _small_payload()
    payload["ema_state_dict"] = None
    state = payload["state_dict"]
    state["decoder.extra.weight"] = state.pop("up3.conv_blocks.0.conv1.conv.weight")
    state["outc.weight"] = torch.zeros(5, 8, 1, 1, 1)
    with pytest.raises(CheckpointError) as info:
        model_from_checkpoint(payload)
    message = str(info.value)
    assert "missing keys: up3.conv_blocks.0.conv1.conv.weight" in message
    assert "unexpected keys: decoder.extra.weight" in message
    assert "outc.weight: checkpoint (5, 8, 1, 1, 1) vs model (3, 8, 1, 1, 1)" in message


def _rsuper_style(model: torch.nn.Module, ema_shift: float) -> dict:
    """R-Super's layout: DDP `module.` prefixes on the raw weights, EMA without prefix."""
    raw = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    ema = {k: v + ema_shift for k, v in model.state_dict().items()}
    return {"model_state_dict": raw, "ema_model_state_dict": ema, "optimizer_state_dict": {}, "epoch": 7}


def test_rsuper_checkpoint_loads_with_prefixes_and_ema(tmp_path):
    model = build_model("medformer_small", 1, 3)
    src = tmp_path / "rsuper.pth"
    torch.save(_rsuper_style(model, 0.5), src)
    ema, which = read_rsuper_state_dict(src)
    assert which == "ema_model_state_dict"
    raw, which = read_rsuper_state_dict(src, use_ema=False)
    assert which == "model_state_dict" and list(raw) == list(model.state_dict())
    torch.testing.assert_close(ema["outc.bias"], raw["outc.bias"] + 0.5)
    before = src.read_bytes()
    payload = convert_rsuper_checkpoint(src, tmp_path / "out.pt", CLASSES, spacing_mm=(1.5, 1.0, 1.0),
                                        model_name="medformer_small")
    assert src.read_bytes() == before  # input untouched
    assert payload["config"]["weights"] == "ema_model_state_dict" and payload["spacing_mm"] == [1.5, 1.0, 1.0]
    converted = model_from_checkpoint(load_checkpoint(tmp_path / "out.pt"))
    torch.testing.assert_close(converted.state_dict()["outc.bias"], ema["outc.bias"])


def test_rsuper_conversion_rejects_wrong_class_count(tmp_path):
    src = tmp_path / "rsuper.pth"
    torch.save(_rsuper_style(build_model("medformer_small", 1, 3), 0.0), src)
    with pytest.raises(CheckpointError, match="3 output channels .* 2 names"):
        convert_rsuper_checkpoint(src, tmp_path / "out.pt", CLASSES[:2], model_name="medformer_small")
    assert not (tmp_path / "out.pt").exists()


def test_pickled_module_needs_trust_and_loads_without_original_classes(tmp_path, monkeypatch):
    """DDP checkpoints hold a whole pickled module; its class need not be importable when reading it."""
    (tmp_path / "lost_net_pkg.py").write_text(textwrap.dedent("""
        from rsuper.models.medformer import MedFormer, SMALL_CONFIG
        class OriginalNet(MedFormer):
            def __init__(self):
                super().__init__(1, 3, **SMALL_CONFIG)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import lost_net_pkg

    net = lost_net_pkg.OriginalNet()
    src = tmp_path / "ddp.pth"
    torch.save({"model_state_dict": net, "epoch": 1}, src)
    del sys.modules["lost_net_pkg"]
    monkeypatch.syspath_prepend(str(tmp_path / "elsewhere"))
    (tmp_path / "lost_net_pkg.py").unlink()

    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        read_rsuper_state_dict(src, use_ema=False)
    with pytest.warns(UserWarning, match="weights_only=False"):
        state, which = read_rsuper_state_dict(src, use_ema=False, trust_checkpoint=True)
    assert which == "model_state_dict"
    assert list(state) == list(net.state_dict())
    torch.testing.assert_close(state["outc.weight"], net.state_dict()["outc.weight"])


def test_class_list_file_is_canonicalised(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("# channel order\nLiver\npancreas_tumor\n\nkidney-left\n")
    assert load_class_list(path) == ["liver", "pancreatic_lesion", "kidney_left"]
    path.write_text("liver\nliver\n")
    with pytest.raises(CheckpointError, match="duplicated"):
        load_class_list(path)


@pytest.mark.slow
def test_cli_converts_full_medformer(tmp_path):
    """`rsuper convert-checkpoint` on a paper-size MedFormer in R-Super's format (~150 MB file)."""
    src = tmp_path / "rsuper_medformer.pth"
    torch.save(_rsuper_style(build_model("medformer", 1, 3), 0.25), src)
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES))
    out = tmp_path / "converted.pt"
    runner = CliRunner()
    result = runner.invoke(app, ["convert-checkpoint", str(src), str(out), "--classes", str(classes),
                                 "--spacing", "1,1,1"])
    assert result.exit_code == 0, result.output
    payload = load_checkpoint(out)
    assert payload["model"] == {"name": "medformer", "in_channels": 1, "num_classes": 3, "kwargs": {}}
    assert payload["class_names"] == CLASSES and payload["patch_size"] == [128, 128, 128]
    model_from_checkpoint(payload)
    bad = runner.invoke(app, ["convert-checkpoint", str(src), str(tmp_path / "x.pt"), "--classes", str(classes),
                              "--spacing", "0"])
    assert bad.exit_code != 0 and "spacing" in bad.output


def test_cli_reports_missing_file(tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("liver\n")
    result = CliRunner().invoke(app, ["convert-checkpoint", str(tmp_path / "none.pth"), str(tmp_path / "o.pt"),
                                      "--classes", str(classes)])
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "none.pth is not a file" in output
    assert not (tmp_path / "o.pt").exists()


# ---------------------------------------------------------------- issue #26: what a checkpoint file may ask for
_EVIL_MODULE = """
from pathlib import Path
Path(__file__).with_name("imported.marker").write_text("module imported")
def make(in_channels, num_classes, **kwargs):
    Path(__file__).with_name("called.marker").write_text("factory called")
    raise SystemExit("the factory ran")
"""


def _saved_with_model(path: Path, spec: dict, **changes) -> Path:
    payload = {**_small_payload(), **changes}
    payload["model"] = spec
    torch.save(payload, path)  # not save_checkpoint: a hostile file need not pass rsuper's own checks
    return path


def test_checkpoint_cannot_run_a_shell_command(tmp_path):
    """Item 1: model `subprocess:call`, a shell command as in_channels and {"shell": True} as kwargs."""
    marker = tmp_path / "pwned"
    path = _saved_with_model(tmp_path / "evil.pt", {"name": "subprocess:call", "in_channels": f"touch {marker}",
                                                     "num_classes": 3, "kwargs": {"shell": True}})
    expected = r"evil\.pt: model 'subprocess:call': model\.in_channels must be a positive integer"
    with pytest.raises(CheckpointError, match=expected):
        model_from_checkpoint(load_checkpoint(path))
    payload = torch.load(path, weights_only=True)
    payload["model"]["in_channels"] = 1
    with pytest.raises(CheckpointError, match="'subprocess:call' is not a registered network"):
        model_from_checkpoint(payload)
    assert not marker.exists()


def test_checkpoint_naming_an_import_path_imports_nothing(tmp_path, monkeypatch):
    (tmp_path / "rsuper_evil_net.py").write_text(_EVIL_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _saved_with_model(tmp_path / "evil.pt", {"name": "rsuper_evil_net:make", "in_channels": 1,
                                                     "num_classes": 3, "kwargs": {}})
    payload = load_checkpoint(path)  # reading is harmless: nothing is imported or built
    with pytest.raises(CheckpointError) as info:
        model_from_checkpoint(payload, source=str(path))
    message = str(info.value)
    assert "evil.pt" in message and "'rsuper_evil_net:make' is not a registered network" in message
    assert "--model rsuper_evil_net:make" in message and "\n" not in message
    assert "rsuper_evil_net" not in sys.modules
    assert not (tmp_path / "imported.marker").exists() and not (tmp_path / "called.marker").exists()


@pytest.mark.parametrize(
    ("spec_change", "match"),
    [
        ({"in_channels": "1"}, "model.in_channels must be a positive integer"),
        ({"in_channels": True}, "model.in_channels must be a positive integer"),
        ({"in_channels": 0}, "model.in_channels must be a positive integer"),
        ({"num_classes": 3.0}, "model.num_classes must be a positive integer"),
        ({"name": ["medformer_small"]}, "model.name must be"),
        ({"name": "os.system"}, "model.name must be"),
        ({"kwargs": "base_chan=8"}, "model.kwargs must be a dict"),
        ({"kwargs": {"base_chan": {"value": 8}}}, r"model\.kwargs\.base_chan"),
        ({"kwargs": {"base_chan": torch.tensor(8)}}, r"model\.kwargs\.base_chan"),
    ],
)
def test_load_refuses_malformed_model_specs(tmp_path, spec_change, match):
    spec = {"name": "medformer_small", "in_channels": 1, "num_classes": 3, "kwargs": {}, **spec_change}
    path = _saved_with_model(tmp_path / "bad.pt", spec)
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path)
    assert "bad.pt" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bogus": 1}, r"unknown constructor argument 'bogus'.*base_chan"),
        ({"base_chan": "8"}, r"model\.kwargs\.base_chan must be an integer"),
        ({"base_chan": True}, r"model\.kwargs\.base_chan must be an integer"),
        ({"chan_num": [16, "x", 64, 80, 64, 32, 16, 8]}, r"model\.kwargs\.chan_num must be a list of integers"),
        ({"chan_num": 16}, r"model\.kwargs\.chan_num must be a list of integers"),
    ],
)
def test_model_kwargs_from_a_checkpoint_are_checked_against_the_network(tmp_path, kwargs, match):
    path = _saved_with_model(tmp_path / "kw.pt", {"name": "medformer_small", "in_channels": 1, "num_classes": 3,
                                                   "kwargs": kwargs})
    with pytest.raises(CheckpointError, match=match):
        model_from_checkpoint(load_checkpoint(path))


def test_valid_model_kwargs_still_build():
    payload = _small_payload(model_kwargs={"base_chan": 8, "chan_num": [16, 32, 64, 80, 64, 32, 16, 8]})
    model = model_from_checkpoint(payload)
    torch.testing.assert_close(model.state_dict()["outc.bias"], payload["ema_state_dict"]["outc.bias"])


_OWN_MODULE = """
import torch
class OwnNet(torch.nn.Module):
    size_divisor = 4
    def __init__(self, in_channels, num_classes, width=2):
        super().__init__()
        self.conv = torch.nn.Conv3d(in_channels, num_classes, 1)
    def forward(self, x):
        return self.conv(x), self.conv(x)
def make(in_channels, num_classes, width=2):
    return OwnNet(in_channels, num_classes, width)
"""


def test_own_network_is_built_only_when_the_caller_names_it(tmp_path, monkeypatch):
    (tmp_path / "rsuper_own_nets.py").write_text(_OWN_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import rsuper_own_nets

        net = rsuper_own_nets.make(1, 3)
        payload = make_payload("rsuper_own_nets:make", 1, CLASSES, (2, 2, 2), (8, 8, 8), net.state_dict(),
                               model_kwargs={"width": 3})
        save_checkpoint(tmp_path / "own.pt", payload)
        loaded = load_checkpoint(tmp_path / "own.pt")
        with pytest.raises(CheckpointError, match="--model rsuper_own_nets:make"):
            model_from_checkpoint(loaded)
        built = model_from_checkpoint(loaded, model="rsuper_own_nets:make")
        assert type(built).__name__ == "OwnNet"
        loaded["model"]["kwargs"] = {"depth": 3}
        with pytest.raises(CheckpointError, match="unknown constructor argument 'depth'"):
            model_from_checkpoint(loaded, model="rsuper_own_nets:make")
    finally:
        sys.modules.pop("rsuper_own_nets", None)


def test_checkpoint_class_names_must_be_plain(tmp_path):
    """Item 2: class names become file names in `rsuper predict`."""
    path = tmp_path / "classes.pt"
    torch.save(_small_payload() | {"class_names": ["liver", "../../../x/liver", "pancreatic_lesion"]}, path)
    with pytest.raises(CheckpointError, match=r"classes\.pt: class name '\.\./\.\./\.\./x/liver' is not allowed"):
        load_checkpoint(path)
    payload = _small_payload(supervised_voxels={"liver": 1, "pancreas": 0, "../x": 0})
    with pytest.raises(CheckpointError, match=r"class name '\.\./x' is not allowed"):
        save_checkpoint(tmp_path / "sv.pt", payload)


def test_class_list_file_refuses_path_like_names(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("liver\n../../outside/pancreas\n")
    with pytest.raises(CheckpointError, match=r"classes\.txt: class name '\.\./\.\./outside/pancreas' is not allowed"):
        load_class_list(path)


# ------------------------------------------------------------------------- issue #26 item 10: convert-checkpoint
def test_files_that_are_not_torch_checkpoints_are_named_so(tmp_path):
    noise = tmp_path / "noise.pth"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    text = tmp_path / "readme.pth"
    text.write_text("this is a text file, not a checkpoint\n")
    zipped = tmp_path / "archive.pth"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("notes.txt", "hello")
    for path in (noise, text, zipped):
        with pytest.raises(CheckpointError, match=f"{path.name} is not a PyTorch checkpoint") as info:
            read_rsuper_state_dict(path, trust_checkpoint=False)
        assert "trust" not in str(info.value)
        with pytest.raises(CheckpointError, match=f"{path.name} is not a PyTorch checkpoint"):
            load_checkpoint(path)
    classes = tmp_path / "classes.txt"
    classes.write_text("liver\n")
    result = CliRunner().invoke(app, ["convert-checkpoint", str(noise), str(tmp_path / "o.pt"), "--classes", str(classes)])
    output = "".join(result.output.split())  # rich folds long paths anywhere
    assert result.exit_code == 2 and "notaPyTorchcheckpoint" in output and "trust" not in output


def test_cli_convert_needs_a_class_list(tmp_path):
    src = tmp_path / "rsuper.pth"
    torch.save(_rsuper_style(build_model("medformer_small", 1, 3), 0.0), src)
    missing = CliRunner().invoke(app, ["convert-checkpoint", str(src), str(tmp_path / "o.pt")])
    assert missing.exit_code == 2 and "Missing option '--classes'" in missing.output
    with pytest.raises(CheckpointError, match=r"class list 42 is not a file.*one class name per line"):
        load_class_list("42")


@pytest.mark.slow
def test_cli_convert_help_example_runs(tmp_path, monkeypatch):
    """The `Example:` line of `rsuper convert-checkpoint --help`, run as written (paper-size MedFormer)."""
    runner = CliRunner()
    (command,) = [c for c in app.registered_commands if c.name == "convert-checkpoint"]
    example = re.search(r"Example: rsuper (convert-checkpoint .*)", command.callback.__doc__).group(1)
    assert " ".join(example.split()) in " ".join(runner.invoke(app, ["convert-checkpoint", "--help"]).output.split())
    args = shlex.split(example)
    monkeypatch.chdir(tmp_path)
    torch.save(_rsuper_style(build_model("medformer", 1, 3), 0.0), args[1])
    Path(args[args.index("--classes") + 1]).write_text("liver\npancreas\npancreatic_lesion\n")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(args[2])["class_names"] == CLASSES
