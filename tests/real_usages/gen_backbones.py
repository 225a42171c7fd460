"""Writes backbones/<name>.safetensors for the families not taken from tests/fixtures/legacy03 (run once with the
legacy env: transformers 4.45.2). Only parameters are saved (tied copies once), seeded with torch.manual_seed(0)."""
import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _tiny as T

BUILD = {
    "t5_wide": lambda: transformers.T5ForConditionalGeneration(T.t5_wide_config()),
    "roberta_cls": lambda: transformers.RobertaForSequenceClassification(T.roberta_config(2)),
    "roberta_tok": lambda: transformers.RobertaForTokenClassification(T.roberta_config(5)),
    "deberta_v2_cls": lambda: transformers.DebertaV2ForSequenceClassification(T.deberta_v2_config(3)),
    "deberta_v2_tok": lambda: transformers.DebertaV2ForTokenClassification(T.deberta_v2_config(5)),
    "esm": lambda: transformers.EsmModel(T.esm_config(), add_pooling_layer=False),
    "opt": lambda: transformers.OPTForCausalLM(T.opt_config()),
    "llama": lambda: transformers.LlamaForCausalLM(T.llama_config()),
    "cpmbee": lambda: T.TinyCPMBeeTorch(),
}


def init_cpmbee(model):
    g = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        with torch.no_grad():
            if "layernorm" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 if p.dim() == 2 and "embedding" not in name else 0.5))


for name, build in BUILD.items():
    torch.manual_seed(0)
    model = build()
    if name == "cpmbee":
        init_cpmbee(model)
    seen, out = set(), {}
    for key, p in model.named_parameters(remove_duplicate=False):
        if p.data_ptr() in seen or key in T.UNUSED.get(name, ()):
            continue
        seen.add(p.data_ptr())
        out[key] = p.detach().clone().contiguous()
    path = T.BACKBONES / f"{name}.safetensors"
    save_file(out, str(path))
    print(name, len(out), path.stat().st_size)
