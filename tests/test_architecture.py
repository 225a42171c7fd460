"""The package's shape: a new delta type is one file + one registration, the app layer stays out of
`import opendelta`, files are published with the umask's permissions, and per-type knowledge is read from
each type's own class (PEFT export of IA3 with a trained head)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from opendelta import AutoDeltaConfig, AutoDeltaModel, DeltaBase, DeltaConfig, Site, Visualization
from opendelta.registry import _REGISTRY, register_delta
from shared_tester import check_all
from tiny import build, inputs_for, run

SRC = Path(__file__).resolve().parents[1] / "src"


# ----- a delta type defined here, in a test file: one class pair + one registration ------------------------
@dataclass(repr=False)
class OutputScaleConfig(DeltaConfig):
    """A toy delta type: y = f(x) * (1 + g), g a learned scalar per modified Linear."""

    init: float = 0.0

    def _validate(self) -> None:
        super()._validate()
        self._require(abs(self.init) < 1, "init", "a number in (-1, 1)")


class _Gain(nn.Module):
    def __init__(self, init: float, device=None, dtype=None) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.full((1,), init, device=device, dtype=dtype))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y * (1 + self.gain)


class OutputScaleModel(DeltaBase):
    config_class = OutputScaleConfig
    supported_modules = (nn.Linear,)
    default_modules = {"*": ["attn.q", "attn.v"]}
    default_learning_rate = 5e-3

    def build_site(self, site: Site) -> None:
        layer = site.add_layer("gain", _Gain(self.config.init, **site.factory_kwargs()))
        site.on_output(lambda module, args, output: layer(output))


@pytest.fixture
def output_scale():
    cls = register_delta("output_scale")(OutputScaleModel)
    yield cls
    _REGISTRY.pop("output_scale", None)


def test_a_new_delta_type_is_one_class_and_one_registration(output_scale, tmp_path):
    from opendelta.app.train import default_learning_rates

    model = build("bert")
    ref = run(model, "bert", inputs_for("bert"))
    cfg = AutoDeltaConfig.from_dict({"delta_type": "output_scale", "init": 0.5})
    delta = AutoDeltaModel.from_config(cfg, backbone_model=model)  # defaults from the class: query / value
    assert [n.rsplit(".", 2)[-2:] for n in delta.modified_module_names][:2] == [["self", "query"], ["self", "value"]]
    assert not torch.equal(run(model, "bert", inputs_for("bert")), ref)
    assert "gain (_Gain)" in Visualization(model).to_text()
    assert default_learning_rates()["output_scale"] == 5e-3
    delta.save_finetuned(tmp_path / "ck")
    fresh = build("bert")
    again = AutoDeltaModel.from_finetuned(tmp_path / "ck", backbone_model=fresh)
    assert isinstance(again, OutputScaleModel)
    torch.testing.assert_close(run(fresh, "bert", inputs_for("bert")), run(model, "bert", inputs_for("bert")))


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_a_new_delta_type_passes_the_shared_property_checks(output_scale, family, tmp_path):
    check_all(family, "output_scale", {"modified_modules": ["attn.q", "attn.v"], "init": 0.0}, tmp_path)


# ----- layering ---------------------------------------------------------------------------------------------
def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    return set(out.stdout.split())


def test_import_opendelta_loads_no_app_module():
    loaded = _modules_after("import opendelta")
    assert "opendelta" in loaded and "opendelta.persistence" in loaded
    assert not {m for m in loaded if m.startswith("opendelta.app")}


@pytest.mark.parametrize("command", [["show", "--config", "bert"], ["--help"]])
def test_commands_other_than_train_do_not_load_the_training_stack(command):
    code = f"from opendelta.app import cli\ntry:\n    cli.main({command!r})\nexcept SystemExit:\n    pass"
    loaded = _modules_after(code)
    assert "opendelta.app.commands" in loaded
    assert not {"opendelta.app.train", "opendelta.app.train_cli", "opendelta.app.data"} & loaded


def test_train_command_declares_its_options_only_when_run(capsys):
    from opendelta.app import cli

    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "--train-subset" in capsys.readouterr().out


# ----- file permissions follow the umask ---------------------------------------------------------------------
@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_checkpoint_folder_and_files_are_readable_by_others(umask_022, tmp_path):
    model = build("toy")
    delta = AutoDeltaModel.from_config({"delta_type": "lora", "modified_modules": ["0"]}, backbone_model=model)
    folder = delta.save_finetuned(tmp_path / "ck")
    assert _mode(folder) == 0o755
    assert {p.name: _mode(p) for p in folder.iterdir()} == {
        name: 0o644 for name in ("config.json", "delta_model.safetensors", "fingerprint.json", "README.md")
    }


def test_exported_figures_are_readable_by_others(umask_022, tmp_path):
    for suffix in (".svg", ".html", ".txt"):
        path = tmp_path / f"tree{suffix}"
        Visualization(build("toy")).structure_graph(printTree=False, save=str(path))
        assert _mode(path) == 0o644


def test_permissions_follow_a_stricter_umask(tmp_path):
    old = os.umask(0o077)
    try:
        model = build("toy")
        delta = AutoDeltaModel.from_config({"delta_type": "bitfit", "modified_modules": ["0"]}, backbone_model=model)
        folder = delta.save_finetuned(tmp_path / "ck")
    finally:
        os.umask(old)
    assert _mode(folder) == 0o700 and _mode(folder / "config.json") == 0o600


# ----- per-type knowledge read from the type's class -----------------------------------------------------------
def test_ia3_peft_export_lists_only_the_trained_head_in_modules_to_save(tmp_path):
    model = build("bert")
    delta = AutoDeltaModel.from_config({"delta_type": "ia3"}, backbone_model=model)
    delta.freeze_module(exclude=["deltas", "classifier"])
    out = delta.save_finetuned(tmp_path / "peft", format="peft")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "IA3" and config["modules_to_save"] == ["classifier"]


def test_merge_refusal_names_the_mergeable_types_from_the_registry(output_scale):
    from opendelta.errors import DeltaStateError

    model = build("bert")
    delta = AutoDeltaModel.from_config({"delta_type": "adapter"}, backbone_model=model)
    with pytest.raises(DeltaStateError, match="available for 'ia3', 'lora'"):
        delta.merge()
