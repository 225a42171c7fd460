"""Real OpenDelta 0.3.2 checkpoints (tests/fixtures/legacy03, written by opendelta==0.3.2 on transformers 4.45.2):
each one loads with `AutoDeltaModel.from_finetuned` onto the identical tiny backbone and reproduces 0.3.2's output.

The backbone is rebuilt from its transformers config (as tests/conftest.py builds it) and then given the exact
weights 0.3.2 used (backbones/<family>.safetensors), so the comparison does not depend on how a transformers
version initialises weights.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

from opendelta import AutoDeltaConfig, AutoDeltaModel

CORPUS = Path(__file__).parent / "fixtures" / "legacy03"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
FIXTURES = MANIFEST["fixtures"]


HIDDEN, LAYERS, HEADS, VOCAB = 32, 2, 4, 99
# the tiny backbones exactly as generate.py built them under transformers 4.45 (BERT / GPT-2 with 64 positions)
BUILDERS = {
    "t5": lambda: transformers.T5ForConditionalGeneration(
        transformers.T5Config(
            vocab_size=VOCAB,
            d_model=HIDDEN,
            d_kv=HIDDEN // HEADS,
            d_ff=64,
            num_layers=LAYERS,
            num_decoder_layers=LAYERS,
            num_heads=HEADS,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        )
    ),
    "bert": lambda: transformers.BertForSequenceClassification(
        transformers.BertConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    ),
    "gpt2": lambda: transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            vocab_size=VOCAB,
            n_embd=HIDDEN,
            n_layer=LAYERS,
            n_head=HEADS,
            n_positions=64,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
        )
    ),
}


def backbone(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = BUILDERS[family]()
    weights = load_file(str(CORPUS / MANIFEST["backbones"][family]["weights"]))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # keys a transformers version adds or drops (tied weights, buffers) must not be real weights
    assert not unexpected, unexpected
    assert all(k.endswith(("lm_head.weight", "position_ids")) or "embed_tokens" in k for k in missing), missing
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    model.eval()
    return model


@pytest.mark.parametrize("entry", FIXTURES, ids=[f["name"] for f in FIXTURES])
def test_legacy_0_3_2_checkpoint_reproduces_its_output(entry, caplog):
    model = backbone(entry["family"])
    assert type(model).__name__ == entry["model_class"]
    inputs = load_file(str(CORPUS / entry["inputs"]))
    expected = load_file(str(CORPUS / entry["expected"]))["logits"]
    with caplog.at_level(logging.WARNING, logger="opendelta"):
        AutoDeltaModel.from_finetuned(CORPUS / entry["checkpoint"], backbone_model=model, check_hash=True)
    # 0.3's md5 cannot be recomputed here: it is reported as unverifiable, never as a mismatch
    assert not any("mismatch" in r.getMessage().lower() for r in caplog.records)
    model.eval()
    with torch.no_grad():
        out = model(**inputs).logits
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("entry", FIXTURES, ids=lambda e: e["checkpoint"].split("/")[-1])
def test_a_0_3_config_dict_keeps_0_3_meanings_through_from_dict(entry):
    """The config.json 0.3 wrote, through AutoDeltaConfig.from_dict + AutoDeltaModel.from_config, modifies the
    modules that from_finetuned puts the checkpoint on (0.3's common names and matching rules)."""
    folder = CORPUS / entry["checkpoint"]
    data = json.loads((folder / "config.json").read_text())
    assert data.get("opendelta_version", "").startswith("0.")
    loaded = AutoDeltaModel.from_finetuned(folder, backbone_model=backbone(entry["family"]), check_hash=False)
    built = AutoDeltaModel.from_config(AutoDeltaConfig.from_dict(data), backbone_model=backbone(entry["family"]))
    assert built.modified_module_names == loaded.modified_module_names
    assert [n for n, _ in built.delta_modules()] == [n for n, _ in loaded.delta_modules()]
    from_folder = AutoDeltaConfig.from_finetuned(folder)
    built = AutoDeltaModel.from_config(from_folder, backbone_model=backbone(entry["family"]))
    assert [n for n, _ in built.delta_modules()] == [n for n, _ in loaded.delta_modules()]  # (the trained head
    # of a *-classifier checkpoint comes from its weights, not its config: not compared)
