"""The `show`, `inspect` and `merge` subcommands (registered on import)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from ..io import write_folder
from .command import EXIT_OK, CliError, UsageError, register_command
from .models import (
    _CONFIG_FAMILIES,
    _backbone_of,
    _checkpoint,
    _delta_config,
    _existing,
    _family_config,
    _meta_model,
    _model_class,
    _model_config,
)


def _show_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model", nargs="?", metavar="MODEL_DIR", help="a transformers model folder (config.json; no weights are read)"
    )
    p.add_argument(
        "--config",
        choices=_CONFIG_FAMILIES,
        metavar="FAMILY",
        help=f"build the model from a config instead: {', '.join(_CONFIG_FAMILIES)}",
    )
    p.add_argument(
        "--size",
        choices=("tiny", "base"),
        default="tiny",
        help="with --config: tiny (hidden 32, 2 layers) or base (bert-base, t5-base, gpt2, 1B Llama); default tiny",
    )
    p.add_argument(
        "--delta", metavar="CONFIG", help="attach a delta first: a delta config .json file or a delta checkpoint folder"
    )
    p.add_argument(
        "--save", metavar="FILE", help="write the graph to FILE (.svg, .html or .txt) instead of printing it"
    )
    p.add_argument("--expand-params", action="store_true", help="one line per parameter")
    p.add_argument("--keep-non-params", action="store_true", help="also show modules without parameters")
    p.add_argument("--max-depth", type=int, metavar="N", help="show N levels below the root")
    p.add_argument(
        "--only-trainable",
        action="store_true",
        help="show only what trains (with --delta: the delta and the modules it leaves unfrozen)",
    )
    p.add_argument("--counts", action="store_true", help="add each line's parameter count")
    p.add_argument("--common-structure", action="store_true", help="use common module names across families")


def _show(args: argparse.Namespace) -> int:
    from ..auto import AutoDeltaModel
    from ..visualization import SAVE_FORMATS, Visualization

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
    prefer = _backbone_of(delta_config, config) if delta_config is not None else None
    model = _meta_model(config, prefer)
    if delta_config is not None:
        delta = AutoDeltaModel.from_config(delta_config, backbone_model=model)
        delta.freeze_module(exclude=delta_config.unfrozen_modules, set_state_dict=False)
    options = dict(
        rootname=root,
        expand_params=args.expand_params,
        keep_non_params=args.keep_non_params,
        max_depth=args.max_depth,
        only_trainable=args.only_trainable,
        show_counts=args.counts,
        common_structure=args.common_structure,
    )
    Visualization(model).structure_graph(printTree=not args.save, save=args.save, **options)
    if args.save:
        print(f"wrote {args.save}")
    return EXIT_OK


register_command(
    "show",
    _show,
    arguments=_show_arguments,
    help="print the folded module tree of a model (optionally with a delta attached)",
    description="Print the folded module tree of a transformers model: identical layers share one line, each "
    "line shows parameter shapes and dtype, and a footer counts total / trainable / delta parameters. "
    "The model is built on the meta device from its config, so no weights are read or allocated.",
    epilog="examples:\n"
    "  opendelta show ./my-bert\n"
    "  opendelta show --config llama --size base --counts\n"
    "  opendelta show ./my-t5 --delta lora.json --save t5_lora.svg",
)


# ----- opendelta inspect ---------------------------------------------------------------------------
def _inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint",
        metavar="CKPT",
        help="a delta checkpoint: a folder (opendelta, OpenDelta 0.3 or PEFT) or a Hub repo id",
    )
    p.add_argument("--json", action="store_true", help="print everything as one JSON object")


def _inspect(args: argparse.Namespace) -> int:
    from ..inspection import inspect_checkpoint
    from ..stats import human_bytes

    info = inspect_checkpoint(_checkpoint(args.checkpoint))
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return EXIT_OK
    cfg = info.config
    versions = ", ".join(
        f"{k.removesuffix('_version')} {cfg[k]}"
        for k in ("opendelta_version", "transformers_version", "torch_version")
        if cfg.get(k)
    )
    hash_line = cfg.get("backbone_hash") or "none stored (cannot be verified)"
    if cfg.get("backbone_hash"):
        hash_line += f" ({cfg.get('hash_algorithm') or 'OpenDelta 0.3 md5'})"
    rows = [
        ("checkpoint", info.source),
        ("format", info.format),
        ("delta type", str(info.delta_type)),
        ("saved with", versions or "unknown versions"),
        (
            "backbone",
            f"{cfg.get('backbone_class') or 'unknown class'}"
            + (f" ({cfg['backbone_checkpoint_name']})" if cfg.get("backbone_checkpoint_name") else ""),
        ),
        ("backbone hash", hash_line),
        (
            "fingerprint",
            f"{info.fingerprint_tensors} parameters recorded"
            if info.fingerprint_tensors is not None
            else "no fingerprint.json (a mismatch cannot name the differing tensor)",
        ),
        (
            "weights",
            f"{info.weights_file}: {len(info.tensors)} tensors, {info.num_parameters:,} parameters, "
            f"{human_bytes(info.nbytes)}",
        ),
    ]
    for key, value in rows:
        print(f"{key:<14} {value}")
    settings = {
        k: v
        for k, v in cfg.items()
        if k != "delta_type" and not k.startswith("backbone_") and k != "hash_algorithm" and not k.endswith("_version")
    }
    print("config")
    for key, value in settings.items():
        print(f"  {key} = {json.dumps(value)}")
    print("tensors")
    width = max((len(t.name) for t in info.tensors), default=0)
    for t in info.tensors:
        print(f"  {t.name:<{width}}  {str(list(t.shape)):<14} {t.dtype:<9} {human_bytes(t.nbytes):>10}")
    return EXIT_OK


register_command(
    "inspect",
    _inspect,
    arguments=_inspect_arguments,
    help="show what a delta checkpoint holds: config, tensors, backbone and hash (no backbone needed)",
    description="Show a delta checkpoint's type, settings, tensors (name, shape, dtype, size), the backbone it "
    "was trained on and its fingerprint. Only the config and the safetensors header are read.",
    epilog="examples:\n  opendelta inspect ./ckpt\n  opendelta inspect ./ckpt --json",
)


# ----- opendelta merge -----------------------------------------------------------------------------
def _merge_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint", metavar="CKPT", help="a checkpoint (folder or Hub repo id) of a mergeable delta (lora, ...)"
    )
    p.add_argument(
        "--backbone", required=True, metavar="MODEL_DIR", help="the transformers model folder the delta was trained on"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the merged model to")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it already holds files")
    p.add_argument(
        "--no-check-hash",
        action="store_true",
        help="load even if the backbone differs from the one the delta was trained on",
    )


def _merge(args: argparse.Namespace) -> int:
    from ..auto import AutoDeltaModel
    from ..errors import HashMismatchError
    from ..formats import open_checkpoint
    from ..matching import is_delta_layer
    from ..registry import get_delta_class, registered_delta_types

    ckpt = _checkpoint(args.checkpoint)
    backbone_dir = _existing(args.backbone, "--backbone")
    out = Path(args.out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise CliError(
            f"--out {args.out!r} already exists and is not an empty folder; choose another folder or pass --overwrite."
        )
    delta_config = open_checkpoint(ckpt, config_only=True).config
    delta_class = get_delta_class(delta_config.get("delta_type"))
    if not delta_class.mergeable:
        mergeable = [t for t in registered_delta_types() if get_delta_class(t).mergeable]
        raise CliError(
            f"{delta_class.delta_type!r} deltas cannot be merged into the backbone weights; "
            f"mergeable types: {', '.join(mergeable)}. Load it with AutoDeltaModel.from_finetuned "
            f"instead."
        )
    config = _model_config(backbone_dir)
    head = {k: v for k, v in (delta_config.get("backbone_kwargs") or {}).items() if k != "num_labels"}
    if "id2label" in head:
        head["id2label"] = {int(k): v for k, v in head["id2label"].items()}
    cls = _model_class(config, delta_config.get("backbone_class"))  # the class the delta was trained on
    model = cls.from_pretrained(str(backbone_dir), **head)
    try:
        delta = AutoDeltaModel.from_finetuned(ckpt, backbone_model=model, check_hash=not args.no_check_hash)
    except HashMismatchError as exc:  # the library's advice names its keyword; here the flag is the way
        raise CliError(str(exc).replace("pass check_hash=False", "pass --no-check-hash")) from None
    n_sites = len(delta.modified_module_names)
    delta.merge_and_unload()
    leftover = [n for n, m in model.named_modules() if is_delta_layer(m)]
    if leftover:  # pragma: no cover - guards the invariant the saved model relies on
        raise CliError(f"delta layers remain after merging ({leftover[:3]}); nothing was written.")
    _write_model_dir(out, model, backbone_dir, args.overwrite)
    print(
        f"merged {delta_class.delta_type} ({n_sites} modules) into {type(model).__name__}; "
        f"wrote {out} (loads with transformers alone)"
    )
    return EXIT_OK


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".index.json")


def _write_model_dir(out: Path, model: Any, source_dir: Path, overwrite: bool) -> None:
    """`save_pretrained` into a temporary sibling folder, copy the source's tokenizer files, then swap in."""

    def write(tmp: Path) -> None:
        if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
            raise CliError(f"--out {str(out)!r} was filled while merging; nothing was written.")
        model.save_pretrained(str(tmp))
        for entry in source_dir.iterdir():  # tokenizer, README, ... : everything but weights and configs
            if entry.is_file() and not entry.name.endswith(_WEIGHT_SUFFIXES) and not (tmp / entry.name).exists():
                shutil.copy2(entry, tmp / entry.name)

    if out.exists() and not out.is_dir():
        raise CliError(f"--out {str(out)!r} is a file; remove it or choose a folder.")
    write_folder(out, write, keep=lambda entry: False)  # nothing of an overwritten folder is carried over


register_command(
    "merge",
    _merge,
    arguments=_merge_arguments,
    help="merge a delta into its backbone and save a plain transformers model",
    description="Load the backbone from MODEL_DIR, load the delta checkpoint onto it (fingerprint-checked), fold "
    "the delta into the weights and save a plain transformers model that loads without opendelta. "
    "Only mergeable deltas (those whose update is a change of weights, such as lora) can be merged.",
    epilog="example:\n  opendelta merge ./ckpt --backbone ./my-bert --out ./my-bert-merged",
)
