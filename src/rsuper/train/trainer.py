"""The training loop of docs/method.md §6: stage 1 (masks) and stage 2 (masks + reports), DDP, exact resume.

Policy lives elsewhere: the dataset and the loss of a config in ``rsuper.train.build`` (samples in
``rsuper.data``, losses in ``rsuper.losses``), the output-bias initialisation in ``rsuper.train.bias_init``,
schedule in ``rsuper.train.schedule``, EMA in ``rsuper.train.ema``. This module keeps the loop, the step and
the checkpoints: it wires them, steps the optimiser and writes self-describing checkpoints (``rsuper.models.checkpoint`` payload) atomically:
``OUT/last.pt`` every ``checkpoint_every`` steps, ``OUT/final.pt`` at the end, ``OUT/metrics.csv``,
``OUT/config.yaml``. Only rank 0 writes.

Exact resume: the batch of step ``s`` depends only on (seed, s, rank, stage), and the checkpoint holds model,
EMA, optimiser, scheduler, step and torch RNG state, so ``--resume`` continues as if never stopped.

Example:
    >>> final = train(TrainConfig(cache="cache", out="runs/s1", model="dynunet_small", optim={"steps": 500}))
    >>> final
    PosixPath('runs/s1/final.pt')
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from rsuper.config import TrainConfig
from rsuper.data.dataset import MixedBatchSampler
from rsuper.data.preprocess import load_manifest
from rsuper.errors import ConfigError
from rsuper.models import checkpoint as ckpt
from rsuper.models.registry import build_model, check_model_kwargs, model_for_file
from rsuper.train.bias_init import init_output_bias
from rsuper.train.build import build_loss, build_training_data
from rsuper.train.distributed import (
    DistributedContext,
    all_ranks_true,
    barrier,
    cleanup_distributed,
    setup_distributed,
)
from rsuper.train.ema import create_ema
from rsuper.train.metrics import MetricsLog
from rsuper.train.schedule import warmup_poly_scheduler

TARGET_KEYS = ("label", "unknown", "region")
LOSS_TERMS = ("total", "seg_final", "seg_aux", "ball", "volume")
StepCallback = Callable[[int, dict[str, float]], None]


class TrainingDiverged(RuntimeError):
    """Raised when a loss or gradient becomes NaN/Inf; the last good checkpoint is kept."""


def train(config: TrainConfig, *, show_progress: bool = True, on_step: StepCallback | None = None) -> Path:
    """Runs one training stage and returns the path of ``OUT/final.pt``.

    Args:
        config: the run configuration (``config.resume`` continues from ``OUT/last.pt``).
        show_progress: rich progress bar with the loss terms (rank 0 only).
        on_step: called as ``on_step(step, losses)`` after every optimiser step (1-based step).

    Under torchrun each process calls ``train``; batch size is per process.
    """
    ctx = setup_distributed(config.device)
    try:
        return Trainer(config, ctx).run(show_progress=show_progress, on_step=on_step)
    finally:
        cleanup_distributed(ctx)


def stored_run_config(payload: dict[str, Any], source: Path, given: TrainConfig) -> TrainConfig:
    """The run config stored in a checkpoint (``OUT/last.pt``), checked like any model spec read from a file.

    Its network must be a registered one, or the one the user names in ``given`` (``--model`` or ``model:`` in
    the run file): an import path recorded only in the checkpoint is never imported. Its ``model_kwargs`` must be
    arguments that network declares, of their types. Raises ``CheckpointError`` naming ``source``.
    """
    stored = TrainConfig.from_stored(payload["config"], source)  # ConfigError: one line per problem
    chosen = given.model if "model" in given.model_fields_set else None
    try:
        model_for_file(stored.model, chosen if chosen == stored.model else None)
        check_model_kwargs(stored.model, stored.model_kwargs, where="config.model_kwargs")
    except ValueError as err:
        raise ckpt.CheckpointError(f"{source}: {err}") from None
    return stored


class Trainer:
    """One stage of training on one process (see ``train``)."""

    def __init__(self, config: TrainConfig, ctx: DistributedContext) -> None:
        self.out = Path(config.out)
        resume_payload = None
        if config.resume:
            last = self.out / "last.pt"
            if not last.is_file():
                raise FileNotFoundError(f"--resume: {last} not found; start without --resume")
            resume_payload = ckpt.load_checkpoint(last)
            stored = stored_run_config(resume_payload, last, config)
            # The stored run defines the run; only where/how it runs may change.
            data = stored.data.model_copy(update={"workers": config.data.workers})
            config = stored.model_copy(update={"resume": True, "device": config.device, "data": data})
        self.config, self.ctx = config, ctx
        self.device = ctx.device
        self.console = Console(stderr=True, quiet=not ctx.is_main)
        self.class_names = config.classes
        if not config.cache:
            raise ConfigError("no cache given: set `cache` in the config or pass --cache CACHE (from `rsuper prepare`)")
        manifest = load_manifest(config.cache[0])
        self.spacing_mm = tuple(float(s) for s in manifest["spacing_mm"])
        training_data = build_training_data(config, self.class_names, self.spacing_mm)
        self.console.print(training_data.summary())
        self.dataset, self.n_mask, self.n_report = training_data.dataset, training_data.n_mask, training_data.n_report
        # Known (labelled) voxels seen per class, this rank's share; stage 2 starts from stage 1's (main rank).
        self.supervised_voxels = torch.zeros(len(self.class_names), dtype=torch.float64)
        torch.manual_seed(config.seed)
        # channels-last 3D: same numbers, 2-3x faster convolution backward on CPU, tensor-core friendly on GPU.
        self.model = self._build_model(config).to(self.device, memory_format=torch.channels_last_3d)
        optim = config.optim
        self.ema = create_ema(self.model, optim.ema_decay)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.effective_lr, weight_decay=optim.weight_decay)
        self.scheduler = warmup_poly_scheduler(self.optimizer, optim.warmup_steps, optim.steps, optim.poly_power)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
        if self.amp_dtype is not None and self.device.type != "cuda":
            self.console.print(f"[yellow]amp={config.amp} needs a GPU; training in float32 on {self.device}[/]")
            self.amp_dtype = None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.loss_fn = build_loss(config, self.class_names, self.spacing_mm)
        self.step = 0
        if resume_payload is not None:
            self._load_training_state(resume_payload)
        elif config.stage == 1 and optim.bias_init:
            heads = init_output_bias(self.model, self.dataset, self.n_mask, config.data.batch_size, config.seed + 7)
            self.console.print(f"output bias initialised on {len(heads)} head(s) from foreground fractions")
        self.net: nn.Module = self.model
        if ctx.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)

    # ----------------------------------------------------------------------------------------- set-up
    def _build_model(self, config: TrainConfig) -> nn.Module:
        """The network; in stage 2 (not resuming) with stage 1's weights, whose supervised-voxel counts are
        added to this run's."""
        try:
            model = build_model(config.model, 1, len(self.class_names), **config.model_kwargs)
        except TypeError as err:  # a keyword the network does not take
            raise ConfigError(f"model_kwargs {config.model_kwargs} do not fit model {config.model!r}: {err}") from None
        patch_size = config.data.patch_size
        if any(p % model.size_divisor for p in patch_size):
            raise ConfigError(
                f"patch_size {patch_size} must be a multiple of {model.size_divisor} for model {config.model!r}"
            )
        if config.stage == 2 and not config.resume:
            payload = ckpt.load_checkpoint(config.init)
            if payload["model"]["name"] != config.model:
                raise ConfigError(
                    f"--init {config.init} holds weights of model {payload['model']['name']!r:.80}, this run trains "
                    f"{config.model!r}; start stage 2 with the stage-1 network (--model)"
                )
            if list(payload["class_names"]) != self.class_names:
                raise ConfigError(
                    f"--init {config.init} has classes {payload['class_names']}, this run {self.class_names}; "
                    "set class_names to the stage-1 list"
                )
            which = "ema_state_dict" if config.init_use_ema and payload.get("ema_state_dict") is not None else "state_dict"
            ckpt.load_state_dict_strict(model, payload[which], f"--init {config.init} {which}")
            self._add_supervised_voxels(payload)
        return model

    def _load_training_state(self, payload: dict[str, Any]) -> None:
        state = payload["training"]
        self.model.load_state_dict(payload["state_dict"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self._add_supervised_voxels(payload)
        rng = state["rng"]
        torch.set_rng_state(rng["torch"][self.ctx.rank % len(rng["torch"])])
        self.console.print(f"resumed {self.out / 'last.pt'} at step {self.step}")

    def _add_supervised_voxels(self, payload: dict[str, Any]) -> None:
        """Adds a checkpoint's per-class supervised voxel counts (main rank only: the ranks' counts are summed
        when saving). Checkpoints without counts add nothing."""
        counts = payload.get("supervised_voxels") or {}
        if self.ctx.is_main:
            self.supervised_voxels += torch.tensor([float(counts.get(n, 0)) for n in self.class_names],
                                                   dtype=torch.float64)

    # ------------------------------------------------------------------------------------ checkpoints
    def payload(self) -> dict[str, Any]:
        """The checkpoint payload (docs/method.md §11) with full training state."""
        c = self.config
        supervised = self.supervised_voxels.clone()
        if self.ctx.enabled:
            summed = supervised.to(self.device)
            torch.distributed.all_reduce(summed)
            supervised = summed.cpu()
        rng_states = [torch.get_rng_state()]
        if self.ctx.enabled:
            gathered: list[Any] = [None] * self.ctx.world_size
            torch.distributed.all_gather_object(gathered, rng_states[0])
            rng_states = gathered
        training = {
            "stage": c.stage,
            "step": self.step,
            "world_size": self.ctx.world_size,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {"torch": rng_states},
        }
        return ckpt.make_payload(
            c.model, 1, self.class_names, self.spacing_mm, c.data.patch_size, self.model.state_dict(),
            model_kwargs=c.model_kwargs, ema_state_dict=self.ema.module.state_dict(), training=training,
            config=c.to_dict(), supervised_voxels=dict(zip(self.class_names, supervised.tolist())),
        )

    def save(self, name: str) -> Path:
        """Writes ``OUT/<name>`` atomically on rank 0 (all ranks must call: RNG states are gathered)."""
        payload = self.payload()
        path = self.out / name
        if self.ctx.is_main:
            ckpt.save_checkpoint(path, payload)
        barrier(self.ctx)
        return path

    # ------------------------------------------------------------------------------------------- loop
    def _loader(self) -> DataLoader:
        c = self.config
        sampler = MixedBatchSampler(
            self.n_mask, self.n_report, c.data.batch_size, c.data.report_fraction if c.stage == 2 else 0.0,
            c.optim.steps, seed=c.seed, rank=self.ctx.rank, start_step=self.step, stage=c.stage,
        )
        return DataLoader(
            self.dataset, batch_sampler=sampler, num_workers=c.data.workers, pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    def _train_step(self, batch: dict[str, Any]) -> tuple[dict[str, float], float]:
        self.supervised_voxels += (batch["unknown"] < 0.5).sum(dim=(0, 2, 3, 4)).double()
        image = batch["image"].to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last_3d)
        targets = {k: batch[k].to(self.device, non_blocking=True).float() for k in TARGET_KEYS}
        targets.update({k: batch[k].to(self.device).float() for k in ("tumor_volumes_mm3", "tumor_diameters_mm")})
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()
        )
        with autocast:
            final, aux = self.net(image)
        losses = self.loss_fn(final.float(), aux.float(), targets)
        total = losses["total"]
        values = {k: float(losses[k].detach()) for k in LOSS_TERMS}
        if not all_ranks_true(math.isfinite(values["total"]), self.ctx):
            self._diverged(f"loss is not finite ({_fmt_losses(values)})")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip))
        if self.amp_dtype != torch.float16 and not all_ranks_true(math.isfinite(grad_norm), self.ctx):
            self._diverged(f"gradient norm is {grad_norm} ({_fmt_losses(values)})")
        values["lr"] = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.ema.update_parameters(self.model)
        return values, grad_norm

    def _diverged(self, what: str) -> None:
        last = self.out / "last.pt"
        kept = f"the last good checkpoint {last} is kept" if last.is_file() else "no checkpoint was written yet"
        raise TrainingDiverged(
            f"step {self.step + 1}: {what}; training stopped and {kept}. Lower --lr, keep grad_clip, "
            "use amp none/bf16 instead of fp16, or check the cache for NaN images (`rsuper check`)."
        )

    def run(self, show_progress: bool = True, on_step: StepCallback | None = None) -> Path:
        """Trains from ``self.step`` to ``config.optim.steps``; returns ``OUT/final.pt``."""
        c = self.config
        steps = c.optim.steps
        if self.ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            from rsuper.atomic import write_text_atomic

            write_text_atomic(self.out / "config.yaml", c.to_yaml())
        log = MetricsLog(self.out / "metrics.csv", resume_step=self.step) if self.ctx.is_main else None
        self.model.train()
        window: list[dict[str, float]] = []
        start_time = last_log = time.perf_counter()
        progress = Progress(
            TextColumn(f"stage {c.stage}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
            TimeRemainingColumn(), console=self.console, disable=not (show_progress and self.ctx.is_main),
        )
        try:
            with progress:
                task = progress.add_task("", total=steps, completed=self.step)
                for batch in self._loader():
                    values, grad_norm = self._train_step(batch)
                    self.step += 1
                    window.append({**values, "grad_norm": grad_norm})
                    progress.update(task, advance=1, description=_fmt_losses(values))
                    if on_step is not None:
                        on_step(self.step, values)
                    if self.step % c.log_every == 0 or self.step == steps:
                        now = time.perf_counter()
                        row = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                        row["lr"] = window[-1]["lr"]  # the lr of the last step in the window
                        row["samples_per_s"] = len(window) * c.data.batch_size * self.ctx.world_size / (now - last_log)
                        row["elapsed_s"] = now - start_time
                        if log is not None:
                            log.write(self.step, row)
                        window, last_log = [], now
                    if self.step % c.checkpoint_every == 0 and self.step < steps:
                        self.save("last.pt")
            self.save("last.pt")
            final = self.save("final.pt")
        finally:
            if log is not None:
                log.close()
        self.console.print(f"stage {c.stage} done: {final}")
        return final


def _fmt_losses(values: dict[str, float]) -> str:
    return " ".join(f"{k}={values[k]:.4f}" for k in LOSS_TERMS if k in values)
