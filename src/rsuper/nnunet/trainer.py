"""nnU-Net v2 trainers with report supervision: ``nnUNetTrainerRSuper`` and ``nnUNetTrainerRSuperMasksOnly``.

Both read the sidecar of ``rsuper export-nnunet`` (docs/nnunet.md) and share one split: nnU-Net's 5-fold CV (seeded
as nnU-Net seeds it) over the **mask CTs only**, so validation never scores a report CT against a label map that
has no lesion; report CTs are always training cases of ``nnUNetTrainerRSuper`` and never loaded by the masks-only
trainer. In every batch, after nnU-Net's augmentation and deep-supervision downsampling, the voxels whose label
value the sidecar lists as lesion-unknown for that case (dilated by 2.5 mm, docs/method.md §5) become nnU-Net's
ignore label, so nnU-Net's own Dice + CE never calls a reported tumor "organ".

``nnUNetTrainerRSuper`` adds, for report patches that hold a usable tumor group whole::

    loss = nnU-Net's deep-supervised Dice+CE + λ · 0.5 · (Ball(outputs[0]) + Volume(outputs[1]))

Ball on the final output, Volume on the first deep-supervision output (half resolution, region and spacing
downsampled with it), λ = 0.1 (``RSUPER_NNUNET_LAMBDA``). The lesion "logit" handed to ``rsuper.losses`` is
``z_lesion − logsumexp(other classes)``, whose sigmoid is nnU-Net's softmax probability of that lesion.
Report patches are centred on a usable group (probability 0.9, as ``rsuper train``'s report crops).

Budget overrides shared by both trainers (equal budgets): ``RSUPER_NNUNET_EPOCHS``, ``RSUPER_NNUNET_ITERS``
(training iterations per epoch), ``RSUPER_NNUNET_VAL_ITERS``; ``RSUPER_NNUNET_FINAL_VALIDATION=0`` skips nnU-Net's
final validation. ``RSUPER_NNUNET_DEBUG=FILE`` appends one JSON line
per report sample that reached the report losses (the end-to-end test reads it).

Found by nnU-Net through ``nnUNet_extTrainer`` = ``rsuper.nnunet.EXT_TRAINER_DIR``.
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any

import numpy as np
import torch
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.crossval_split import generate_crossval_split
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast

from rsuper.losses.ball import ball_loss_in_region
from rsuper.losses.region import report_region
from rsuper.losses.segmentation import UNKNOWN_DILATION_MM, known_mask
from rsuper.losses.geometry import dilate_mm
from rsuper.losses.volume import volume_loss_in_region
from rsuper.nnunet.sidecar import (CaseFacts, Sidecar, choose_group, find_sidecar, group_mask, lesion_channels,
                                   lesion_logits, zoom_factor)

REPORT_WEIGHT = 0.1
REPORT_RANDOM_CROP_PROB = 0.1
SPLIT_SEED = 12345  # nnU-Net's own seed for generate_crossval_split
base_module = importlib.import_module("nnunetv2.training.nnUNetTrainer.nnUNetTrainer")  # where get_dataloaders looks


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


class ReportCropDataLoader(nnUNetDataLoader):
    """nnU-Net's loader; a report CT's patch is centred on one of its usable groups (else nnU-Net's own choice).

    ``report_groups`` (class attribute, set by the trainer before the loaders start): case -> label-id tuples.
    """

    report_groups: dict[str, list[tuple[int, ...]]] = {}
    random_crop_prob = REPORT_RANDOM_CROP_PROB

    def get_indices(self):  # noqa: ANN201 (batchgenerators' signature)
        keys = super().get_indices()
        self._pending = list(keys)
        return keys

    def get_bbox(self, data_shape, force_fg, class_locations, overwrite_class=None, verbose=False):  # noqa: ANN001, ANN201
        pending = getattr(self, "_pending", None)
        key = pending.pop(0) if pending else None
        groups = self.report_groups.get(key) if key is not None else None
        if groups and class_locations is not None and np.random.uniform() >= self.random_crop_prob:
            ids = groups[np.random.randint(len(groups))]
            points = [np.asarray(class_locations[i]) for i in ids if i in class_locations and len(class_locations[i])]
            if points:
                coords = np.concatenate(points)[:, 1:]
                lo, hi = coords.min(0), coords.max(0) + 1
                final = np.asarray(self.final_patch_size)
                grow = (np.asarray(self.patch_size) - final) // 2
                starts = []
                for d in range(len(data_shape)):
                    slack = int(final[d] - (hi[d] - lo[d]))
                    start = int(hi[d]) - int(final[d]) + np.random.randint(0, slack + 1) if slack >= 0 \
                        else int((lo[d] + hi[d]) // 2 - final[d] // 2)
                    starts.append(start - int(grow[d]))
                return starts, [s + int(p) for s, p in zip(starts, self.patch_size)]
        return super().get_bbox(data_shape, force_fg, class_locations, overwrite_class, verbose)


class nnUNetTrainerRSuperMasksOnly(nnUNetTrainer):  # noqa: N801 (nnU-Net's naming)
    """nnU-Net on the mask CTs of an rsuper export; the fair baseline of :class:`nnUNetTrainerRSuper`."""

    use_report_cases = False

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        epochs, iters, val_iters = (_env_int(f"RSUPER_NNUNET_{n}") for n in ("EPOCHS", "ITERS", "VAL_ITERS"))
        self.num_epochs = epochs or self.num_epochs
        self.num_iterations_per_epoch = iters or self.num_iterations_per_epoch
        self.num_val_iterations_per_epoch = val_iters or self.num_val_iterations_per_epoch
        self.report_weight = 0.0
        self.rsuper: Sidecar | None = None
        self.rsuper_debug = os.environ.get("RSUPER_NNUNET_DEBUG") or None

    # ---- set-up -------------------------------------------------------------------------------------------
    def initialize(self) -> None:
        super().initialize()
        self.rsuper = Sidecar.load(find_sidecar(self.plans_manager.dataset_name, nnUNet_raw, nnUNet_preprocessed))
        if self.rsuper.ignore_label != self.label_manager.ignore_label:
            raise RuntimeError(f"{self.rsuper.path}: ignore label {self.rsuper.ignore_label} but dataset.json says "
                               f"{self.label_manager.ignore_label}; re-export and re-run nnUNetv2_plan_and_preprocess")
        self.print_to_log_file(f"rsuper: sidecar {self.rsuper.path}: {len(self.rsuper.mask_cases)} mask CTs, "
                               f"{len(self.rsuper.report_cases)} report CTs; report weight {self.report_weight}; "
                               f"{self.num_epochs} epochs x {self.num_iterations_per_epoch} iterations")

    def do_split(self) -> tuple[list[str], list[str]]:
        """5-fold CV over the mask CTs (fewer folds with fewer than 5); report CTs join training (RSuper only)."""
        if self.rsuper is None:
            self.rsuper = Sidecar.load(find_sidecar(self.plans_manager.dataset_name, nnUNet_raw, nnUNet_preprocessed))
        masks = self.rsuper.mask_cases
        reports = self.rsuper.report_cases if self.use_report_cases else []
        if self.fold == "all" or len(masks) < 2:
            tr, val = list(masks), list(masks)
        else:
            splits = generate_crossval_split(masks, seed=SPLIT_SEED, n_splits=min(5, len(masks)))
            split = splits[int(self.fold) % len(splits)]
            tr, val = list(split["train"]), list(split["val"])
        self.print_to_log_file(f"rsuper split (fold {self.fold}): {len(tr)} mask CTs + {len(reports)} report CTs "
                               f"train, {len(val)} mask CTs validate")
        return tr + reports, val

    # ---- targets ------------------------------------------------------------------------------------------
    def _spacings(self, target: list[torch.Tensor] | torch.Tensor) -> list[tuple[float, float, float]]:
        """Spacing (mm, array axes) of each deep-supervision target."""
        base = [float(s) for s in self.configuration_manager.spacing]
        targets = target if isinstance(target, list) else [target]
        full = targets[0].shape[2:]
        return [tuple(b * f / s for b, f, s in zip(base, full, t.shape[2:])) for t in targets]  # type: ignore[misc]

    def _with_ignore(self, target: list[torch.Tensor] | torch.Tensor, keys: list[str]) -> Any:
        """Copies of the targets where each case's lesion-unknown voxels (dilated 2.5 mm) hold the ignore label."""
        assert self.rsuper is not None
        was_list = isinstance(target, list)
        targets = target if was_list else [target]
        out = [t.clone() for t in targets]
        ignore = self.rsuper.ignore_label
        for t, spacing in zip(out, self._spacings(targets)):
            for b, key in enumerate(keys):
                facts = self.rsuper.cases.get(str(key))
                if facts is None or not facts.unknown_ids:
                    continue
                seg = t[b, 0]
                unknown = torch.isin(seg, torch.tensor(facts.unknown_ids, dtype=seg.dtype, device=seg.device))
                if unknown.any():
                    unknown = dilate_mm(unknown, UNKNOWN_DILATION_MM, spacing)
                    seg[unknown] = ignore
        return out if was_list else out[0]

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        """nnU-Net's final validation, skipped with ``RSUPER_NNUNET_FINAL_VALIDATION=0`` (short CPU runs)."""
        if os.environ.get("RSUPER_NNUNET_FINAL_VALIDATION", "1") == "0":
            self.print_to_log_file("rsuper: final validation skipped (RSUPER_NNUNET_FINAL_VALIDATION=0)")
            return
        super().perform_actual_validation(save_probabilities)

    def validation_step(self, batch: dict) -> dict:
        batch = {**batch, "target": self._with_ignore(batch["target"], list(batch["keys"]))}
        return super().validation_step(batch)

    def train_step(self, batch: dict) -> dict:
        data, keys = batch["data"].to(self.device, non_blocking=True), [str(k) for k in batch["keys"]]
        raw_target = batch["target"]
        raw_target = [t.to(self.device) for t in raw_target] if isinstance(raw_target, list) else raw_target.to(self.device)
        target = self._with_ignore(raw_target, keys)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            output = self.network(data)
            loss = self.loss(output, target)
            if self.report_weight > 0:
                report = self.report_terms(output, raw_target, keys)
                if report is not None:
                    loss = loss + self.report_weight * 0.5 * report
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()
        return {"loss": loss.detach().cpu().numpy()}

    def report_terms(self, output: Any, target: Any, keys: list[str]) -> torch.Tensor | None:  # noqa: ARG002
        return None


class nnUNetTrainerRSuper(nnUNetTrainerRSuperMasksOnly):  # noqa: N801
    """nnU-Net + the R-Super report losses on report CTs (Ball on the final output, Volume on deep supervision)."""

    use_report_cases = True

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        value = os.environ.get("RSUPER_NNUNET_LAMBDA")
        self.report_weight = float(value) if value not in (None, "") else REPORT_WEIGHT

    def get_dataloaders(self):  # noqa: ANN201
        assert self.rsuper is not None
        ReportCropDataLoader.report_groups = {
            cid: [g.labels for g in facts.usable_groups] for cid, facts in self.rsuper.cases.items()
            if facts.is_report and facts.usable_groups}
        original = base_module.nnUNetDataLoader
        base_module.nnUNetDataLoader = ReportCropDataLoader
        try:
            return super().get_dataloaders()
        finally:
            base_module.nnUNetDataLoader = original

    def report_terms(self, output: Any, target: Any, keys: list[str]) -> torch.Tensor | None:
        """λ-free ``Ball(final) + Volume(aux)`` averaged over the report samples that hold a usable group whole."""
        assert self.rsuper is not None
        outputs = output if isinstance(output, (list, tuple)) else [output]
        targets = target if isinstance(target, list) else [target]
        final, aux = outputs[0], outputs[1] if len(outputs) > 1 else outputs[0]
        t_final, t_aux = targets[0], targets[1] if len(targets) > 1 else targets[0]
        spacings = self._spacings(targets)
        s_final, s_aux = spacings[0], spacings[1] if len(spacings) > 1 else spacings[0]
        lesion_ids = list(self.rsuper.lesion_labels.values())
        lesion_names = self.rsuper.lesion_names
        terms = []
        for b, key in enumerate(keys):
            facts = self.rsuper.cases.get(key)
            if facts is None or not facts.usable_groups:
                continue
            seg = t_final[b, 0]
            picked = choose_group(seg, facts)
            if picked is None:
                self._debug({"key": key, "reached": False})
                continue
            index, group = picked
            region_vox = int(group_mask(seg, group).sum())
            zoom = zoom_factor(region_vox, group.group_volume_mm3, s_final)
            sp_final = tuple(s / zoom for s in s_final)
            sp_aux = tuple(s / zoom for s in s_aux)
            volumes = torch.tensor([group.volumes_mm3], dtype=torch.float32, device=final.device)
            diameters = torch.tensor([group.diameters_mm], dtype=torch.float32, device=final.device)
            ball, ball_info = self._ball(final[b:b + 1], t_final[b, 0], facts, group, lesion_ids, lesion_names,
                                         sp_final, volumes, diameters)
            volume, vol_info = self._volume(aux[b:b + 1], t_aux[b, 0], facts, group, lesion_ids, lesion_names,
                                            sp_aux, volumes)
            terms.append(ball + volume)
            self._debug({"key": key, "reached": True, "group": index, "lesion_class": group.lesion_class,
                         "group_labels": list(group.labels), "volumes_mm3": list(group.volumes_mm3),
                         "diameters_mm": list(group.diameters_mm), "group_volume_mm3": group.group_volume_mm3,
                         "zoom": zoom, "spacing_final_mm": list(sp_final), "spacing_aux_mm": list(sp_aux),
                         "region_voxels": region_vox,
                         "region_volume_mm3": region_vox * float(np.prod(sp_final)),
                         "ball": float(ball.detach()), "volume": float(volume.detach()), **ball_info, **vol_info})
        return torch.stack(terms).mean() if terms else None

    def _channels(self, seg: torch.Tensor, facts: CaseFacts, group: Any, lesion_ids: list[int],
                  lesion_names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        unknown = lesion_channels(seg, [facts.unknown_labels.get(n, ()) for n in lesion_names])[None]
        region = torch.zeros_like(unknown)
        region[0, lesion_ids.index(group.lesion_label)] = group_mask(seg, group).float()
        return unknown, region

    def _ball(self, logits: torch.Tensor, seg: torch.Tensor, facts: CaseFacts, group: Any, lesion_ids: list[int],
              lesion_names: list[str], spacing: tuple[float, ...], volumes: torch.Tensor,
              diameters: torch.Tensor) -> tuple[torch.Tensor, dict]:
        unknown, region = self._channels(seg, facts, group, lesion_ids, lesion_names)
        dilated = report_region(region, spacing, unknown=unknown)
        known = known_mask(unknown, spacing)
        z = lesion_logits(logits, lesion_ids)
        loss = ball_loss_in_region(z, dilated, known, diameters, volumes, spacing)
        return loss, {"ball_region_voxels": int(region.sum()), "ball_unknown_voxels": int(unknown.sum())}

    def _volume(self, logits: torch.Tensor, seg: torch.Tensor, facts: CaseFacts, group: Any, lesion_ids: list[int],
                lesion_names: list[str], spacing: tuple[float, ...], volumes: torch.Tensor) -> tuple[torch.Tensor, dict]:
        unknown, region = self._channels(seg, facts, group, lesion_ids, lesion_names)
        if not region.any():
            return logits.float().sum() * 0.0, {"aux_region_voxels": 0}
        dilated = report_region(region, spacing, unknown=unknown)
        z = lesion_logits(logits, lesion_ids)
        loss = volume_loss_in_region(z, dilated, volumes, spacing)
        return loss, {"aux_region_voxels": int(region.sum()),
                      "aux_region_volume_mm3": int(region.sum()) * float(np.prod(spacing))}

    def _debug(self, record: dict) -> None:
        if self.rsuper_debug:
            with open(self.rsuper_debug, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"epoch": self.current_epoch, **record}) + "\n")
