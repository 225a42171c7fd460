"""The `opendelta` command (also `python -m opendelta`).

    opendelta show MODEL_DIR [--delta CONFIG.json] [--save graph.svg]   folded structure of a model
    opendelta show --config bert --size base                           ... of a model built from a config
    opendelta inspect CKPT                                             what a delta checkpoint holds
    opendelta merge CKPT --backbone MODEL_DIR --out DIR                merge a delta into a plain model
    opendelta pick MODEL_DIR [--delta TYPE]                             choose modified_modules on a web page

A subcommand is one function taking the parsed arguments plus one `register_command(...)` call that names
it and declares its arguments:

    def _train(args: argparse.Namespace) -> int:
        ...
        return 0

    register_command("train", _train, help="fine-tune a delta", arguments=_train_arguments)

Failures raise `CliError` (or any `OpenDeltaError`); `main` prints them as one `opendelta <cmd>: error:`
line on stderr and returns 1 (2 for a bad command line). `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ._logging import logger
from .checkpoint import read_json_object

PROG = "opendelta"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
_HELP_WIDTH = max(40, min(100, shutil.get_terminal_size().columns - 2))


class CliError(Exception):
    """A failure reported as one line on stderr; `code` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CliError):
    """The command line itself is wrong (missing argument, path that does not exist): exit status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


# ----- the registry ------------------------------------------------------------------------------
@dataclass
class _Command:
    name: str
    run: Callable[[argparse.Namespace], int | None]
    help: str
    description: str | None
    arguments: Callable[[argparse.ArgumentParser], None] | None
    epilog: str | None


_COMMANDS: dict[str, _Command] = {}


def register_command(name: str, run: Callable[[argparse.Namespace], int | None], *, help: str,
                     arguments: Callable[[argparse.ArgumentParser], None] | None = None,
                     description: str | None = None, epilog: str | None = None) -> None:
    """Add the subcommand `opendelta NAME`: `arguments(parser)` declares its options, `run(args)` does it.

    `run` returns the exit status (None means 0) and reports failures by raising CliError / OpenDeltaError.
    """
    if name in _COMMANDS:
        raise ValueError(f"The subcommand {name!r} is already registered.")
    _COMMANDS[name] = _Command(name, run, help, description, arguments, epilog)


def _add_common_flags(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """-v / -q / --debug, accepted before and after the subcommand name."""
    group = parser.add_argument_group("output")
    group.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS if suppress else 0,
                       help="log more (-v: progress, -vv: debug details)")
    group.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS if suppress else False,
                       help="log errors only")
    group.add_argument("--debug", action="store_true", default=argparse.SUPPRESS if suppress else False,
                       help="show the full traceback of a failure")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="OpenDelta: look at models and delta checkpoints, and merge deltas into plain models.",
        epilog="Run `opendelta COMMAND --help` for the options of a command.\n"
               "Exit status: 0 success, 1 the operation failed, 2 bad command line.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _add_common_flags(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for cmd in _COMMANDS.values():
        description = textwrap.fill(cmd.description or cmd.help, width=_HELP_WIDTH)
        p = sub.add_parser(cmd.name, help=cmd.help, description=description, epilog=cmd.epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if cmd.arguments is not None:
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
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with status 2 on a bad command line
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _configure_logging(args.verbose, args.quiet)
    from .errors import OpenDeltaError

    try:
        return _COMMANDS[args.command].run(args) or EXIT_OK
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


# ----- shared helpers ------------------------------------------------------------------------------
def _existing(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"{what} {path!r} does not exist.")
    return p


def _checkpoint(text: str) -> str:
    """A delta checkpoint argument: an existing folder, or a Hub repo id (`Org/name`)."""
    from .hub import validate_repo_id

    if Path(text).expanduser().exists():
        return str(Path(text).expanduser())
    try:
        validate_repo_id(text)
    except Exception:
        raise UsageError(f"CKPT {text!r} does not exist (and is not a Hub repo id `Org/name`).") from None
    return text


def _model_config(model_dir: Path) -> Any:
    """The transformers config of a model folder, with a clear error when it is not one."""
    import transformers

    if not model_dir.is_dir() or not (model_dir / "config.json").is_file():
        raise CliError(f"{str(model_dir)!r} is not a transformers model folder (no config.json); "
                       f"save one with `model.save_pretrained(folder)`.")
    if "delta_type" in read_json_object(model_dir / "config.json"):
        raise CliError(f"{str(model_dir)!r} is a delta checkpoint, not a model folder; pass the backbone's "
                       f"folder and the checkpoint as `--delta {model_dir}` (show) or CKPT (merge).")
    try:
        return transformers.AutoConfig.from_pretrained(str(model_dir))
    except (OSError, ValueError, KeyError) as exc:
        raise CliError(f"Cannot read the model config in {str(model_dir)!r}: {str(exc).splitlines()[0]}") from None


def _model_class(config: Any) -> Any:
    """The class named in `config.architectures` (e.g. BertForSequenceClassification), else AutoModel's."""
    import transformers

    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    try:
        return transformers.AutoModel._model_mapping[type(config)]
    except KeyError:
        raise CliError(f"transformers has no model class for {type(config).__name__} "
                       f"(architectures={getattr(config, 'architectures', None)}).") from None


def _meta_model(config: Any) -> Any:
    """The model described by `config`, built on the meta device: structure and shapes, no memory."""
    import torch

    cls = _model_class(config)
    kwargs = {"dtype": config.dtype} if isinstance(getattr(config, "dtype", None), torch.dtype) else {}
    with torch.device("meta"):
        return cls._from_config(config, **kwargs)


def _delta_config(path: Path) -> Any:
    """A delta config from a JSON file or from a checkpoint folder (ours, OpenDelta 0.3 or PEFT)."""
    from .auto import AutoDeltaConfig
    from .formats import open_checkpoint

    data = open_checkpoint(path, config_only=True).config if path.is_dir() else read_json_object(path)
    return AutoDeltaConfig.from_dict(data)


# ----- opendelta show ------------------------------------------------------------------------------
_CONFIG_FAMILIES = ("bert", "gpt2", "llama", "t5")


def _family_config(family: str, size: str) -> Any:
    """A transformers config: `tiny` (hidden 32, 2 layers) or `base` (bert-base, t5-base, gpt2, 1B Llama)."""
    import transformers as T

    tiny = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
            "vocab_size": 1000}
    configs = {
        ("bert", "tiny"): lambda: T.BertConfig(**tiny),
        ("bert", "base"): lambda: T.BertConfig(),
        ("gpt2", "tiny"): lambda: T.GPT2Config(vocab_size=1000, n_embd=32, n_layer=2, n_head=4, n_positions=64),
        ("gpt2", "base"): lambda: T.GPT2Config(),
        ("llama", "tiny"): lambda: T.LlamaConfig(**tiny, num_key_value_heads=2),
        ("llama", "base"): llama_1b_config,
        ("t5", "tiny"): lambda: T.T5Config(vocab_size=1000, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4),
        ("t5", "base"): lambda: T.T5Config(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12),
    }
    if (family, size) not in configs:
        raise UsageError(f"Unknown --config {family!r} / --size {size!r}; families: {', '.join(_CONFIG_FAMILIES)}, "
                         f"sizes: tiny, base.")
    config = configs[family, size]()
    config.architectures = [_FAMILY_CLASSES[family]]
    return config


_FAMILY_CLASSES = {"bert": "BertForSequenceClassification", "gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM",
                   "t5": "T5ForConditionalGeneration"}


def llama_1b_config() -> Any:
    """A Llama-3.2-1B-shaped config (1.24B parameters, tied embeddings)."""
    import transformers

    return transformers.LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                                    num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                                    tie_word_embeddings=True, dtype="bfloat16", architectures=["LlamaForCausalLM"])


def _show_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", metavar="MODEL_DIR",
                   help="a transformers model folder (config.json; no weights are read)")
    p.add_argument("--config", choices=_CONFIG_FAMILIES, metavar="FAMILY",
                   help=f"build the model from a config instead: {', '.join(_CONFIG_FAMILIES)}")
    p.add_argument("--size", choices=("tiny", "base"), default="tiny",
                   help="with --config: tiny (hidden 32, 2 layers) or base (bert-base, t5-base, gpt2, "
                        "1B Llama); default tiny")
    p.add_argument("--delta", metavar="CONFIG",
                   help="attach a delta first: a delta config .json file or a delta checkpoint folder")
    p.add_argument("--save", metavar="FILE", help="write the graph to FILE (.svg, .html or .txt) instead of "
                                                  "printing it")
    p.add_argument("--expand-params", action="store_true", help="one line per parameter")
    p.add_argument("--keep-non-params", action="store_true", help="also show modules without parameters")
    p.add_argument("--max-depth", type=int, metavar="N", help="show N levels below the root")
    p.add_argument("--only-trainable", action="store_true", help="show only what trains (with --delta: the "
                                                                 "delta and the modules it leaves unfrozen)")
    p.add_argument("--counts", action="store_true", help="add each line's parameter count")
    p.add_argument("--common-structure", action="store_true", help="use common module names across families")


def _show(args: argparse.Namespace) -> int:
    from .auto import AutoDeltaModel
    from .visualization import SAVE_FORMATS, Visualization

    if (args.model is None) == (args.config is None):
        raise UsageError("give either a MODEL_DIR or --config FAMILY (not both).")
    if args.save and Path(args.save).suffix.lower() not in SAVE_FORMATS:
        raise UsageError(f"--save {args.save!r}: the file name must end in {', '.join(SAVE_FORMATS)}.")
    if args.model is not None:
        model_dir = _existing(args.model, "MODEL_DIR")
        config, root = _model_config(model_dir), model_dir.resolve().name
    else:
        config, root = _family_config(args.config, args.size), f"{args.config}-{args.size}"
    delta_config = _delta_config(_existing(args.delta, "--delta")) if args.delta else None
    model = _meta_model(config)
    if delta_config is not None:
        delta = AutoDeltaModel.from_config(delta_config, backbone_model=model)
        delta.freeze_module(exclude=delta_config.unfrozen_modules, set_state_dict=False)
    options = dict(rootname=root, expand_params=args.expand_params, keep_non_params=args.keep_non_params,
                   max_depth=args.max_depth, only_trainable=args.only_trainable, show_counts=args.counts,
                   common_structure=args.common_structure)
    Visualization(model).structure_graph(printTree=not args.save, save=args.save, **options)
    if args.save:
        print(f"wrote {args.save}")
    return EXIT_OK


register_command(
    "show", _show, arguments=_show_arguments,
    help="print the folded module tree of a model (optionally with a delta attached)",
    description="Print the folded module tree of a transformers model: identical layers share one line, each "
                "line shows parameter shapes and dtype, and a footer counts total / trainable / delta parameters. "
                "The model is built on the meta device from its config, so no weights are read or allocated.",
    epilog="examples:\n"
           "  opendelta show ./my-bert\n"
           "  opendelta show --config llama --size base --counts\n"
           "  opendelta show ./my-t5 --delta lora.json --save t5_lora.svg")


# ----- opendelta inspect ---------------------------------------------------------------------------
def _inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT",
                   help="a delta checkpoint: a folder (opendelta, OpenDelta 0.3 or PEFT) or a Hub repo id")
    p.add_argument("--json", action="store_true", help="print everything as one JSON object")


def _inspect(args: argparse.Namespace) -> int:
    from .stats import human_bytes, inspect_checkpoint

    info = inspect_checkpoint(_checkpoint(args.checkpoint))
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return EXIT_OK
    cfg = info.config
    versions = ", ".join(f"{k.removesuffix('_version')} {cfg[k]}" for k in
                         ("opendelta_version", "transformers_version", "torch_version") if cfg.get(k))
    hash_line = cfg.get("backbone_hash") or "none stored (cannot be verified)"
    if cfg.get("backbone_hash"):
        hash_line += f" ({cfg.get('hash_algorithm') or 'OpenDelta 0.3 md5'})"
    rows = [("checkpoint", info.source),
            ("format", info.format),
            ("delta type", str(info.delta_type)),
            ("saved with", versions or "unknown versions"),
            ("backbone", f"{cfg.get('backbone_class') or 'unknown class'}"
                         + (f" ({cfg['backbone_checkpoint_name']})" if cfg.get("backbone_checkpoint_name") else "")),
            ("backbone hash", hash_line),
            ("fingerprint", f"{info.fingerprint_tensors} parameters recorded" if info.fingerprint_tensors is not None
                            else "no fingerprint.json (a mismatch cannot name the differing tensor)"),
            ("weights", f"{info.weights_file}: {len(info.tensors)} tensors, {info.num_parameters:,} parameters, "
                        f"{human_bytes(info.nbytes)}")]
    for key, value in rows:
        print(f"{key:<14} {value}")
    settings = {k: v for k, v in cfg.items() if k != "delta_type" and not k.startswith("backbone_")
                and k != "hash_algorithm" and not k.endswith("_version")}
    print("config")
    for key, value in settings.items():
        print(f"  {key} = {json.dumps(value)}")
    print("tensors")
    width = max((len(t.name) for t in info.tensors), default=0)
    for t in info.tensors:
        print(f"  {t.name:<{width}}  {str(list(t.shape)):<14} {t.dtype:<9} {human_bytes(t.nbytes):>10}")
    return EXIT_OK


register_command(
    "inspect", _inspect, arguments=_inspect_arguments,
    help="show what a delta checkpoint holds: config, tensors, backbone and hash (no backbone needed)",
    description="Show a delta checkpoint's type, settings, tensors (name, shape, dtype, size), the backbone it "
                "was trained on and its fingerprint. Only the config and the safetensors header are read.",
    epilog="examples:\n  opendelta inspect ./ckpt\n  opendelta inspect ./ckpt --json")


# ----- opendelta merge -----------------------------------------------------------------------------
def _merge_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT",
                   help="a checkpoint (folder or Hub repo id) of a mergeable delta (lora, ...)")
    p.add_argument("--backbone", required=True, metavar="MODEL_DIR",
                   help="the transformers model folder the delta was trained on")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the merged model to")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it already holds files")
    p.add_argument("--no-check-hash", action="store_true",
                   help="load even if the backbone differs from the one the delta was trained on")


def _merge(args: argparse.Namespace) -> int:
    from .auto import AutoDeltaModel, get_delta_class, registered_delta_types
    from .formats import open_checkpoint
    from .matching import is_delta_layer

    ckpt = _checkpoint(args.checkpoint)
    backbone_dir = _existing(args.backbone, "--backbone")
    out = Path(args.out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise CliError(f"--out {args.out!r} already exists and is not an empty folder; choose another folder "
                       f"or pass --overwrite.")
    delta_class = get_delta_class(open_checkpoint(ckpt, config_only=True).delta_type)
    if not delta_class.mergeable:
        mergeable = [t for t in registered_delta_types() if get_delta_class(t).mergeable]
        raise CliError(f"{delta_class.delta_type!r} deltas cannot be merged into the backbone weights; "
                       f"mergeable types: {', '.join(mergeable)}. Load it with AutoDeltaModel.from_finetuned "
                       f"instead.")
    config = _model_config(backbone_dir)
    model = _model_class(config).from_pretrained(str(backbone_dir))
    delta = AutoDeltaModel.from_finetuned(ckpt, backbone_model=model, check_hash=not args.no_check_hash)
    n_sites = len(delta.modified_module_names)
    delta.merge_and_unload()
    leftover = [n for n, m in model.named_modules() if is_delta_layer(m)]
    if leftover:  # pragma: no cover - guards the invariant the saved model relies on
        raise CliError(f"delta layers remain after merging ({leftover[:3]}); nothing was written.")
    _write_model_dir(out, model, backbone_dir, args.overwrite)
    print(f"merged {delta_class.delta_type} ({n_sites} modules) into {type(model).__name__}; "
          f"wrote {out} (loads with transformers alone)")
    return EXIT_OK


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".index.json")


def _write_model_dir(out: Path, model: Any, source_dir: Path, overwrite: bool) -> None:
    """`save_pretrained` into a temporary sibling folder, copy the source's tokenizer files, then swap in."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".saving", dir=out.parent))
    try:
        model.save_pretrained(str(tmp))
        for entry in source_dir.iterdir():  # tokenizer, README, ... : everything but weights and configs
            if entry.is_file() and not entry.name.endswith(_WEIGHT_SUFFIXES) and not (tmp / entry.name).exists():
                shutil.copy2(entry, tmp / entry.name)
        if out.exists():
            if not overwrite and (not out.is_dir() or any(out.iterdir())):
                raise CliError(f"--out {str(out)!r} was filled while merging; nothing was written.")
            old = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.old"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


register_command(
    "merge", _merge, arguments=_merge_arguments,
    help="merge a delta into its backbone and save a plain transformers model",
    description="Load the backbone from MODEL_DIR, load the delta checkpoint onto it (fingerprint-checked), fold "
                "the delta into the weights and save a plain transformers model that loads without opendelta. "
                "Only mergeable deltas (those whose update is a change of weights, such as lora) can be merged.",
    epilog="example:\n  opendelta merge ./ckpt --backbone ./my-bert --out ./my-bert-merged")


# ----- opendelta pick ------------------------------------------------------------------------------
def _pick_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", metavar="MODEL_DIR", help="a transformers model folder (no weights are read)")
    p.add_argument("--config", choices=_CONFIG_FAMILIES, metavar="FAMILY", help="build the model from a config "
                   f"instead: {', '.join(_CONFIG_FAMILIES)} (with --size tiny / base)")
    p.add_argument("--size", choices=("tiny", "base"), default="tiny", help="with --config; default tiny")
    p.add_argument("--delta", default="lora", metavar="TYPE|CONFIG",
                   help="a delta type (default lora) or a delta config .json whose settings to use")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a random free one)")
    p.add_argument("--timeout", type=float, default=900.0, metavar="S", help="give up after S seconds (default 900)")
    p.add_argument("--no-browser", action="store_true", help="only print the URL")
    p.add_argument("--out", metavar="FILE", help="also write the resulting config JSON to FILE")


def _pick(args: argparse.Namespace) -> int:
    from .auto import AutoDeltaConfig
    from .checkpoint import atomic_write_text
    from .picker import pick_config

    if (args.model is None) == (args.config is None):
        raise UsageError("give either a MODEL_DIR or --config FAMILY (not both).")
    config = _model_config(_existing(args.model, "MODEL_DIR")) if args.model else _family_config(args.config, args.size)
    delta = Path(args.delta).expanduser()
    delta_config = (_delta_config(delta) if delta.suffix == ".json" or delta.is_dir()
                    else AutoDeltaConfig.from_dict({"delta_type": args.delta}))
    picked = pick_config(_meta_model(config), delta_config, port=args.port, timeout=args.timeout,
                         open_browser=not args.no_browser)
    text = json.dumps(picked.to_diff_dict(), indent=2) + "\n"
    if args.out:
        atomic_write_text(Path(args.out), text)
    sys.stdout.write(text)
    return EXIT_OK


register_command(
    "pick", _pick, arguments=_pick_arguments,
    help="choose the modules to modify on a web page (the interactive module picker)",
    description="Serve the model's folded module tree on 127.0.0.1 (random port, one-time token in the URL), let "
                "you tick the modules the delta should modify, and print the resulting delta config JSON. The "
                "model is built on the meta device, so no weights are read.",
    epilog="examples:\n  opendelta pick ./my-t5 --delta adapter --out adapter.json\n"
           "  opendelta pick --config llama --size base --delta lora")


from . import train as _train_module  # noqa: E402

register_command(
    "train", _train_module.run_cli, arguments=_train_module.add_arguments,
    help="delta-tune a pretrained model on labelled text and report test accuracy",
    description="Train a delta (or the whole model with --full) and a classification head on a CSV / JSONL file "
                "(default: the embedded MiniLM-L6 on Rotten Tomatoes snippets), save the best epoch with "
                "save_finetuned, reload it onto a fresh backbone (hash-checked) and print test accuracy and sizes.",
    epilog="example:\n  opendelta train --delta lora --train-subset 4000 --epochs 2 --output runs/lora")
