"""Configuration errors as the user reads them: one line per problem, and one exit code.

A problem line names the field, the value given and what is allowed, e.g. ``steps must be greater than
or equal to 1, got -3``; pydantic ``ValidationError`` dumps (types, URLs, ``input_value={...}``) never
reach the user. The command line prints ``error: <what> in <source>:`` then the problem lines, and exits
with :data:`USAGE_ERROR` (2, as click/typer do for usage errors).

Importable without pydantic, numpy or torch (the CLI imports it at start-up).

Example:
    >>> try:
    ...     TrainConfig.model_validate({"optim": {"steps": -3}, "stpes": 3})
    ... except ValidationError as error:
    ...     print(ConfigError.from_validation(error, "invalid training configuration", "run.yaml",
    ...                                       fields=["steps", "optim.steps"]))
    invalid training configuration in run.yaml:
      optim.steps must be greater than or equal to 1, got -3
      stpes is not a TrainConfig field (did you mean steps?)
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from pydantic import ValidationError
    from rich.console import Console

USAGE_ERROR = 2  # exit code of usage and configuration errors (click's UsageError exit code)
_MAX_VALUE_CHARS = 80


class ConfigError(ValueError):
    """Unusable configuration: ``problems`` are readable lines; ``what`` and ``source`` head them.

    ``str()`` is the problems alone (one per line) without ``what``, else ``<what>[ in <source>]:`` followed by
    the problems indented by two spaces. A ``ValueError``, so callers catching ``ValueError`` keep working.
    """

    def __init__(self, problems: str | Sequence[str], what: str | None = None,
                 source: str | os.PathLike[str] | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.what = what
        self.source = None if source is None else str(source)
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.what is None:
            return "\n".join(self.problems)
        return "\n".join([heading(self.what, self.source), *(f"  {p}" for p in self.problems)])

    @classmethod
    def from_validation(cls, error: ValidationError, what: str, source: str | os.PathLike[str] | None = None,
                        names: Mapping[str, str] | None = None, fields: Collection[str] = ()) -> ConfigError:
        """The readable form of a pydantic ``ValidationError`` (see :func:`validation_problems`)."""
        return cls(validation_problems(error, names, fields), what, source)


def heading(what: str, source: str | None = None) -> str:
    """``<what> in <source>:`` (or ``<what>:``), the line above the problem lines."""
    return f"{what} in {source}:" if source else f"{what}:"


def validation_problems(error: ValidationError, names: Mapping[str, str] | None = None,
                        fields: Collection[str] = ()) -> list[str]:
    """One line per pydantic error: ``<field> must be <allowed>, got <value>`` and the like.

    ``names`` renames fields for display, by dotted location (e.g. ``{"optim.lr": "lr"}`` for a run file that
    wrote the old flat key, ``{"bogus": "stage2_options.bogus"}``); ``fields`` (the names a file may use,
    dotted for nested ones) lets an unknown field suggest the nearest known one.
    """
    lines: list[str] = []
    for item in error.errors(include_url=False):
        loc = tuple(item.get("loc") or ())
        msg = str(item.get("msg", "")).strip()
        kind = item.get("type", "")
        field = _field_name(loc, names or {})
        if kind in ("value_error", "assertion_error"):
            msg = msg.partition(", ")[2] if msg.startswith(("Value error, ", "Assertion failed, ")) else msg
            last = str(loc[-1]) if loc else ""
            if not field:
                line = msg
            elif msg.startswith(last):  # our validators' messages start with the field name
                line = field + msg[len(last):]
            else:
                line = f"{field}: {msg}"
        elif not field:
            line = msg
        elif kind == "extra_forbidden":
            dotted = ".".join(str(part) for part in loc)
            near = difflib.get_close_matches(dotted, list(fields), n=1)
            line = f"{field} is not a {error.title} field" + (f" (did you mean {near[0]}?)" if near else "")
        elif kind == "missing":  # e.g. patch_size[2] of a 2-item list: show the list
            line = f"{field} is missing, got {show_value(item.get('input'))}" if len(loc) > 1 else f"{field} is required"
        elif msg.startswith("Input should be "):
            line = f"{field} must be {msg.removeprefix('Input should be ')}, got {show_value(item.get('input'))}"
        else:
            line = f"{field}: {msg[:1].lower()}{msg[1:]}, got {show_value(item.get('input'))}"
        lines += [part for part in line.splitlines() if part not in lines]  # a validator may give several lines
    return lines


def _field_name(loc: tuple[Any, ...], names: Mapping[str, str]) -> str:
    """``a.b[2].c`` for a location; its longest dotted prefix found in ``names`` is shown renamed."""
    if not loc:
        return ""
    start = 1
    text = str(loc[0])
    for end in range(len(loc), 0, -1):
        key = ".".join(str(part) for part in loc[:end])
        if key in names and not any(isinstance(part, int) for part in loc[:end]):
            text, start = names[key], end
            break
    for part in loc[start:]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def show_value(value: Any) -> str:
    """``repr`` of a user's value with paths as plain strings, cut to 80 characters."""

    def plain(v: Any) -> Any:
        if isinstance(v, PurePath):
            return str(v)
        if isinstance(v, (list, tuple)):
            return type(v)(plain(x) for x in v)
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    text = repr(plain(value))
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def problem_lines(error: BaseException) -> list[str]:
    """The problem lines of any error: a ``ConfigError``'s problems, a ``ValidationError``'s readable
    lines, else the message's lines."""
    if isinstance(error, ConfigError):
        return list(error.problems)
    if type(error).__name__ == "ValidationError" and hasattr(error, "errors"):
        return validation_problems(error)  # type: ignore[arg-type]
    return [line for line in str(error).splitlines() if line.strip()] or [type(error).__name__]


def format_config_error(error: BaseException, what: str) -> list[str]:
    """``error: <what>[ in <source>]:`` then one indented line per problem (``what`` of a ``ConfigError`` wins)."""
    source = error.source if isinstance(error, ConfigError) else None
    what = error.what if isinstance(error, ConfigError) and error.what else what
    return [f"error: {heading(what, source)}", *(f"  {p}" for p in problem_lines(error))]


def exit_config_error(console: Console, error: BaseException, what: str) -> NoReturn:
    """Prints :func:`format_config_error` (no markup, no wrapping) and exits with :data:`USAGE_ERROR`."""
    import typer
    from rich.markup import escape

    lines = format_config_error(error, what)
    console.print(f"[red]error:[/red] {escape(lines[0].removeprefix('error: '))}", soft_wrap=True, highlight=False)
    for line in lines[1:]:
        console.print(escape(line), soft_wrap=True, highlight=False)
    raise typer.Exit(USAGE_ERROR)
