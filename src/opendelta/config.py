"""DeltaConfig: the typed, validated description of a delta, with a dict / JSON round trip."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Union

from ._logging import logger
from .errors import DeltaConfigError
from .providers import provider

# Keys the library writes itself or that older OpenDelta versions wrote; accepted on load, not user settings.
_BOOKKEEPING_KEYS = frozenset(
    {"delta_type", "opendelta_version", "transformers_version", "torch_version", "format_version"}
)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return f"list of {_type_name(inner)}"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def _conforms(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_conforms(value, a) for a in typing.get_args(tp))
    if origin is Literal:
        return value in typing.get_args(tp)
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(_conforms(v, inner) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


#: how close an unknown key must be to a valid one to count as its typo (difflib ratio: `lora_rank` ~ `lora_r` is
#: 0.8, `modified_module` ~ `modified_modules` 0.97, while `dropout` ~ `lora_dropout` is 0.74)
NEAR_MISS = 0.8


def near_miss(key: str, valid: list[str]) -> str | None:
    """The valid key `key` is probably a typo of, or None."""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=NEAR_MISS)
    return close[0] if close else None


def split_unknown(
    kind: str, given: dict[str, Any], valid: list[str], strict: bool, what: str = "key"
) -> dict[str, Any]:
    """The entries of `given` whose keys are in `valid`. Of the others, a near miss of a valid key is an error
    (dropping it would silently change the delta), and so is every one with `strict=True`; the rest are dropped
    with one warning, as OpenDelta 0.3 did (people pass whole training configs, e.g. `vars(args)`)."""
    unknown = [k for k in given if k not in valid]
    if not unknown:
        return dict(given)
    typos = {k: near_miss(k, valid) for k in unknown}
    typos = {k: v for k, v in typos.items() if v is not None}
    if typos or strict:
        named = [f"`{k}`" + (f" (did you mean `{typos[k]}`?)" if k in typos else "") for k in (typos or unknown)]
        rest = [k for k in unknown if k not in typos]
        raise DeltaConfigError(
            f"{kind}: unknown {what}(s) {', '.join(named)}. Valid keys: {', '.join(valid)}."
            + (f" (The other unknown keys, {', '.join(rest)}, would be ignored.)" if typos and rest else "")
            + ("" if typos else " Drop `strict=True` to ignore keys that are not settings of this delta type.")
        )
    logger.warning(
        "%s: ignoring %s(s) that are not settings of this delta type: %s (pass strict=True to make them an error)",
        kind,
        what,
        ", ".join(unknown),
    )
    return {k: v for k, v in given.items() if k in valid}


class _ConfigMeta(type):
    """Lets a config class take its own settings positionally, in OpenDelta 0.3's order (`positional_keys`), and
    drops the keys 0.3 accepted without using them (`ignored_keys`)."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if args:
            order = cls.positional_order()
            if len(args) > len(order):
                raise TypeError(
                    f"{cls.__name__}() takes {len(order)} positional setting(s) ({', '.join(order) or 'none'}), "
                    f"got {len(args)}; pass the others by name."
                )
            for key, value in zip(order, args):
                if key in kwargs:
                    raise TypeError(f"{cls.__name__}() got multiple values for {key!r}")
                kwargs[key] = value
        ignored = [k for k in kwargs if k in cls.ignored_keys]
        if ignored:
            logger.info("%s: ignoring %s (OpenDelta 0.3 took them but never used them)", cls.__name__, ignored)
            kwargs = {k: v for k, v in kwargs.items() if k not in cls.ignored_keys}
        return super().__call__(**kwargs)


#: the largest integer a setting may hold (sizes, counts): beyond it no tensor could be allocated anyway
MAX_INT_SETTING = 2**31 - 1


def _check_number(config: DeltaConfig, key: str, value: Any) -> None:
    """No setting is NaN or infinite (it would turn every output into NaN), and no integer is absurdly large."""
    if isinstance(value, float) and not math.isfinite(value):
        raise DeltaConfigError(f"{config._kind()}: `{key}`={value!r} is not a finite number; use a finite value.")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT_SETTING:
        raise DeltaConfigError(
            f"{config._kind()}: `{key}`={value} is too large (the limit is {MAX_INT_SETTING}); use a size that fits "
            f"the model."
        )


@dataclass
class DeltaConfig(metaclass=_ConfigMeta):
    """Settings shared by every delta type. Subclasses add their own fields and `_validate` rules.

    modified_modules: module addresses the delta is attached to (dotted-suffix names, or "[r]regex").
    exclude_modules: addresses removed from the matches.
    unfrozen_modules: what `freeze_module` leaves trainable and `save_finetuned` saves ("deltas" = the delta).
    common_structure: interpret names in the common vocabulary (None: decide automatically).
    delta_dtype: "float32" (default): delta parameters on a float16 / bfloat16 backbone are float32 (the forward
        casts); "backbone": they take the backbone's dtype.
    backbone_*: filled in at save time to identify the model the delta was trained on; `backbone_kwargs` holds the
        `from_pretrained` keywords its task head needs (num_labels, id2label, label2id) when the head was trained.
    """

    delta_type: ClassVar[str] = ""
    #: the settings `Config(a, b, ...)` takes positionally, in OpenDelta 0.3's order (None: the class's own fields)
    positional_keys: ClassVar[tuple[str, ...] | None] = (
        "modified_modules",
        "exclude_modules",
        "unfrozen_modules",
        "common_structure",
        "backbone_class",
        "backbone_checkpoint_name",
        "backbone_hash",
    )
    #: OpenDelta 0.3 keys of this type that it accepted but never used: dropped with a log line
    ignored_keys: ClassVar[frozenset[str]] = frozenset()

    modified_modules: list[str] | None = None
    exclude_modules: list[str] | None = None
    unfrozen_modules: list[str] = field(default_factory=lambda: ["deltas"])
    common_structure: bool | None = None
    delta_dtype: Literal["float32", "backbone"] = "float32"
    backbone_class: str | None = None
    backbone_checkpoint_name: str | None = None
    backbone_kwargs: dict[str, Any] | None = None
    backbone_hash: str | None = None
    hash_algorithm: str | None = None

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):  # tuples read naturally as lists in Python configs
                value = list(value)
                setattr(self, f.name, value)
            if isinstance(value, int) and not isinstance(value, bool) and hints[f.name] is float:
                setattr(self, f.name, float(value))
            if not _conforms(value, hints[f.name]):
                raise DeltaConfigError(
                    f"{self._kind()}: `{f.name}` must be {_type_name(hints[f.name])}, got {value!r} "
                    f"({type(value).__name__})."
                )
            _check_number(self, f.name, getattr(self, f.name))
        self._validate()

    # ----- validation helpers -------------------------------------------------------------
    @classmethod
    def _kind(cls) -> str:
        return f"{cls.__name__} (delta_type={cls.delta_type!r})" if cls.delta_type else cls.__name__

    def _require(self, ok: bool, key: str, expected: str) -> None:
        if not ok:
            raise DeltaConfigError(f"{self._kind()}: invalid `{key}`={getattr(self, key)!r}; expected {expected}.")

    def _validate(self) -> None:
        for key in ("modified_modules", "exclude_modules", "unfrozen_modules"):
            value = getattr(self, key)
            self._require(value is None or all(v.strip() for v in value), key, "non-empty module names")

    # ----- dict / json round trip ---------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def positional_order(cls) -> tuple[str, ...]:
        """The settings this class takes positionally (OpenDelta 0.3's order)."""
        if "positional_keys" in cls.__dict__ and cls.positional_keys is not None:
            return cls.positional_keys
        base = {f.name for f in dataclasses.fields(DeltaConfig)}
        return tuple(n for n in cls.field_names() if n not in base)

    @classmethod
    def from_dict(
        cls, config_dict: dict[str, Any], return_unused_kwargs: bool = False, strict: bool = False, **kwargs: Any
    ) -> Any:
        """Build a config from a dict (and keyword overrides).

        Keys that are not settings of this type: a near miss of a valid key (`lora_rank` for `lora_r`) is a
        DeltaConfigError with did-you-mean; any other is dropped with one warning naming them all (OpenDelta 0.3's
        rule: a whole training config or `vars(args)` may be passed); `strict=True` makes every unknown key an
        error; `return_unused_kwargs=True` (as in transformers) returns (config, {unknown key: value}) instead."""
        if not isinstance(config_dict, dict):
            raise DeltaConfigError(f"{cls._kind()}: expected a dict, got {type(config_dict).__name__}.")
        merged = {**config_dict, **kwargs}
        given_type = merged.get("delta_type")
        if cls.delta_type and given_type is not None and given_type != cls.delta_type:
            raise DeltaConfigError(
                f"{cls.__name__} is for delta_type={cls.delta_type!r}, but the dict says {given_type!r}; "
                f"use AutoDeltaConfig.from_dict to pick the class from `delta_type`."
            )
        names = cls.field_names()
        settings = {k: v for k, v in merged.items() if k not in _BOOKKEEPING_KEYS and k not in cls.ignored_keys}
        if return_unused_kwargs:
            return cls(**{k: v for k, v in settings.items() if k in names}), {
                k: v for k, v in settings.items() if k not in names
            }
        return cls(**split_unknown(cls._kind(), settings, names, strict))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"delta_type": self.delta_type}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, list) else value
        return out

    def to_diff_dict(self) -> dict[str, Any]:
        """Only the keys whose value differs from the class default (plus `delta_type`)."""
        default = type(self)()
        full = self.to_dict()
        return {k: v for k, v in full.items() if k == "delta_type" or v != getattr(default, k)}

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    # ----- OpenDelta 0.3's spellings ----------------------------------------------------------------
    def to_json_string(self, use_diff: bool = True) -> str:
        """The config as JSON (only the keys that differ from the defaults with `use_diff`), sorted, as 0.3."""
        return json.dumps(self.to_diff_dict() if use_diff else self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike, use_diff: bool = True) -> None:
        with open(json_file_path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string(use_diff=use_diff))

    def dict_torch_dtype_to_str(self, d: dict[str, Any]) -> None:
        """In place: a `torch_dtype` value that is a torch.dtype becomes its name ("float16")."""
        dtype = d.get("torch_dtype")
        if dtype is not None and not isinstance(dtype, str):
            d["torch_dtype"] = str(dtype).removeprefix("torch.")

    def update(self, config_dict: dict[str, Any]) -> None:
        """Set the given keys in place, validated: the whole config is rebuilt first, so a bad value changes
        nothing."""
        fresh = type(self).from_dict({**self.to_dict(), **config_dict}, strict=True)
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(fresh, f.name))

    def save_finetuned(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Write `config.json` (all keys) into `save_directory` (0.3's config-only save)."""
        if kwargs:
            raise TypeError(f"DeltaConfig.save_finetuned() got unexpected keyword(s) {sorted(kwargs)}")
        os.makedirs(save_directory, exist_ok=True)
        self.to_json_file(os.path.join(save_directory, "config.json"), use_diff=False)

    @classmethod
    def get_config_dict(cls, finetuned_delta_path: str | os.PathLike, **kwargs: Any) -> tuple[dict[str, Any], dict]:
        """(the checkpoint's config as a dict, the keywords not used), as 0.3 returned them."""
        config = cls.from_finetuned(finetuned_delta_path, **kwargs)
        return config.to_dict(), {}

    def replace(self, **changes: Any) -> DeltaConfig:
        """A validated copy with some fields changed."""
        return type(self).from_dict({**self.to_dict(), **changes})

    # ----- files ----------------------------------------------------------------------------
    @classmethod
    def from_finetuned(cls, finetuned_delta_path: str | os.PathLike, **kwargs: Any) -> DeltaConfig:
        """The config of a checkpoint folder (ours, OpenDelta 0.3 or PEFT) or Hub repo id `Org/name`.

        kwargs: the Hub options `revision`, `cache_dir`, `force_download`, `local_files_only`, `token`;
        any other keyword overrides a config key.
        """
        config, overrides = provider("read_checkpoint_config")(finetuned_delta_path, kwargs)
        return cls.from_dict(config, **overrides)

    def __repr__(self) -> str:  # compact: only what differs from the defaults
        inner = ", ".join(f"{k}={v!r}" for k, v in self.to_diff_dict().items() if k != "delta_type")
        return f"{type(self).__name__}({inner})"
