"""MedFormer against R-Super's manifests (keys, shapes, order, parameter count) and reference outputs.

The reference (../shared/medformer/reference_forward.json) was produced by the original network in
float64 with two synthetic weight fills; the pass criteria are the JSON's suggested tolerances.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rsuper.models.medformer import MedFormer

MEDFORMER_DIR = Path(__file__).resolve().parents[3] / "shared" / "medformer"


def _json(name: str) -> dict:
    path = MEDFORMER_DIR / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return json.loads(path.read_text())


def sine_fill(k: int, key: str, shape: list[int]) -> np.ndarray:
    """Reference fill rule: 0.05 * sin(0.731 * i + 1.3 * k), row-major."""
    n = int(np.prod(shape))
    return (0.05 * np.sin(0.731 * np.arange(n, dtype=np.float64) + 1.3 * k)).reshape(shape)


def hash_fill(k: int, key: str, shape: list[int]) -> np.ndarray:
    """Supplementary full-rank integer-hash fill (exact int64 arithmetic, values in float64)."""
    n = int(np.prod(shape))
    mask = (1 << 32) - 1
    h = (np.arange(n, dtype=np.int64) * 1103515245 + (k + 1) * 12345 + 2531011) & mask
    h ^= h >> 16
    h = (h * 1664525) & mask
    h ^= h >> 13
    h = (h * 22695477) & mask
    h ^= h >> 16
    u = h.astype(np.float64) / 2**32 * 2 - 1
    if len(shape) >= 2:
        values = np.sqrt(3.0 / (n // shape[0])) * u
    elif key.startswith("map_fusion.") and ".norm.weight" in key:
        values = 1 + 0.1 * u
    else:
        values = 0.1 * u
    return values.reshape(shape)


FILLS = {"sine": sine_fill, "hash": hash_fill}


def filled_model(fill: str, num_classes: int = 26) -> MedFormer:
    """Float64 MedFormer whose k-th state_dict entry (manifest order) holds the fill."""
    net = MedFormer(1, num_classes).double().eval()
    state = {
        key: torch.from_numpy(FILLS[fill](k, key, list(t.shape))) for k, (key, t) in enumerate(net.state_dict().items())
    }
    net.load_state_dict(state, strict=True)
    return net


def reference_input(shape: list[int]) -> torch.Tensor:
    """x[0,0,d,h,w] = sin(0.05 d) + cos(0.07 h) + 0.5 sin(0.11 w + 0.3), float64."""
    d, h, w = torch.meshgrid(*(torch.arange(s, dtype=torch.float64) for s in shape[2:]), indexing="ij")
    return (torch.sin(0.05 * d) + torch.cos(0.07 * h) + 0.5 * torch.sin(0.11 * w + 0.3))[None, None]


def reference_cases(fill: str) -> list[dict]:
    ref = _json("reference_forward.json")
    return ref["cases"] if fill == "sine" else ref["supplementary_hash_fill"]["cases"]


def check_against_reference(fill: str, case: dict) -> None:
    """Both outputs: 20 values within 1e-9 (hash) / 1e-8 (sine) of max|ref|; sums and stats likewise."""
    rel = 1e-9 if fill == "hash" else 1e-8
    with torch.no_grad():
        outputs = filled_model(fill)(reference_input(case["input_shape"]))
    assert isinstance(outputs, tuple) and len(outputs) == 2
    for out, name in zip(outputs, ("segmentation[0]", "segmentation[1]")):
        ref = case["outputs"][name]
        assert list(out.shape) == ref["shape"] and out.dtype == torch.float64
        max_abs = max(abs(ref["max"]), abs(ref["min"]))
        idx = torch.tensor(ref["indices"])
        got = out[tuple(idx.T)]
        want = torch.tensor(ref["values"], dtype=torch.float64)
        assert (got - want).abs().max().item() <= rel * max_abs, name
        abs_sum = out.abs().sum().item()
        assert abs(out.sum().item() - ref["sum"]) <= rel * ref["abs_sum"], name
        assert abs_sum == pytest.approx(ref["abs_sum"], rel=rel)
        assert out.std().item() == pytest.approx(ref["std"], rel=rel)
        assert out.min().item() == pytest.approx(ref["min"], rel=rel)
        assert out.max().item() == pytest.approx(ref["max"], rel=rel)


@pytest.mark.parametrize("num_classes", [42, 26])
def test_state_dict_matches_manifest(num_classes):
    manifest = _json(f"manifest_{num_classes}.json")
    net = MedFormer(1, num_classes)
    ours = [(key, list(t.shape), str(t.dtype).replace("torch.", "")) for key, t in net.state_dict().items()]
    assert ours == [tuple(entry) for entry in manifest["state_dict"]]
    assert sum(p.numel() for p in net.parameters()) == manifest["num_parameters"]
    assert list(net.buffers()) == []


def test_paper_parameter_count():
    assert sum(p.numel() for p in MedFormer(1, 42).parameters()) == 37_889_140
    assert sum(p.numel() for p in MedFormer(1, 26).parameters()) == 37_886_548


@pytest.mark.parametrize("fill", ["sine", "hash"])
def test_fill_matches_reference_fill_check(fill):
    ref = _json("reference_forward.json")
    check = ref["fill_check"] if fill == "sine" else ref["supplementary_hash_fill"]["fill_check"]
    state = filled_model(fill).state_dict()
    total = sum(float(t.sum()) for t in state.values())
    assert total == pytest.approx(check["sum_all"], abs=1e-9 * check["abs_sum_all"])
    assert state["inc.conv1.weight"].flatten()[:3].tolist() == pytest.approx(check["first_entry"][1], abs=1e-15)
    assert state["outc.bias"][:3].tolist() == pytest.approx(check["last_entry"][1], abs=1e-15)


def test_reference_forward_non_cubic_hash_fill():
    """32x64x48 input, full-rank fill: catches axis order, head split and fusion details (~20 s)."""
    case = next(c for c in reference_cases("hash") if c["input_shape"] == [1, 1, 32, 64, 48])
    check_against_reference("hash", case)


@pytest.mark.slow
@pytest.mark.parametrize("fill", ["sine", "hash"])
def test_reference_forward_64(fill):
    """The recorded 64^3 case of each fill (about 80 s each on one CPU thread)."""
    case = next(c for c in reference_cases(fill) if c["input_shape"] == [1, 1, 64, 64, 64])
    check_against_reference(fill, case)


def test_rejects_sizes_not_multiple_of_16():
    net = MedFormer(1, 2, **{"base_chan": 4, "chan_num": (8, 8, 8, 8, 8, 8, 8, 4), "num_heads": (1, 1, 1, 1, 1, 1, 1, 1),
                             "dim_head": 8, "trans_num": (0, 1, 1, 1, 1, 1, 0, 0)})
    with pytest.raises(ValueError, match="multiple of 16"):
        net(torch.zeros(1, 1, 32, 40, 32))


def test_inconsistent_widths_are_rejected():
    with pytest.raises(ValueError, match="mirror"):
        MedFormer(1, 2, chan_num=(64, 128, 256, 320, 256, 128, 64, 16))
