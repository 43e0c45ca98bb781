"""The ``rsuper`` command line: a thin typer front end; each command lives in ``rsuper.commands``."""

from __future__ import annotations

import typer

from rsuper import __version__
from rsuper.commands import (check, demo, evaluate, extract, models, nnunet, organs, phantoms, predict, prepare, refine,
                             review, train)

app = typer.Typer(
    name="rsuper",
    help=(
        "Train 3D CT tumor segmentation from a few voxel masks plus many radiology reports "
        "(R-Super: Volume Loss + Ball Loss), then predict and evaluate.\n\n"
        "Pipeline: check -> extract -> organs -> prepare -> train -> predict -> evaluate; then review and refine "
        "(reports check the model; refined masks train the next round).  "
        "Try: rsuper demo --quick"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rsuper {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """rsuper command line."""


# `rsuper --help` lists the commands by panel, each in this order (the pipeline's for the first).
COMMAND_PANELS = {
    "Pipeline": ("check", "extract", "organs", "prepare", "train", "predict", "evaluate"),
    "Reports check the model": ("review", "refine"),
    "Try it on phantoms": ("demo", "phantoms"),
    "Tools": ("extract-score", "models", "convert-checkpoint"),
    "nnU-Net": ("export-nnunet",),
}

for _module in (check, extract, organs, prepare, train, predict, evaluate, review, refine, demo, phantoms, models,
                nnunet):
    _module.register(app)
_PANEL_OF = {name: panel for panel, names in COMMAND_PANELS.items() for name in names}
_ORDER = list(_PANEL_OF)
app.registered_commands.sort(key=lambda info: _ORDER.index(info.name))  # a command missing above fails here
for _info in app.registered_commands:
    _info.rich_help_panel = _PANEL_OF[_info.name]
