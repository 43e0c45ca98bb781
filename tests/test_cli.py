"""`rsuper --help` and every command's `--help`: pipeline order, an example, readable defaults, one
placeholder style (the conventions in rsuper/commands/__init__.py)."""

import re

import typer.main
from typer.testing import CliRunner

from rsuper.cli import COMMAND_PANELS, app

runner = CliRunner()
COMMANDS = [c.name or c.callback.__name__ for c in app.registered_commands]
LONG_FLOAT = re.compile(r"\d\.\d{7,}")  # 0.3333333333333333, not 0.001 or 2.5
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*( [A-Z][A-Z0-9_]*)*")  # OUT, CKPT, MIN MAX, NAME_A NAME_B
CHOICES = re.compile(r"[a-z0-9_]+(\|[a-z0-9_]+)+")  # rules|llm
CONVENTION_PENDING = {"train"}  # its options are being reworked in parallel (issue 27)


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "rsuper" in result.output


def test_help_lists_the_pipeline_in_order():
    assert COMMANDS == [name for names in COMMAND_PANELS.values() for name in names]
    assert COMMAND_PANELS["Pipeline"] == ("check", "extract", "organs", "prepare", "train", "predict", "evaluate")
    output = runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    panel = output[output.index("─ Pipeline ─"):]
    listed = re.findall(r"^│ (\S+) ", panel, flags=re.MULTILINE)
    assert listed[:len(COMMAND_PANELS["Pipeline"])] == list(COMMAND_PANELS["Pipeline"])


def test_every_command_help_has_an_example_and_no_long_float():
    for name in COMMANDS:
        result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (name, result.output)
        assert "Example" in result.output, f"`rsuper {name} --help` has no example"
        long_float = LONG_FLOAT.search(result.output)
        assert long_float is None, f"`rsuper {name} --help` prints {long_float.group()}"


def test_every_placeholder_is_a_capitalised_name_or_a_choice():
    group = typer.main.get_command(app)
    wrong = []
    for name in sorted(set(COMMANDS) - CONVENTION_PENDING):
        for param in group.commands[name].params:
            if getattr(param, "is_flag", False):
                continue  # flags take no value
            metavar = param.metavar or ""
            allowed = PLACEHOLDER.fullmatch(metavar) or (param.param_type_name == "option" and CHOICES.fullmatch(metavar))
            if not allowed:
                wrong.append(f"rsuper {name} {param.opts[0]}: metavar {param.metavar!r}")
    assert not wrong, "placeholders are capitalised names (OUT, CKPT) or literal choices (rules|llm):\n" + \
        "\n".join(wrong)
