"""`rsuper --help`, `--version` and `<cmd> --help` start fast: no heavy library is imported for them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import rsuper

HEAVY = ("torch", "monai", "scipy", "nibabel", "pandas", "matplotlib")
SRC = str(Path(rsuper.__file__).resolve().parents[1])


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)


def test_python_m_rsuper_help_imports_no_heavy_library():
    result = _python("-X", "importtime", "-m", "rsuper", "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "extract" in result.stdout and "predict" in result.stdout
    # -X importtime writes "import time: self [us] | cumulative | imported package" per module to stderr.
    imported = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert imported, result.stderr[-2000:]
    assert sorted({m.split(".")[0] for m in imported} & set(HEAVY)) == []


def test_help_and_version_of_every_command_import_no_heavy_library():
    script = f"""
import json, sys
from typer.testing import CliRunner
from rsuper.cli import app
runner = CliRunner()
names = sorted(c.name or c.callback.__name__ for c in app.registered_commands)
for args in (["--help"], ["--version"], *([name, "--help"] for name in names)):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (args, result.output)
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))))
"""
    result = _python("-c", script)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
