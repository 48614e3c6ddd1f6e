"""Sub-commands of ``python -m benchmarks``: one module each, discovered automatically.

A command module defines ``NAME`` (str), ``HELP`` (one line), ``add_arguments(parser)`` and
``main(args) -> int``. Anything the user got wrong raises :class:`benchmarks.cli.UsageError` (or a
``ValueError``/``RegistryError``/``DatasetError``), which the CLI prints as one line without a traceback.
"""
