"""torchrun / DDP helpers: one process per device, env:// rendezvous, gloo on CPU and nccl on GPU.

Launch with ``torchrun --nproc_per_node N $(which rsuper) train --config RUN.yaml`` (torchrun runs the
``rsuper`` entry-point script once per process). Without torchrun's environment variables training runs
as a single process.

Example:
    >>> ctx = setup_distributed("auto")
    >>> ctx.rank, ctx.world_size, ctx.device
    (0, 1, device(type='cpu'))
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from rsuper.device import resolve_device


@dataclass(frozen=True)
class DistributedContext:
    """Where this process runs. ``owns_group``: this process created the process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files and prints."""
        return self.rank == 0


def setup_distributed(device: str = "auto") -> DistributedContext:
    """Reads torchrun's RANK/WORLD_SIZE/LOCAL_RANK and joins (or creates) the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not 0 <= rank < world_size:
        # A stray RANK without WORLD_SIZE would make this process a non-main rank that never saves.
        raise ValueError(
            f"environment has RANK={rank} but WORLD_SIZE={world_size}: launch several processes with torchrun "
            "(it sets both), or unset RANK for a single-process run"
        )
    resolved = resolve_device(device, local_rank)
    owns = False
    if world_size > 1 and not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo", init_method="env://")
        owns = True
    return DistributedContext(rank, world_size, local_rank, resolved, owns)


def cleanup_distributed(ctx: DistributedContext) -> None:
    """Destroys the process group if this process created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_ranks_true(flag: bool, ctx: DistributedContext) -> bool:
    """True only when ``flag`` is true on every rank (one all-reduce; a no-op without DDP)."""
    if not ctx.enabled:
        return flag
    value = torch.tensor([0.0 if flag else 1.0], device=ctx.device)
    dist.all_reduce(value)
    return value.item() == 0


def barrier(ctx: DistributedContext) -> None:
    """Waits for all ranks (no-op without DDP)."""
    if ctx.enabled:
        dist.barrier()
