"""What module names meant in OpenDelta 0.3 configs: its common-structure names ("attn@", "ff@.w2@") and its
matching rules. Applied only to configs read from 0.3 checkpoints, so a delta lands on the modules it was
trained on (0.3's `attn@` on T5 is the whole `layer.0` sub-layer, not `SelfAttention`; its `ff@` on BERT is
both `intermediate` and `output`).

0.3 translated a raw module name into its common spelling component by component with a per-class tree (below,
written from 0.3's documented behaviour), kept untranslated components as they were, and then tested every
`modified_modules` entry as a whole dotted suffix of that spelling ("[r]" entries: a regex match that ends at
the end of the name on a component boundary). `exclude_modules` entries were a plain prefix test on the raw
name. Every module of `named_modules()` was tested, nested ones included.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from torch import nn

from .matching import is_delta_layer

# A tree node: raw path (one or more dotted components) -> (0.3 common name, child nodes, virtual name).
# A common name "" means "no common name" (the raw component is kept); "$" children: any block index.
Node = Mapping[str, tuple]


def _n(name: str, children: Node | None = None, virtual: str | None = None) -> tuple:
    return (name, children or {}, virtual)


def _t5_attn(module: str, kind: str) -> tuple:
    return _n(
        kind,
        {
            f"{module}.q": _n("q"),
            f"{module}.k": _n("k"),
            f"{module}.v": _n("v"),
            f"{module}.o": _n("proj"),
            f"{module}.relative_attention_bias": _n(""),
            "layer_norm": _n("layer_norm"),
        },
    )


_T5_FF = _n("ff", {"DenseReluDense.wi": _n("w1"), "layer_norm": _n("layer_norm"), "DenseReluDense.wo": _n("w2")})


def _t5_stack(name: str, decoder: bool) -> tuple:
    block = {"layer.0": _t5_attn("SelfAttention", "attn")}
    if decoder:
        block |= {"layer.1": _t5_attn("EncDecAttention", "crossattn"), "layer.2": _T5_FF}
    else:
        block |= {"layer.1": _T5_FF}
    return _n(
        name,
        {
            "embed_tokens": _n("embeddings"),
            "block": _n("block", {"$": _n("$", block)}),
            "final_layer_norm": _n("layer_norm"),
        },
    )


def _bert(q: str, k: str, v: str, deberta: bool = False) -> Node:
    block = {
        "attention": _n(
            "attn",
            {
                f"self.{q}": _n("q"),
                f"self.{k}": _n("k"),
                f"self.{v}": _n("v"),
                "output.dense": _n("proj"),
                "output.LayerNorm": _n("layer_norm"),
            },
        ),
        "output": _n("ff", {"dense": _n("w2"), "LayerNorm": _n("layer_norm")}),
    }
    if deberta:
        block["intermediate.dense"] = _n("ff.w1")
    else:
        block["intermediate"] = _n("ff", {"dense": _n("w1")})
    encoder: dict = {"layer": _n("block", {"$": _n("$", block)})}
    if deberta:
        encoder |= {
            "rel_embeddings": _n(""),
            "LayerNorm": _n(""),
            "conv": _n("", {"conv": _n(""), "LayerNorm": _n("")}),
        }
    top = {"embeddings.word_embeddings": _n("embeddings"), "embeddings.LayerNorm": _n("")}
    if not deberta:
        top |= {"embeddings.position_embeddings": _n(""), "embeddings.token_type_embeddings": _n("")}
    return top | {"encoder": _n("encoder", encoder)}


_T5 = {"shared": _n("embeddings"), "encoder": _t5_stack("encoder", False), "decoder": _t5_stack("decoder", True)}
_GPT2 = {
    "wte": _n("embeddings"),
    "wpe": _n(""),
    "h": _n(
        "decoder.block",
        {
            "$": _n(
                "$",
                {
                    "attn": _n("attn", {"c_attn": _n("q,k,v"), "c_proj": _n("proj")}),
                    "ln_1": _n("attn.layer_norm"),
                    "mlp": _n("ff", {"c_fc": _n("w1"), "c_proj": _n("w2")}),
                    "ln_2": _n("ff.layer_norm"),
                },
            )
        },
    ),
    "ln_f": _n("decoder.layer_norm"),
}
_OPT = {
    "decoder.embed_tokens": _n("embeddings"),
    "decoder.embed_positions": _n(""),
    "decoder.project_out": _n(""),
    "decoder.project_in": _n(""),
    "decoder": _n(
        "decoder",
        {
            "layers": _n(
                "block",
                {
                    "$": _n(
                        "$",
                        {
                            "self_attn": _n(
                                "attn",
                                {"q_proj": _n("q"), "k_proj": _n("k"), "v_proj": _n("v"), "out_proj": _n("proj")},
                            ),
                            "self_attn_layer_norm": _n("layer_norm"),
                            "fc1": _n("ff.w1", virtual="ff"),
                            "fc2": _n("ff.w2", virtual="ff"),
                            "final_layer_norm": _n("layer_norm"),
                        },
                    )
                },
            )
        },
    ),
}
_T5_ENCODER = {"shared": _n("embeddings"), "encoder": _t5_stack("encoder", False)}

#: base-model class name -> 0.3's common-structure tree (0.3 knew exactly these classes)
TREES: dict[str, Node] = {
    "T5Model": _T5,
    "T5ForConditionalGeneration": _T5,
    "T5EncoderModel": _T5_ENCODER,
    "BertModel": _bert("query", "key", "value"),
    "RobertaModel": _bert("query", "key", "value"),
    "DebertaV2Model": _bert("query_proj", "key_proj", "value_proj", deberta=True),
    "GPT2Model": _GPT2,
    "OPTModel": _OPT,
}


def _mark(name: str) -> str:
    return ".".join(f"{part}@" for part in name.split("."))


def _translate(rel: str, tree: Node) -> tuple[str, str | None]:
    """(0.3 common spelling of the relative name `rel`, its virtual spelling or None)."""
    node: Node = tree
    out: list[str] = []
    virtual: str | None = None
    pending = ""
    for part in rel.split("."):
        pending = f"{pending}.{part}" if pending else part
        if pending in node:
            name, children, virt = node[pending]
            if virt is not None:
                virtual = ".".join([*out, _mark(virt)])
            out.append(_mark(name) if name else pending)
            node, pending = children, ""
        elif "$" in node:
            out.append(pending)
            node, pending = node["$"][1], ""
    if pending:
        out.append(pending)
    return ".".join(out), virtual


def _bases(model: nn.Module) -> list[tuple[str, Node]]:
    """(path, tree) of the outermost modules 0.3 had a tree for (searched from the root down)."""
    found: list[tuple[str, Node]] = []

    def visit(prefix: str, module: nn.Module) -> None:
        tree = TREES.get(type(module).__name__)
        if tree is not None:
            found.append((prefix, tree))
            return
        for name, child in module.named_children():
            if not is_delta_layer(child):
                visit(f"{prefix}.{name}" if prefix else name, child)

    visit("", model)
    return found


def common_spelling(name: str, bases: list[tuple[str, Node]]) -> tuple[str, str | None]:
    """0.3's common spelling of the raw module name `name` (unchanged outside a known base model)."""
    for path, tree in bases:
        if path == "":
            return _translate(name, tree)
        if name.startswith(path + ".") and len(name) > len(path) + 1:
            spelled, virtual = _translate(name[len(path) + 1 :], tree)
            return f"{path}.{spelled}", (f"{path}.{virtual}" if virtual else None)
    return name, None


def _first_search_match(name: str, entry: str) -> bool:
    m = re.search(entry[3:], name)
    return m is not None and m.end() == len(name) and (m.start() == 0 or name[m.start() - 1] == ".")


def matches(name: str, entries: Iterable[str]) -> bool:
    """0.3's test of a (translated) name against `modified_modules` entries."""
    for e in entries:
        if e.startswith("[r]"):
            if _first_search_match(name, e):
                return True
        elif name == e or name.endswith("." + e):
            return True
    return False


def has_tree(model: nn.Module) -> bool:
    return bool(_bases(model))


def resolve(model: nn.Module, modified: list[str], exclude: list[str] | None, common_structure: bool) -> list[str]:
    """The raw names of the modules 0.3 would have modified on `model`, in `named_modules()` order."""
    bases = _bases(model) if common_structure else []
    out: list[str] = []
    for name, _ in model.named_modules():
        if not name or any(is_delta_layer(m) for m in _path_modules(model, name)):
            continue
        if any(name.startswith(x) for x in exclude or []):
            continue
        spelled, virtual = common_spelling(name, bases) if common_structure else (name, None)
        if matches(spelled, modified) or (virtual is not None and matches(virtual, modified)):
            out.append(name)
    return out


def _path_modules(model: nn.Module, name: str) -> list[nn.Module]:
    parts = name.split(".")
    return [model.get_submodule(".".join(parts[:i])) for i in range(1, len(parts) + 1)]
