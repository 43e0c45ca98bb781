"""Two-process DDP on CPU (gloo): both ranks train, rank 0 writes one checkpoint, weights stay in sync."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from train_helpers import make_cache

from rsuper.config import TrainConfig
from rsuper.models.checkpoint import load_checkpoint


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, config: dict, result_dir: str) -> None:
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
         "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
    )
    torch.set_num_threads(1)
    from rsuper.train.trainer import Trainer, train

    seen: list[int] = []
    original = Trainer._train_step

    def record(self, batch):
        seen.append(int(batch["image"].sum() * 1000))
        return original(self, batch)

    Trainer._train_step = record
    final = train(TrainConfig.model_validate(config), show_progress=False)
    torch.save({"final": str(final), "seen": seen}, os.path.join(result_dir, f"rank{rank}.pt"))


@pytest.mark.slow
def test_two_process_gloo_ddp_saves_one_checkpoint(tmp_path):
    make_cache(tmp_path / "cache")
    config = TrainConfig(
        cache=tmp_path / "cache", out=tmp_path / "ddp", model="train_helpers:make_tiny_net",
        data={"patch_size": (32, 32, 32), "workers": 0, "batch_size": 1, "augment": {"enabled": False}},
        optim={"steps": 3}, checkpoint_every=2, log_every=1, device="cpu",
    ).to_dict()
    mp.spawn(_worker, args=(2, _free_port(), config, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert ranks[0]["final"] == ranks[1]["final"] == str(tmp_path / "ddp" / "final.pt")
    assert ranks[0]["seen"] != ranks[1]["seen"]  # each rank drew its own samples
    payload = load_checkpoint(tmp_path / "ddp" / "final.pt")
    assert payload["training"]["world_size"] == 2 and payload["training"]["step"] == 3
    assert len(payload["training"]["rng"]["torch"]) == 2
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir() if p.suffix == ".pt") == ["final.pt", "last.pt"]
    rows = (tmp_path / "ddp" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 4  # header + one row per step, written once (rank 0 only)


def test_stray_rank_without_world_size_is_a_clear_error(monkeypatch):
    """RANK=1 alone (no torchrun) would make a single process a non-main rank that never saves."""
    from rsuper.train.distributed import setup_distributed

    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match="RANK=1 but WORLD_SIZE=1"):
        setup_distributed("cpu")
    monkeypatch.setenv("RANK", "0")
    assert setup_distributed("cpu").world_size == 1
