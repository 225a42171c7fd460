"""The `opendelta` command (also `python -m opendelta`).

    opendelta show MODEL_DIR [--delta CONFIG.json] [--save graph.svg]   folded structure of a model
    opendelta show --config bert --size base                           ... of a model built from a config
    opendelta inspect CKPT                                             what a delta checkpoint holds
    opendelta merge CKPT --backbone MODEL_DIR --out DIR                merge a delta into a plain model

A subcommand is one function taking the parsed arguments plus one `register_command(...)` call (see
`command.py`) that names it and declares its arguments:

    def _train(args: argparse.Namespace) -> int:
        ...
        return 0

    register_command("train", _train, help="fine-tune a delta", arguments=_train_arguments)

Failures raise `CliError` (or any `OpenDeltaError`); `main` prints them as one `opendelta <cmd>: error:`
line on stderr and returns 1 (2 for a bad command line). `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import textwrap
from collections.abc import Sequence

from .._logging import logger
from . import (
    command,
    commands,  # noqa: F401  (registers show / inspect / merge)
    pick,  # noqa: F401  (registers pick)
)
from .command import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CliError, UsageError, register_command

__all__ = ["main", "build_parser", "register_command", "CliError", "UsageError"]
PROG = "opendelta"
_HELP_WIDTH = max(40, min(100, shutil.get_terminal_size().columns - 2))


def _add_common_flags(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """-v / -q / --debug, accepted before and after the subcommand name."""
    group = parser.add_argument_group("output")
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS if suppress else 0,
        help="log more (-v: progress, -vv: debug details)",
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS if suppress else False, help="log errors only"
    )
    group.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="show the full traceback of a failure",
    )


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand; only `only`'s options are declared (all when None), so running one
    subcommand never imports another's modules (`train` loads the training stack only when it runs)."""
    from ..version import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="OpenDelta: look at models and delta checkpoints, and merge deltas into plain models.",
        epilog="Run `opendelta COMMAND --help` for the options of a command.\n"
        "Exit status: 0 success, 1 the operation failed, 2 bad command line.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _add_common_flags(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for cmd in command._COMMANDS.values():
        description = textwrap.fill(cmd.description or cmd.help, width=_HELP_WIDTH)
        p = sub.add_parser(
            cmd.name,
            help=cmd.help,
            description=description,
            epilog=cmd.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if cmd.arguments is not None and only in (None, cmd.name):
            cmd.arguments(p)
        _add_common_flags(p, suppress=True)
    return parser


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "info" if verbose >= 2 else "error")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(logging.INFO if verbose >= 2 else logging.ERROR)
        if verbose == 0:
            hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `opendelta` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(chosen if chosen in command._COMMANDS else "")
    args = parser.parse_args(argv)  # exits with status 2 on a bad command line
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _configure_logging(args.verbose, args.quiet)
    from ..errors import OpenDeltaError

    try:
        return command._COMMANDS[args.command].run(args) or EXIT_OK
    except BrokenPipeError:  # the reader went away (`opendelta inspect CKPT | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except Exception as exc:
        if args.debug:
            raise
        code = exc.code if isinstance(exc, CliError) else EXIT_FAILURE
        if isinstance(exc, (CliError, OpenDeltaError, OSError, ValueError)):
            message = str(exc)
        else:
            message = f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)"
        print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130


def _train_arguments(p: argparse.ArgumentParser) -> None:
    from . import train_cli

    train_cli.add_arguments(p)


def _train(args: argparse.Namespace) -> int:
    from . import train_cli

    return train_cli.run_cli(args)


register_command(
    "train",
    _train,
    arguments=_train_arguments,
    help="delta-tune a pretrained model on labelled text and report test accuracy",
    description="Train a delta (or the whole model with --full) and a classification head on a CSV / JSONL file "
    "(default: the embedded MiniLM-L6 on Rotten Tomatoes snippets), save the best epoch with "
    "save_finetuned, reload it onto a fresh backbone (hash-checked) and print test accuracy and sizes.",
    epilog="example:\n  opendelta train --delta lora --train-subset 4000 --epochs 2 --output runs/lora",
)
