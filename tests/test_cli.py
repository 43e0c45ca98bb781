from typer.testing import CliRunner

from rsuper.cli import app

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "rsuper" in result.output


def test_every_command_help_has_an_example():
    for name in sorted(c.name or c.callback.__name__ for c in app.registered_commands):
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Example" in result.output, f"`rsuper {name} --help` has no example"
