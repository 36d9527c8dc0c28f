"""The panel's training request carries only what the user changed (the bound fields and the Advanced
JSON, each against the preset), so a job's ``overrides`` say what differs from its preset."""

from __future__ import annotations

import json
import sys
import types

import pytest

from samtune.train.presets import load_preset


@pytest.fixture
def panel(monkeypatch):
    monkeypatch.setitem(sys.modules, "qt", types.ModuleType("qt"))
    monkeypatch.setitem(sys.modules, "slicer.i18n", types.SimpleNamespace(tr=lambda text: text))
    sys.modules.pop("SAMTuneLib.StrategyPanel", None)
    from SAMTuneLib.StrategyPanel import StrategyPanel

    preset = load_preset("cpu_quick")
    resolved = preset.train_config()
    fields = types.SimpleNamespace(
        preset="cpu_quick", epochs=resolved.epochs, batchSize=resolved.batch_size, learningRate=resolved.lr,
        seed=resolved.seed, validationFraction=resolved.val_fraction, backbone=resolved.backbone,
        device=resolved.device,
    )  # fmt: skip
    text = {"value": json.dumps(preset.config, indent=2)}  # what onPresetChanged shows in Advanced
    editor = types.SimpleNamespace(toPlainText=lambda: text["value"])
    widget = types.SimpleNamespace(_parameterNode=fields, ui=types.SimpleNamespace(presetFieldsTextEdit=editor))
    widget.overrides = lambda: StrategyPanel.overrides(widget)
    widget.advanced = text
    return widget


def test_an_untouched_panel_sends_no_override(panel) -> None:
    assert panel.overrides() == {}


def test_only_the_changed_fields_are_sent(panel) -> None:
    panel._parameterNode.epochs += 7
    edited = json.loads(panel.advanced["value"])
    edited.setdefault("finetune", {}).setdefault("lora", {})["rank"] = 8
    panel.advanced["value"] = json.dumps(edited)
    assert panel.overrides() == {"epochs": load_preset("cpu_quick").train_config().epochs + 7,
                                 "finetune": {"lora": {"rank": 8}}}  # fmt: skip


def test_advanced_text_that_is_not_an_object_is_refused(panel) -> None:
    panel.advanced["value"] = "[1, 2]"
    with pytest.raises(ValueError, match="JSON object"):
        panel.overrides()
    panel.advanced["value"] = "{"
    with pytest.raises(ValueError, match="not valid JSON"):
        panel.overrides()
