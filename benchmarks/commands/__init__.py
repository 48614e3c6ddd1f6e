"""Sub-commands of ``python -m benchmarks``: one module each, discovered automatically.

A command module defines ``NAME`` (str), ``HELP`` (one line), ``add_arguments(parser)`` and
``main(args) -> int``. Anything the user got wrong raises :class:`benchmarks.cli.UsageError` (or a
``RegistryError``/``DatasetError``/``ConfigError``), which the CLI prints as one line without a traceback;
a plain ``ValueError`` is treated as a bug and keeps its traceback, so commands convert input errors.
"""
