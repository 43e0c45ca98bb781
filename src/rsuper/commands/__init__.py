"""CLI commands, one module per step. Each module has ``register(app)`` adding its typer commands.

Help-text conventions (checked by tests/test_cli.py):
- a placeholder is a capitalised name of what goes there, the same in the usage line, the option's
  metavar, the help text and error messages: ``DATASET``, ``OUT``, ``CACHE``, ``CKPT``, ``CSV``, ``DIR``,
  ``FILE``, ``N``, ``MM``, ``FRACTION``, ``SEED``, ``DEVICE``; every option that takes a value sets one;
- literal choices are written as typed, joined by ``|`` (``rules|llm``); flags take no value;
- ``<case>``/``<class>`` inside a path are the per-case and per-class names of a layout (docs/data.md);
- defaults are shown in ``[default: ...]``; a computed default says in words what it is
  (``show_default="1/3"``, ``show_default="OUT/llm_cache.jsonl"``), never as a long float;
- the docstring opens with a one-line summary and has at least one ``Example: rsuper ...`` line.
"""
