#!/usr/bin/env python3
"""Hardening probe: replays known attacks and bad inputs against the *installed* ``rsuper`` CLI.

Every probe runs ``<python> -m rsuper ...`` in a subprocess, exactly as a user would, and prints one line::

    PASS|FAIL  <item>  <what was observed>

PASS means the hole is closed (the command refused or behaved correctly); FAIL means it is still there.
The exit code is 0 when every probe passes, 1 otherwise (2 for a bad invocation of this script).

How to run (against a source checkout; the interpreter needs rsuper's dependencies, e.g. the project venv)::

    cd /work/wt/h5 && PYTHONPATH=/work/wt/h5/src OMP_NUM_THREADS=1 \\
        /work/main/.venv/bin/python benchmarks/probe_hardening.py --workdir /tmp/probe_h5

Options: ``--python PY`` (interpreter that runs ``-m rsuper`` and the fixture helpers; default: this one),
``--workdir DIR`` (everything is written there; default: a new temp folder; an existing non-empty folder
is only reused when it was made by this probe, and is then emptied first), ``--only 1,3,12`` (a subset
of the items), ``--timeout S`` (per command, default 300), ``-v`` (print each command and its output tail).
PYTHONPATH and the rest of the environment are passed through; OMP_NUM_THREADS defaults to 1 and COLUMNS
to 400 (so rich does not wrap messages). Every command runs with umask 022. Runtime: about 5 minutes on
2 shared CPU cores (39 CLI runs; 286 s measured against main at commit 7612afa, 14 min under heavy load);
most of it is the CLI's own start-up (~8 s CPU per run today, item 12), so it shrinks as that is fixed.

The probe only needs the standard library itself. Fixtures that need numpy/nibabel/torch (NIfTI files,
crafted checkpoints) are made by small helper scripts run with ``--python``; they never import rsuper.
Real checkpoints come from ``rsuper train`` (2 steps of ``dynunet_small`` on ``rsuper phantoms`` output
at 6 mm); the malicious ones are copies of those with a few plain-data entries changed.

Checks made for every command, on top of each item's own test: no Python traceback in the output
("Traceback (most recent call last)" = FAIL) and every input file byte-identical afterwards (sha256 of
each input file before/after; new or deleted files in an input folder count too).

Items (one or more probes each):

 1. Checkpoint model spec naming an importable callable: ``subprocess:run`` whose call would
    ``touch`` a marker file (predict), and ``builtins:print`` whose call would print a sentinel
    (``1<sep>11``; predict, train --init, train --resume). PASS: non-zero exit, no marker, no sentinel,
    and the error names the offending model.
 2. Class names from files used as paths: checkpoint class ``../../../x/liver`` (predict), nnU-Net
    ``dataset.json`` labels ``../x`` and ``../../../x`` (prepare), a mask file stem with odd characters
    (``prepare`` and ``organs --all-classes``, which write every class they find). PASS: non-zero exit, error names the bad name, nothing written outside OUT.
 3. ``predict DATASET DATASET``, ``organs DATA --out DATA``, and OUT inside the input folder (predict and
    organs). PASS: non-zero exit, input folder unchanged (no modified, new or deleted file).
 4. ``extract`` (rules): a rerun after a report's text changed gives new findings; a torn last JSONL
    line in the output folder's .jsonl files does not make a case vanish on the next run.
 5. ``extract --backend llm`` against a closed port: non-zero exit, says how many reports failed, names
    the base URL (run with ``--max-retries 0 --timeout 10`` and a dummy API key, to stay fast).
 6. Windows-1252 reports CSV with ``3.1 × 2.4 cm``: tumors.csv says ``31 x 24``; ``check --reports`` reads
    it (no traceback, no decode error).
 7. ``evaluate`` with a prediction 3x coarser than the truth (thin structure): a warning about the grids
    and the DSC computed in the truth's grid (expected 0.5, not 1.0).
 8. Non-HU CT (values 0..4095): ``prepare`` and ``predict`` refuse it (``check`` calls it blocking; shown
    as the control in the observation).
 9. Output files get the umask's modes (umask 022: files 0644, folders 0755) for phantoms, prepare,
    train, predict, extract and evaluate outputs.
10. ``convert-checkpoint``: the ``--help`` example and the defaults do not fail on their own option values
    (the class lists exist); a file of random bytes is answered "not a PyTorch checkpoint" without advice
    to pass ``--trust-checkpoint``.
11. Configuration / usage errors (bad YAML type + unknown field, stage 2 without init, a bad ``--amp``,
    bad ``--spacing``, evaluate without truth): exit code 2, readable lines naming the problem, no raw
    pydantic dump (``input_value=``, ``PosixPath(``, ``For further information visit``).
12. ``rsuper --help``, ``rsuper --version``, ``rsuper predict --help`` answer in under 1.0 s wall time
    (a second try is made when the first is between 1 and 3 s; the best time counts).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import random
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

TRACEBACK = "Traceback (most recent call last)"
PROBE_MARK = ".rsuper_hardening_probe"
SENTINEL_SEP = "<<rsuper-probe-sep>>"
PYDANTIC_DUMP = ("input_value=", "PosixPath(", "For further information visit")

# ---------------------------------------------------------------------------------------------------------
# Fixture helpers, run with --python (numpy, nibabel, torch); they never import rsuper.
# ---------------------------------------------------------------------------------------------------------
HELPER = r'''
import json, sys
import numpy as np

def _nib():
    import nibabel as nib
    return nib

def save(arr, affine, path):
    nib = _nib()
    img = nib.Nifti1Image(np.asarray(arr), np.asarray(affine, dtype=float))
    img.set_qform(np.asarray(affine, dtype=float), code=1)
    img.set_sform(np.asarray(affine, dtype=float), code=1)
    nib.save(img, path)

def craft_checkpoint(src, dst, model=None, config=None, rename_class=None):
    import torch
    payload = torch.load(src, map_location="cpu", weights_only=True)
    if model is not None:
        payload["model"].update(model)
    if config is not None:
        payload["config"] = dict(payload.get("config") or {}, **config)
    if rename_class is not None:
        old, new = rename_class
        payload["class_names"] = [new if c == old else c for c in payload["class_names"]]
        sv = payload.get("supervised_voxels")
        if isinstance(sv, dict):
            payload["supervised_voxels"] = {(new if k == old else k): v for k, v in sv.items()}
        cfg = payload.get("config")
        if isinstance(cfg, dict) and cfg.get("class_names"):
            cfg["class_names"] = [new if c == old else c for c in cfg["class_names"]]
    torch.save(payload, dst)
    return {"class_names": payload["class_names"], "model": {k: v for k, v in payload["model"].items()}}

def fake_rsuper_checkpoint(dst):
    import torch
    torch.save({"model_state_dict": {"probe.weight": torch.zeros(2)}}, dst)
    return {}

def ct_volume(shape=(24, 24, 24)):
    x, y, z = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    c = [(s - 1) / 2 for s in shape]
    r2 = ((x - c[0]) / (shape[0] / 2.5)) ** 2 + ((y - c[1]) / (shape[1] / 2.5)) ** 2 + ((z - c[2]) / (shape[2] / 2.5)) ** 2
    body = r2 <= 1.0
    ct = np.full(shape, -1000, np.int16)
    ct[body] = 40
    organ = (((x - c[0] + 3) / 5.0) ** 2 + ((y - c[1]) / 5.0) ** 2 + ((z - c[2]) / 5.0) ** 2) <= 1.0
    ct[organ] = 60
    blob = ((x - c[0] - 4) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) <= 4
    return ct, body, organ, blob

def nnunet_dataset(root, labels):
    import os
    os.makedirs(f"{root}/imagesTr", exist_ok=True)
    os.makedirs(f"{root}/labelsTr", exist_ok=True)
    ct, body, organ, blob = ct_volume()
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    save(ct, aff, f"{root}/imagesTr/probe_000_0000.nii.gz")
    lab = np.zeros(ct.shape, np.uint8)
    lab[organ] = 1
    lab[blob] = 2
    lab[:3, :3, :3] = 3
    save(lab, aff, f"{root}/labelsTr/probe_000.nii.gz")
    meta = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 1, "file_ending": ".nii.gz"}
    with open(f"{root}/dataset.json", "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=2)
    return {}

def atlas_case(case_dir, mask_stems):
    import os
    os.makedirs(f"{case_dir}/segmentations", exist_ok=True)
    ct, body, organ, blob = ct_volume()
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    save(ct, aff, f"{case_dir}/ct.nii.gz")
    for stem in mask_stems:
        save(organ.astype(np.uint8), aff, f"{case_dir}/segmentations/{stem}.nii.gz")
    return {}

def non_hu_copy(src_ct, dst_ct):
    nib = _nib()
    img = nib.load(src_ct)
    hu = np.asarray(img.dataobj).astype(np.float32)
    raw = np.clip(hu + 1024.0, 0, 4095).astype(np.int16)
    save(raw, img.affine, dst_ct)
    return {"min": float(raw.min()), "max": float(raw.max())}

def coarse_eval(truth_dir, pred_dir, case, cls):
    import os
    os.makedirs(f"{truth_dir}/{case}/segmentations", exist_ok=True)
    os.makedirs(f"{pred_dir}/{case}/segmentations", exist_ok=True)
    truth = np.zeros((24, 24, 24), np.uint8)
    truth[10, 6:18, 6:18] = 1                       # a one-voxel-thick plate (1 mm grid)
    save(truth, np.eye(4), f"{truth_dir}/{case}/segmentations/{cls}.nii.gz")
    pred = np.zeros((8, 8, 8), np.uint8)
    pred[3, 2:6, 2:6] = 1                           # the 3 mm voxels covering it (3 fine voxels thick)
    aff = np.diag([3.0, 3.0, 3.0, 1.0])
    aff[:3, 3] = 1.0                                # same physical extent: -0.5 .. 23.5 mm on each axis
    save(pred, aff, f"{pred_dir}/{case}/segmentations/{cls}.nii.gz")
    return {"truth_voxels": int(truth.sum()), "expected_dsc": 0.5}

if __name__ == "__main__":
    fn, kwargs = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(globals()[fn](**kwargs)))
'''


# ---------------------------------------------------------------------------------------------------------
# Running things
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Run:
    args: list[str]
    rc: int
    out: str
    secs: float
    timed_out: bool = False

    @property
    def traceback(self) -> bool:
        return TRACEBACK in self.out

    def tail(self, n: int = 160) -> str:
        text = " ".join(self.out.split())
        return text if len(text) <= n else "..." + text[-n:]


@dataclass
class Result:
    item: str
    ok: bool
    obs: str


@dataclass
class Probe:
    python: str
    work: Path
    timeout: float
    verbose: bool
    env: dict[str, str] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)
    fixtures: dict[str, object] = field(default_factory=dict)

    # --- CLI --------------------------------------------------------------------------------------------
    def rsuper(self, *args: object, cwd: Path | None = None, env: dict[str, str] | None = None,
               timeout: float | None = None) -> Run:
        argv = [str(a) for a in args]
        cmd = [self.python, "-m", "rsuper", *argv]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, cwd=str(cwd or self.work), env={**self.env, **(env or {})}, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout or self.timeout, umask=0o022,
            )
            run = Run(argv, proc.returncode, proc.stdout.decode("utf-8", "replace"), time.perf_counter() - t0)
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode("utf-8", "replace") if isinstance(exc.stdout, bytes) else str(exc.stdout or "")
            run = Run(argv, -9, out, time.perf_counter() - t0, timed_out=True)
        if self.verbose:
            print(f"    $ rsuper {shlex.join(argv)}  -> rc={run.rc} ({run.secs:.1f} s)\n      {run.tail(400)}",
                  file=sys.stderr, flush=True)
        return run

    def helper(self, fn: str, **kwargs: object) -> dict:
        proc = subprocess.run(
            [self.python, "-c", HELPER, fn, json.dumps(kwargs)], cwd=str(self.work), env=self.env,
            stdin=subprocess.DEVNULL, capture_output=True, timeout=self.timeout, umask=0o022,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"helper {fn} failed: {proc.stderr.decode('utf-8', 'replace')[-600:]}")
        return json.loads(proc.stdout.decode().strip().splitlines()[-1])

    # --- reporting --------------------------------------------------------------------------------------
    def record(self, item: str, ok: bool, obs: str) -> None:
        res = Result(item, ok, obs)
        self.results.append(res)
        print(f"{'PASS' if ok else 'FAIL'}  {item}  {obs}", flush=True)

    def sandbox(self, name: str) -> Path:
        path = self.work / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def sha_tree(*paths: Path) -> dict[str, str]:
    """sha256 of every file under ``paths`` (files or folders), keyed by absolute path."""
    out: dict[str, str] = {}
    for base in paths:
        base = Path(base)
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file() or p.is_symlink())
        for f in files:
            try:
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
            except OSError as exc:
                out[str(f)] = f"unreadable: {exc}"
    return out


def tree_diff(before: dict[str, str], after: dict[str, str]) -> list[str]:
    changed = [f"modified {p}" for p in before if p in after and before[p] != after[p]]
    gone = [f"deleted {p}" for p in before if p not in after]
    new = [f"new {p}" for p in after if p not in before]
    return changed + gone + new


def files_outside(root: Path, allowed: list[Path]) -> list[str]:
    """Files under ``root`` that are not inside any of ``allowed``."""
    allowed_res = [a.resolve() for a in allowed]
    found = []
    for p in root.rglob("*"):
        if p.is_dir():
            continue
        rp = p.resolve()
        if not any(rp == a or a in rp.parents for a in allowed_res):
            found.append(str(p))
    return sorted(found)


def short(items: list[str], n: int = 3) -> str:
    shown = "; ".join(items[:n])
    return shown + (f"; ... ({len(items)} in all)" if len(items) > n else "")


def common_checks(run: Run, diffs: list[str] | None = None) -> list[str]:
    """Problems every probe checks: a traceback, a timeout, modified inputs."""
    probs = []
    if run.timed_out:
        probs.append("timed out")
    if run.traceback:
        probs.append("Python traceback shown")
    if diffs:
        probs.append(f"inputs changed: {short(diffs)}")
    return probs


def verdict(p: Probe, item: str, run: Run, wanted: list[tuple[bool, str]], diffs: list[str] | None = None,
            extra: str = "") -> None:
    """Records PASS when every (condition, failure text) holds and the common checks are clean."""
    probs = [msg for cond, msg in wanted if not cond] + common_checks(run, diffs)
    obs = f"rc={run.rc}; " + ("; ".join(probs) if probs else "ok") + (f"; {extra}" if extra else "")
    obs += f" | output: {run.tail()}"
    p.record(item, not probs, obs)


# ---------------------------------------------------------------------------------------------------------
# Shared fixtures (real data and checkpoints made by the CLI itself)
# ---------------------------------------------------------------------------------------------------------
class SetupFailed(RuntimeError):
    pass


def fixture(p: Probe, name: str) -> Path:
    """Builds (once) and returns a shared fixture: phantoms, cache, cache_rep, run, pred."""
    if name in p.fixtures:
        val = p.fixtures[name]
        if isinstance(val, SetupFailed):
            raise val
        return val  # type: ignore[return-value]
    fx = p.work / "fx"
    fx.mkdir(exist_ok=True)
    try:
        if name == "phantoms":
            out = fx / "ph"
            run = p.rsuper("phantoms", out, "--n-mask", 2, "--n-report", 1, "--n-test", 1, "--spacing", 6,
                           "--seed", 0)
            ok = run.rc == 0 and (out / "test").is_dir() and (out / "masks").is_dir()
        elif name == "cache":
            ph = fixture(p, "phantoms")
            out = fx / "cache"
            run = p.rsuper("prepare", ph / "masks", "--out", out, "--spacing", 6)
            ok = run.rc == 0 and out.is_dir()
        elif name == "cache_rep":
            ph = fixture(p, "phantoms")
            out = fx / "cache_rep"
            run = p.rsuper("prepare", ph / "reports", "--out", out, "--spacing", 6)
            ok = run.rc == 0 and out.is_dir()
        elif name == "run":
            cache = fixture(p, "cache")
            out = fx / "run"
            run = p.rsuper("train", "--cache", cache, "--out", out, "--stage", 1, "--steps", 2, "--model",
                           "dynunet_small", "--patch-size", 32, "--batch-size", 1, "--workers", 0, "--device", "cpu",
                           "--seed", 0, "--no-progress")
            ok = run.rc == 0 and (out / "final.pt").is_file() and (out / "last.pt").is_file()
        elif name == "pred":
            ph, run_dir = fixture(p, "phantoms"), fixture(p, "run")
            out = fx / "pred"
            run = p.rsuper("predict", "--checkpoint", run_dir / "final.pt", ph / "test", out, "--device", "cpu",
                           "--tta", "none")
            ok = run.rc == 0 and out.is_dir()
        else:
            raise KeyError(name)
    except SetupFailed as exc:
        p.fixtures[name] = exc
        raise
    if not ok:
        err = SetupFailed(f"setup '{name}' failed (rc={run.rc}): {run.tail(300)}")
        p.fixtures[name] = err
        raise err
    p.fixtures[name] = out
    return out


def first_case(folder: Path) -> Path:
    cases = sorted(d for d in folder.iterdir() if (d / "ct.nii.gz").is_file())
    if not cases:
        raise SetupFailed(f"no case in {folder}")
    return cases[0]


# ---------------------------------------------------------------------------------------------------------
# Items
# ---------------------------------------------------------------------------------------------------------
def item1(p: Probe) -> None:
    run_dir, ph = fixture(p, "run"), fixture(p, "phantoms")
    box = p.sandbox("p1")
    final, last = run_dir / "final.pt", run_dir / "last.pt"
    n_classes = len(p.helper("craft_checkpoint", src=str(final), dst=str(box / "probe_copy.pt"))["class_names"])
    (box / "probe_copy.pt").unlink()
    sentinel = f"1{SENTINEL_SEP}{n_classes}"
    print_spec = {"name": "builtins:print", "in_channels": 1, "kwargs": {"sep": SENTINEL_SEP, "flush": True}}

    # 1a: predict, subprocess:run with a shell command that touches a marker.
    marker = box / "MARKER_predict_subprocess"
    ck = box / "evil_subprocess.pt"
    p.helper("craft_checkpoint", src=str(final), dst=str(ck),
             model={"name": "subprocess:run", "in_channels": f"touch {marker}", "kwargs": {"shell": True}})
    before = sha_tree(ck, ph / "test")
    run = p.rsuper("predict", "--checkpoint", ck, ph / "test", box / "out_subprocess", "--device", "cpu",
                   "--tta", "none")
    verdict(p, "1.predict-ckpt-model=subprocess:run", run, [
        (run.rc != 0, "exit 0"),
        (not marker.exists(), "MARKER CREATED (the callable ran)"),
        ("subprocess:run" in run.out, "error does not name 'subprocess:run'"),
    ], tree_diff(before, sha_tree(ck, ph / "test")))

    # 1b: predict, builtins:print with a sentinel separator.
    ck = box / "evil_print.pt"
    p.helper("craft_checkpoint", src=str(final), dst=str(ck), model=print_spec)
    before = sha_tree(ck, ph / "test")
    run = p.rsuper("predict", "--checkpoint", ck, ph / "test", box / "out_print", "--device", "cpu", "--tta", "none")
    verdict(p, "1.predict-ckpt-model=builtins:print", run, [
        (run.rc != 0, "exit 0"),
        (sentinel not in run.out, f"SENTINEL PRINTED ({sentinel!r}: the callable ran)"),
        ("builtins:print" in run.out, "error does not name 'builtins:print'"),
    ], tree_diff(before, sha_tree(ck, ph / "test")))

    # 1c: train --init from a checkpoint whose model is builtins:print (weights of a real dynunet_small).
    cache, cache_rep = fixture(p, "cache"), fixture(p, "cache_rep")
    tumors = ph / "gold" / "tumors.csv"
    ck = box / "evil_init.pt"
    p.helper("craft_checkpoint", src=str(final), dst=str(ck), model=print_spec,
             config={"model": "builtins:print", "model_kwargs": {"sep": SENTINEL_SEP, "flush": True}})
    before = sha_tree(ck, cache, cache_rep, tumors)
    run = p.rsuper("train", "--cache", cache, "--cache", cache_rep, "--tumors", tumors, "--stage", 2, "--init", ck,
                   "--out", box / "run_init", "--steps", 1, "--model", "dynunet_small", "--patch-size", 32,
                   "--batch-size", 1, "--workers", 0, "--device", "cpu", "--no-progress")
    verdict(p, "1.train-init-ckpt-model=builtins:print", run, [
        (run.rc != 0, "exit 0 (trained from it)"),
        (sentinel not in run.out, f"SENTINEL PRINTED ({sentinel!r}: the callable ran)"),
        ("builtins:print" in run.out, "error does not name 'builtins:print'"),
    ], tree_diff(before, sha_tree(ck, cache, cache_rep, tumors)))

    # 1d: train --resume from OUT/last.pt whose stored config names builtins:print.
    rdir = box / "run_resume"
    rdir.mkdir(exist_ok=True)
    ck = rdir / "last.pt"
    p.helper("craft_checkpoint", src=str(last), dst=str(ck), model=print_spec,
             config={"model": "builtins:print", "model_kwargs": {"sep": SENTINEL_SEP, "flush": True},
                     "out": str(rdir)})
    before = sha_tree(ck, cache)
    run = p.rsuper("train", "--out", rdir, "--resume", "--device", "cpu", "--workers", 0, "--no-progress")
    verdict(p, "1.train-resume-ckpt-model=builtins:print", run, [
        (run.rc != 0, "exit 0 (resumed it)"),
        (sentinel not in run.out, f"SENTINEL PRINTED ({sentinel!r}: the callable ran)"),
        ("builtins:print" in run.out, "error does not name 'builtins:print'"),
    ], tree_diff(before, sha_tree(ck, cache)))


def item2(p: Probe) -> None:
    # 2a: predict with a checkpoint class that climbs out of OUT.
    run_dir, ph = fixture(p, "run"), fixture(p, "phantoms")
    box = p.sandbox("p2a")
    inp = box / "in"
    inp.mkdir(exist_ok=True)
    ck = inp / "evil_class.pt"
    bad = "../../../x/liver"
    p.helper("craft_checkpoint", src=str(run_dir / "final.pt"), dst=str(ck), rename_class=["liver", bad])
    out = box / "out"
    before = sha_tree(ck, ph / "test")
    run = p.rsuper("predict", "--checkpoint", ck, ph / "test", out, "--device", "cpu", "--tta", "none")
    outside = files_outside(box, [out, inp])
    verdict(p, "2.predict-ckpt-class=../../../x/liver", run, [
        (run.rc != 0, "exit 0"),
        (not outside, f"WROTE OUTSIDE OUT: {short(outside)}"),
        (bad in run.out, f"error does not name {bad!r}"),
    ], tree_diff(before, sha_tree(ck, ph / "test")))

    # 2b: prepare an nnU-Net raw dataset whose dataset.json has labels '../x' and '../../../x'.
    box = p.sandbox("p2b")
    ds = box / "in" / "ds"
    p.helper("nnunet_dataset", root=str(ds), labels={"background": 0, "liver": 1, "../x": 2, "../../../x": 3})
    cache = box / "cache"
    before = sha_tree(ds)
    run = p.rsuper("prepare", ds, "--out", cache, "--spacing", 4)
    outside = files_outside(box, [cache, box / "in"])
    stray = sorted(str(f) for f in cache.rglob("x.npy")) if cache.exists() else []
    verdict(p, "2.prepare-nnunet-label=../x", run, [
        (run.rc != 0, "exit 0"),
        (not outside, f"WROTE OUTSIDE THE CACHE: {short(outside)}"),
        (not stray, f"label file outside masks/: {short(stray)}"),
        ("../x" in run.out or "../../../x" in run.out, "error does not name the label '../x'"),
    ], tree_diff(before, sha_tree(ds)))

    # 2c/2d: a mask file stem full of odd characters (backslash "traversal", ';', '$(...)'), given to
    # prepare (caches every class) and organs --all-classes (writes every class found).
    stem = "odd;name$(id)\\..\\..\\x"
    for label, command in (("prepare", "prepare"), ("organs-all-classes", "organs")):
        box = p.sandbox(f"p2-{command}")
        ds = box / "in" / "ds"
        p.helper("atlas_case", case_dir=str(ds / "probe_case"), mask_stems=["liver", stem])
        out = box / "out"
        before = sha_tree(ds)
        if command == "prepare":
            run = p.rsuper("prepare", ds, "--out", out, "--spacing", 4)
        else:
            run = p.rsuper("organs", ds, "--out", out, "--all-classes")
        outside = files_outside(box, [out, box / "in"])
        odd_written = sorted(str(f.relative_to(box)) for f in out.rglob("*odd;name*")) if out.exists() else []
        verdict(p, f"2.{label}-mask-stem-odd-chars", run, [
            (run.rc != 0, "exit 0" + (f" (written as {short(odd_written, 1)})" if odd_written else "")),
            (not outside, f"WROTE OUTSIDE OUT: {short(outside)}"),
            ("odd;name" in run.out, "error does not name the file"),
        ], tree_diff(before, sha_tree(ds)))


def item3(p: Probe) -> None:
    run_dir, ph = fixture(p, "run"), fixture(p, "phantoms")
    ck = run_dir / "final.pt"

    def dataset(name: str) -> tuple[Path, Path]:
        box = p.sandbox(name)
        ds = box / "ds"
        if ds.exists():
            shutil.rmtree(ds)
        shutil.copytree(ph / "test", ds)
        return box, ds

    box, ds = dataset("p3a")
    before = sha_tree(ds, ck)
    run = p.rsuper("predict", "--checkpoint", ck, ds, ds, "--device", "cpu", "--tta", "none")
    verdict(p, "3.predict-DATASET-into-DATASET", run, [(run.rc != 0, "exit 0")], tree_diff(before, sha_tree(ds, ck)))

    box, ds = dataset("p3b")
    before = sha_tree(ds)
    run = p.rsuper("organs", ds, "--out", ds)
    verdict(p, "3.organs-DATA--out-DATA", run, [(run.rc != 0, "exit 0")], tree_diff(before, sha_tree(ds)))

    box, ds = dataset("p3c")
    before = sha_tree(ds, ck)
    run = p.rsuper("predict", "--checkpoint", ck, ds, ds / "preds", "--device", "cpu", "--tta", "none")
    verdict(p, "3.predict-OUT-inside-INPUT", run, [(run.rc != 0, "exit 0")], tree_diff(before, sha_tree(ds, ck)))

    box, ds = dataset("p3d")
    before = sha_tree(ds)
    run = p.rsuper("organs", ds, "--out", ds / "organs_out")
    verdict(p, "3.organs-OUT-inside-DATA", run, [(run.rc != 0, "exit 0")], tree_diff(before, sha_tree(ds)))


REPORTS = {
    "A1": "PANCREAS: 3.1 x 2.4 cm hypodense mass in the pancreatic head.",
    "A2": "LIVER: 2.0 cm lesion in segment 7. KIDNEYS: unremarkable.",
    "A3": "No focal lesions in the liver, pancreas or kidneys.",
}
A1_CHANGED = "PANCREAS: 4.5 x 4.0 cm hypodense mass in the pancreatic tail."


def write_reports(path: Path, reports: dict[str, str], encoding: str = "utf-8", newline: str = "\n") -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=newline)
    writer.writerow(["BDMAP ID", "Report"])
    for cid, text in reports.items():
        writer.writerow([cid, text])
    path.write_bytes(buf.getvalue().encode(encoding))


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def jsonl_case_ids(folder: Path) -> tuple[set[str], int]:
    """Case ids found in parseable records of folder/findings.jsonl, and the count of unparseable lines."""
    ids, bad = set(), 0
    path = folder / "findings.jsonl"
    if not path.is_file():
        return ids, 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(rec, dict):
            cid = rec.get("case_id") or rec.get("id") or rec.get("BDMAP ID")
            if cid:
                ids.add(str(cid))
    return ids, bad


def item4(p: Probe) -> None:
    box = p.sandbox("p4")
    inp = box / "in"
    inp.mkdir(exist_ok=True)
    r_edit, r_torn = inp / "reports_edit.csv", inp / "reports_torn.csv"
    write_reports(r_edit, REPORTS)
    write_reports(r_torn, REPORTS)
    ex_a = box / "ex_a"
    run1 = p.rsuper("extract", r_edit, "--out", ex_a)
    p.fixtures["extract_out"] = ex_a
    if run1.rc != 0 or not (ex_a / "tumors.csv").is_file():
        for item in ("4.extract-rerun-after-text-change", "4.extract-torn-jsonl-line"):
            p.record(item, False, f"first extract run failed: rc={run1.rc} | output: {run1.tail()}")
        return
    ex_t = box / "ex_t"
    shutil.copytree(ex_a, ex_t)

    # 4a: the report text of A1 changes; the rerun must extract it again.
    write_reports(r_edit, {**REPORTS, "A1": A1_CHANGED})
    before = sha_tree(r_edit)
    run = p.rsuper("extract", r_edit, "--out", ex_a)
    a1 = [r for r in read_csv_rows(ex_a / "tumors.csv") if r.get("BDMAP ID") == "A1"]
    sizes = [r.get("Tumor Size (mm)", "") for r in a1]
    verdict(p, "4.extract-rerun-after-text-change", run, [
        (run.rc == 0, "non-zero exit"),
        (any("45" in s and "40" in s for s in sizes), f"A1 size not updated to 45 x 40 (tumors.csv: {sizes})"),
        (not any("31" in s for s in sizes), "stale A1 finding (31 x 24) kept"),
    ], tree_diff(before, sha_tree(r_edit)))

    # 4b: the last line of every .jsonl in the output folder is torn mid-way; nothing may vanish.
    torn = []
    for f in sorted(ex_t.rglob("*.jsonl")):
        data = f.read_bytes()
        lines = data.rstrip(b"\n").split(b"\n")
        if not lines or not lines[-1]:
            continue
        keep = b"\n".join(lines[:-1]) + (b"\n" if len(lines) > 1 else b"")
        f.write_bytes(keep + lines[-1][: max(1, len(lines[-1]) // 2)])
        torn.append(f.name)
    before = sha_tree(r_torn)
    run = p.rsuper("extract", r_torn, "--out", ex_t)
    want = set(REPORTS)
    in_cases = {r.get("BDMAP ID") for r in read_csv_rows(ex_t / "cases.csv")}
    in_tumors = {r.get("BDMAP ID") for r in read_csv_rows(ex_t / "tumors.csv")}
    in_jsonl, bad_lines = jsonl_case_ids(ex_t)
    verdict(p, "4.extract-torn-jsonl-line", run, [
        (bool(torn), "no .jsonl file found to tear"),
        (run.rc == 0, "non-zero exit"),
        (want <= in_cases, f"cases.csv lost {sorted(want - in_cases)}"),
        (want <= in_tumors, f"tumors.csv lost {sorted(want - in_tumors)}"),
        (want <= in_jsonl, f"findings.jsonl lost {sorted(want - in_jsonl)} ({bad_lines} unparseable line(s))"),
    ], tree_diff(before, sha_tree(r_torn)), extra=f"torn: {', '.join(torn)}")


def item5(p: Probe) -> None:
    box = p.sandbox("p5")
    rep = box / "reports.csv"
    write_reports(rep, REPORTS)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    before = sha_tree(rep)
    run = p.rsuper("extract", rep, "--out", box / "ex", "--backend", "llm", "--base-url", url, "--model", "x",
                   "--max-retries", 0, "--timeout", 10, env={"OPENAI_API_KEY": "probe-dummy-key"})
    n = len(REPORTS)
    count_re = re.compile(rf"(\b{n}\b[^\n]{{0,60}}fail)|(fail[^\n]{{0,60}}\b{n}\b)", re.IGNORECASE)
    verdict(p, "5.extract-llm-closed-port", run, [
        (run.rc != 0, "exit 0"),
        (bool(count_re.search(run.out)), f"does not say that {n} reports failed"),
        (url in run.out or f"127.0.0.1:{port}" in run.out, f"does not name the base URL {url}"),
    ], tree_diff(before, sha_tree(rep)))


def item6(p: Probe) -> None:
    box = p.sandbox("p6")
    ph = fixture(p, "phantoms")
    case = first_case(ph / "reports").name
    rep = box / "reports_cp1252.csv"
    write_reports(rep, {case: "PANCREAS: 3.1 \u00d7 2.4 cm hypodense mass in the pancreatic head."},
                  encoding="cp1252", newline="\r\n")
    before = sha_tree(rep)
    run = p.rsuper("extract", rep, "--out", box / "ex")
    rows = [r for r in read_csv_rows(box / "ex" / "tumors.csv") if r.get("BDMAP ID") == case]
    sizes = [r.get("Tumor Size (mm)", "") for r in rows]
    verdict(p, "6.extract-cp1252-times-sign", run, [
        (run.rc == 0, "non-zero exit"),
        (any(re.fullmatch(r"\s*31(\.0)?\s*x\s*24(\.0)?\s*", s) for s in sizes), f"size is not 31 x 24 (tumors.csv: {sizes})"),
    ], tree_diff(before, sha_tree(rep)))

    before = sha_tree(rep, ph / "reports")
    run = p.rsuper("check", ph / "reports", "--reports", rep)
    decode = re.search(r"codec can't decode|UnicodeDecodeError|cannot read reports", run.out)
    verdict(p, "6.check-reports-cp1252", run, [
        (not decode, f"could not read the CSV ({decode.group(0) if decode else ''})"),
    ], tree_diff(before, sha_tree(rep, ph / "reports")))


def item7(p: Probe) -> None:
    box = p.sandbox("p7")
    truth, pred = box / "in" / "truth", box / "in" / "pred"
    p.helper("coarse_eval", truth_dir=str(truth), pred_dir=str(pred), case="probe_case", cls="liver_lesion")
    out = box / "out"
    before = sha_tree(truth, pred)
    run = p.rsuper("evaluate", "--pred", pred, "--masks", truth, "--out", out, "--bootstrap", 10)
    p.fixtures["evaluate_out"] = out
    dscs = []
    for r in read_csv_rows(out / "per_case.csv"):
        if r.get("lesion_class") == "liver_lesion" or r.get("organ") == "liver":
            try:
                dscs.append(float(r.get("dsc", "nan")))
            except ValueError:
                pass
    warned = re.search(r"grid|resolution|spacing|resampl", run.out, re.IGNORECASE)
    verdict(p, "7.evaluate-coarse-prediction", run, [
        (run.rc == 0, "non-zero exit"),
        (bool(dscs), "no DSC in per_case.csv"),
        (all(0.4 <= d <= 0.6 for d in dscs), f"DSC {dscs} (expected 0.5 in the truth's 1 mm grid)"),
        (bool(warned), "no warning about the grids"),
    ], tree_diff(before, sha_tree(truth, pred)))


def item8(p: Probe) -> None:
    run_dir, ph = fixture(p, "run"), fixture(p, "phantoms")
    box = p.sandbox("p8")
    src = first_case(ph / "masks")
    ds = box / "in" / "ds"
    case = ds / src.name
    shutil.copytree(src / "segmentations", case / "segmentations")
    rng = p.helper("non_hu_copy", src_ct=str(src / "ct.nii.gz"), dst_ct=str(case / "ct.nii.gz"))
    before = sha_tree(ds)
    ctl = p.rsuper("check", ds)
    if tree_diff(before, sha_tree(ds)) or ctl.traceback:
        p.record("8.check-non-HU-CT", False, f"`rsuper check` changed its input or showed a traceback: {ctl.tail()}")
    control = (f"control `rsuper check`: rc={ctl.rc}, "
               + ("calls it non-HU" if re.search(r"HU|Hounsfield", ctl.out) else "does NOT mention HU"))
    hu = re.compile(r"\bHU\b|Hounsfield", re.IGNORECASE)
    info = f"CT values {rng['min']:.0f}..{rng['max']:.0f}; {control}"

    before = sha_tree(ds)
    run = p.rsuper("prepare", ds, "--out", box / "cache", "--spacing", 6)
    verdict(p, "8.prepare-non-HU-CT", run, [
        (run.rc != 0, "exit 0 (accepted)"),
        (bool(hu.search(run.out)), "error does not mention HU"),
    ], tree_diff(before, sha_tree(ds)), extra=info)

    before = sha_tree(ds)
    run = p.rsuper("predict", "--checkpoint", run_dir / "final.pt", ds, box / "pred", "--device", "cpu",
                   "--tta", "none")
    verdict(p, "8.predict-non-HU-CT", run, [
        (run.rc != 0, "exit 0 (accepted)"),
        (bool(hu.search(run.out)), "error does not mention HU"),
    ], tree_diff(before, sha_tree(ds)), extra=info)


def item9(p: Probe) -> None:
    trees: list[tuple[str, str]] = [
        ("phantoms", "phantoms"), ("prepare", "cache"), ("train", "run"), ("predict", "pred"),
        ("extract", "extract_out"), ("evaluate", "evaluate_out"),
    ]
    for label, key in trees:
        try:
            if key in ("extract_out", "evaluate_out"):
                if key not in p.fixtures:
                    (item4 if key == "extract_out" else item7)(p)
                root = Path(p.fixtures[key])  # type: ignore[arg-type]
            else:
                root = fixture(p, key)
        except SetupFailed as exc:
            p.record(f"9.modes-{label}", False, f"setup failed: {exc}")
            continue
        bad = []
        n_files = n_dirs = 0
        for path in [root, *sorted(root.rglob("*"))]:
            if path.is_symlink():
                continue
            mode = path.stat().st_mode & 0o777
            if path.is_dir():
                n_dirs += 1
                if mode != 0o755:
                    bad.append(f"{path.relative_to(root.parent)} {mode:04o}")
            else:
                n_files += 1
                if mode != 0o644:
                    bad.append(f"{path.relative_to(root.parent)} {mode:04o}")
        p.record(f"9.modes-{label}", not bad,
                 f"{n_files} files, {n_dirs} folders under umask 022; "
                 + (f"{len(bad)} with other modes: {short(bad, 4)}" if bad else "all 0644/0755"))


def item10(p: Probe) -> None:
    box = p.sandbox("p10")
    fake = box / "in" / "rsuper_like.pth"
    fake.parent.mkdir(exist_ok=True)
    p.helper("fake_rsuper_checkpoint", dst=str(fake))
    rand = box / "in" / "random.bin"
    rand.write_bytes(random.Random(20240601).randbytes(4096))
    classes = box / "in" / "classes.txt"
    classes.write_text("liver\npancreas\nspleen\n", encoding="utf-8")
    option_problem = re.compile(
        r"not shipped|missing package file|No such option|Invalid value|is not a file; give 42, 26", re.IGNORECASE
    )

    # 10a: the --help example, with the input replaced by a torch file that holds an R-Super-like dict.
    help_run = p.rsuper("convert-checkpoint", "--help")
    m = re.search(r"Example:\s*(rsuper convert-checkpoint[^\n│]*)", help_run.out)
    if m is None:
        p.record("10.convert-help-example", help_run.rc == 0 and not help_run.traceback,
                 f"no example in --help (rc={help_run.rc})")
    else:
        example = m.group(1).strip()
        tokens = shlex.split(example)[2:]
        flags = {"--use-ema", "--no-ema", "--trust-checkpoint", "--help"}
        args, positional, i = [], 0, 0
        while i < len(tokens):
            tok = tokens[i]
            if tok.startswith("-"):
                args.append(tok)
                if tok not in flags and "=" not in tok and i + 1 < len(tokens):
                    args.append(tokens[i + 1])
                    i += 1
            else:
                args.append(str(fake) if positional == 0 else str(box / "out_example.pt") if positional == 1 else tok)
                positional += 1
            i += 1
        before = sha_tree(fake)
        run = p.rsuper("convert-checkpoint", *args)
        bad = option_problem.search(run.out)
        verdict(p, "10.convert-help-example", run, [
            (not bad, f"the example's options fail ({bad.group(0) if bad else ''})"),
        ], tree_diff(before, sha_tree(fake)), extra=f"example: {example}")

    # 10b: the defaults (no options).
    before = sha_tree(fake)
    run = p.rsuper("convert-checkpoint", fake, box / "out_defaults.pt")
    bad = option_problem.search(run.out)
    verdict(p, "10.convert-defaults", run, [
        (not bad, f"the defaults fail ({bad.group(0) if bad else ''})"),
    ], tree_diff(before, sha_tree(fake)))

    # 10c: random bytes (class list given as a file, so only the file reading is tested).
    before = sha_tree(rand, classes)
    run = p.rsuper("convert-checkpoint", rand, box / "out_random.pt", "--classes", classes)
    verdict(p, "10.convert-random-bytes", run, [
        (run.rc != 0, "exit 0"),
        ("not a pytorch checkpoint" in run.out.lower(), "does not say 'not a PyTorch checkpoint'"),
        ("--trust-checkpoint" not in run.out, "advises --trust-checkpoint"),
    ], tree_diff(before, sha_tree(rand, classes)))


def item11(p: Probe) -> None:
    box = p.sandbox("p11")
    try:
        cache = fixture(p, "cache")
    except SetupFailed:
        cache = box / "no_cache"

    def config_verdict(item: str, run: Run, names: list[str], inputs: list[Path], before: dict[str, str]) -> None:
        dump = [m for m in PYDANTIC_DUMP if m in run.out]
        missing = [n for n in names if n not in run.out]
        verdict(p, item, run, [
            (run.rc == 2, f"exit code {run.rc}, not 2"),
            (not dump, f"raw pydantic dump ({', '.join(dump)})"),
            (not missing, f"does not name {missing}"),
        ], tree_diff(before, sha_tree(*inputs)))

    bad_yaml = box / "bad.yaml"
    bad_yaml.write_text(f"cache: [{cache}]\nout: {box / 'r_yaml'}\nsteps: many\nbogus_field: 1\n", encoding="utf-8")
    before = sha_tree(bad_yaml)
    run = p.rsuper("train", "--config", bad_yaml)
    config_verdict("11.train-config-bad-type-unknown-field", run, ["steps", "bogus_field"], [bad_yaml], before)

    run = p.rsuper("train", "--cache", cache, "--out", box / "r_stage2", "--stage", 2)
    config_verdict("11.train-stage2-without-init", run, ["init"], [], {})

    run = p.rsuper("train", "--cache", cache, "--out", box / "r_amp", "--amp", "fp8")
    config_verdict("11.train-bad-amp-value", run, ["amp"], [], {})

    ph = p.fixtures.get("phantoms")
    ds = Path(ph) / "masks" if isinstance(ph, Path) else box
    run = p.rsuper("prepare", ds, "--out", box / "c_spacing", "--spacing", "abc")
    config_verdict("11.prepare-bad-spacing", run, ["spacing"], [], {})

    run = p.rsuper("evaluate", "--out", box / "e_none", "--pred", box)
    config_verdict("11.evaluate-without-truth", run, ["--reports", "--masks"], [], {})


def item12(p: Probe) -> None:
    for args in (["--help"], ["--version"], ["predict", "--help"]):
        run = p.rsuper(*args)
        best = run.secs
        if 1.0 <= best < 3.0:
            best = min(best, p.rsuper(*args).secs)
        probs = ([] if best < 1.0 else [f"{best:.2f} s >= 1.0 s"]) + ([] if run.rc == 0 else [f"rc={run.rc}"])
        probs += common_checks(run)
        p.record(f"12.time-rsuper-{'-'.join(a.strip('-') for a in args)}", not probs,
                 f"{best:.2f} s wall" + (f"; {'; '.join(probs)}" if probs else ""))


ITEMS = {12: item12, 1: item1, 2: item2, 3: item3, 4: item4, 5: item5, 6: item6, 7: item7, 8: item8, 10: item10,
         11: item11, 9: item9}


# ---------------------------------------------------------------------------------------------------------
def prepare_workdir(path: str | None) -> Path:
    if path is None:
        work = Path(tempfile.mkdtemp(prefix="rsuper_probe_"))
    else:
        work = Path(path).resolve()
        if work.exists() and any(work.iterdir()):
            if not (work / PROBE_MARK).is_file():
                sys.exit(f"--workdir {work} is not empty and was not made by this probe; give a new folder")
            for child in work.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        work.mkdir(parents=True, exist_ok=True)
    (work / PROBE_MARK).write_text("made by benchmarks/probe_hardening.py; emptied on its next run\n")
    return work


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=sys.executable, help="interpreter for `-m rsuper` and helpers")
    ap.add_argument("--workdir", default=None, help="folder for everything the probe writes (default: temp)")
    ap.add_argument("--only", default=None, help="comma-separated item numbers, e.g. 1,3,12")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per command (default 300)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every command and its output tail")
    opts = ap.parse_args(argv)

    only = None
    if opts.only:
        try:
            only = {int(x) for x in opts.only.split(",") if x.strip()}
        except ValueError:
            ap.error("--only takes item numbers, e.g. 1,3,12")
        unknown = only - set(ITEMS)
        if unknown:
            ap.error(f"unknown items {sorted(unknown)}; items are 1..12")
    work = prepare_workdir(opts.workdir)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("COLUMNS", "400")
    env.setdefault("PYTHONIOENCODING", "utf-8")
    env.pop("FORCE_COLOR", None)
    env["NO_COLOR"] = "1"
    p = Probe(python=opts.python, work=work, timeout=opts.timeout, verbose=opts.verbose, env=env)
    print(f"# rsuper hardening probe: python={opts.python} workdir={work} "
          f"PYTHONPATH={env.get('PYTHONPATH', '')!r}", flush=True)
    t0 = time.perf_counter()
    for number, fn in ITEMS.items():
        if only is not None and number not in only:
            continue
        try:
            fn(p)
        except SetupFailed as exc:
            p.record(f"{number}.setup", False, f"could not build the fixtures this item needs: {exc}")
        except Exception as exc:  # noqa: BLE001 - a broken probe must not hide the other items
            p.record(f"{number}.probe-error", False, f"the probe itself failed: {type(exc).__name__}: {exc}")
    n_fail = sum(not r.ok for r in p.results)
    print(f"# {len(p.results) - n_fail} PASS, {n_fail} FAIL in {time.perf_counter() - t0:.0f} s; files under {work}",
          flush=True)
    return 0 if p.results and n_fail == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
