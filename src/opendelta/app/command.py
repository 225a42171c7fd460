"""The subcommand registry of the `opendelta` command and its errors.

A subcommand is one function taking the parsed arguments plus one `register_command(...)` call that names
it and declares its arguments. Failures raise `CliError` (or any `OpenDeltaError`): `main` prints them as
one line and returns the exit status.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A failure reported as one line on stderr; `code` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CliError):
    """The command line itself is wrong (missing argument, path that does not exist): exit status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


@dataclass
class _Command:
    name: str
    run: Callable[[argparse.Namespace], int | None]
    help: str
    description: str | None
    arguments: Callable[[argparse.ArgumentParser], None] | None
    epilog: str | None


_COMMANDS: dict[str, _Command] = {}


def register_command(
    name: str,
    run: Callable[[argparse.Namespace], int | None],
    *,
    help: str,
    arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    description: str | None = None,
    epilog: str | None = None,
) -> None:
    """Add the subcommand `opendelta NAME`: `arguments(parser)` declares its options, `run(args)` does it.

    `run` returns the exit status (None means 0) and reports failures by raising CliError / OpenDeltaError.
    """
    if name in _COMMANDS:
        raise ValueError(f"The subcommand {name!r} is already registered.")
    _COMMANDS[name] = _Command(name, run, help, description, arguments, epilog)
