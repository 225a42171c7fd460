"""The `pick` subcommand: choose a delta's modules on a local web page (registered on import)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..io import atomic_write_text
from .command import EXIT_OK, UsageError, register_command
from .models import _CONFIG_FAMILIES, _delta_config, _existing, _family_config, _meta_model, _model_config


# ----- opendelta pick ------------------------------------------------------------------------------
def _pick_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", metavar="MODEL_DIR", help="a transformers model folder (no weights are read)")
    p.add_argument(
        "--config",
        choices=_CONFIG_FAMILIES,
        metavar="FAMILY",
        help=f"build the model from a config instead: {', '.join(_CONFIG_FAMILIES)} (with --size tiny / base)",
    )
    p.add_argument("--size", choices=("tiny", "base"), default="tiny", help="with --config; default tiny")
    p.add_argument(
        "--delta",
        default="lora",
        metavar="TYPE|CONFIG",
        help="a delta type (default lora) or a delta config .json whose settings to use",
    )
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a random free one)")
    p.add_argument("--timeout", type=float, default=900.0, metavar="S", help="give up after S seconds (default 900)")
    p.add_argument("--no-browser", action="store_true", help="only print the URL")
    p.add_argument("--out", metavar="FILE", help="also write the resulting config JSON to FILE")


def _pick(args: argparse.Namespace) -> int:
    from ..auto import AutoDeltaConfig
    from ..picker import pick_config

    if (args.model is None) == (args.config is None):
        raise UsageError("give either a MODEL_DIR or --config FAMILY (not both).")
    config = _model_config(_existing(args.model, "MODEL_DIR")) if args.model else _family_config(args.config, args.size)
    delta = Path(args.delta).expanduser()
    delta_config = (
        _delta_config(delta)
        if delta.suffix == ".json" or delta.is_dir()
        else AutoDeltaConfig.from_dict({"delta_type": args.delta})
    )
    picked = pick_config(
        _meta_model(config), delta_config, port=args.port, timeout=args.timeout, open_browser=not args.no_browser
    )
    text = json.dumps(picked.to_diff_dict(), indent=2) + "\n"
    if args.out:
        atomic_write_text(Path(args.out), text)
    sys.stdout.write(text)
    return EXIT_OK


register_command(
    "pick",
    _pick,
    arguments=_pick_arguments,
    help="choose the modules to modify on a web page (the interactive module picker)",
    description="Serve the model's folded module tree on 127.0.0.1 (random port, one-time token in the URL), let "
    "you tick the modules the delta should modify, and print the resulting delta config JSON. The "
    "model is built on the meta device, so no weights are read.",
    epilog="examples:\n  opendelta pick ./my-t5 --delta adapter --out adapter.json\n"
    "  opendelta pick --config llama --size base --delta lora",
)
