"""Model folders and configs for the commands: reading a model folder's config, building a model on the
meta device, the tiny / base configs of `opendelta show --config`, and checkpoint arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import read_json_object
from .command import CliError, UsageError


def _existing(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"{what} {path!r} does not exist.")
    return p


def _checkpoint(text: str) -> str:
    """A delta checkpoint argument: an existing folder, or a Hub repo id (`Org/name`)."""
    from ..hub import validate_repo_id

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
        raise CliError(
            f"{str(model_dir)!r} is not a transformers model folder (no config.json); "
            f"save one with `model.save_pretrained(folder)`."
        )
    if "delta_type" in read_json_object(model_dir / "config.json"):
        raise CliError(
            f"{str(model_dir)!r} is a delta checkpoint, not a model folder; pass the backbone's "
            f"folder and the checkpoint as `--delta {model_dir}` (show) or CKPT (merge)."
        )
    try:
        return transformers.AutoConfig.from_pretrained(str(model_dir))
    except (OSError, ValueError, KeyError) as exc:
        raise CliError(f"Cannot read the model config in {str(model_dir)!r}: {str(exc).splitlines()[0]}") from None


def _model_class(config: Any, prefer: str | None = None) -> Any:
    """The transformers class `prefer` (a delta checkpoint's `backbone_class`), else the class named in
    `config.architectures` (e.g. BertForSequenceClassification), else AutoModel's."""
    import transformers

    for arch in [prefer] if prefer and getattr(transformers, prefer, None) is not None else []:
        return getattr(transformers, arch)
    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    try:
        return transformers.AutoModel._model_mapping[type(config)]
    except KeyError:
        raise CliError(
            f"transformers has no model class for {type(config).__name__} "
            f"(architectures={getattr(config, 'architectures', None)})."
        ) from None


def _meta_model(config: Any, prefer: str | None = None) -> Any:
    """The model described by `config` (of class `prefer` when transformers has it), built on the meta device:
    structure and shapes, no memory."""
    import torch

    cls = _model_class(config, prefer)
    kwargs = {"dtype": config.dtype} if isinstance(getattr(config, "dtype", None), torch.dtype) else {}
    with torch.device("meta"):
        return cls._from_config(config, **kwargs)


def _backbone_of(delta_config: Any, model_config: Any) -> str | None:
    """The checkpoint's backbone class; `model_config` takes the head settings it was trained with."""
    for key, value in (getattr(delta_config, "backbone_kwargs", None) or {}).items():
        value = {int(k): v for k, v in value.items()} if key == "id2label" else value
        if key in ("id2label", "label2id"):  # num_labels follows from id2label
            setattr(model_config, key, value)
    return getattr(delta_config, "backbone_class", None)


def _delta_config(path: Path) -> Any:
    """A delta config from a JSON file or from a checkpoint folder (ours, OpenDelta 0.3 or PEFT)."""
    from ..auto import AutoDeltaConfig
    from ..formats import open_checkpoint

    data = open_checkpoint(path, config_only=True).config if path.is_dir() else read_json_object(path)
    return AutoDeltaConfig.from_dict(data)


_CONFIG_FAMILIES = ("bert", "gpt2", "llama", "t5")


def _family_config(family: str, size: str) -> Any:
    """A transformers config: `tiny` (hidden 32, 2 layers) or `base` (bert-base, t5-base, gpt2, 1B Llama)."""
    import transformers as T

    tiny = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "vocab_size": 1000,
    }
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
        raise UsageError(
            f"Unknown --config {family!r} / --size {size!r}; families: {', '.join(_CONFIG_FAMILIES)}, "
            f"sizes: tiny, base."
        )
    config = configs[family, size]()
    config.architectures = [_FAMILY_CLASSES[family]]
    return config


_FAMILY_CLASSES = {
    "bert": "BertForSequenceClassification",
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
    "t5": "T5ForConditionalGeneration",
}


def llama_1b_config() -> Any:
    """A Llama-3.2-1B-shaped config (1.24B parameters, tied embeddings)."""
    import transformers

    return transformers.LlamaConfig(
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=True,
        dtype="bfloat16",
        architectures=["LlamaForCausalLM"],
    )
