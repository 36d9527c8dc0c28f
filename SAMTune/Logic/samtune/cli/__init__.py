"""The ``samtune`` command: the parser (:mod:`samtune.cli.main`), one function per command
(:mod:`samtune.cli.commands`), options generated from configuration fields (:mod:`samtune.cli.options`),
terminal output with the progress bar (:mod:`samtune.cli.terminal`) and the demo (:mod:`samtune.cli.demo`)."""

from samtune.cli.commands import parse_overrides
from samtune.cli.main import EXIT_CODES, build_parser, main

__all__ = ["EXIT_CODES", "build_parser", "main", "parse_overrides"]
