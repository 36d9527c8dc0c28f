"""`samtune demo` with the real bundled LiteMedSAM: the main job end to end (the cpu_quick preset fine-tuned on
real weights, then automatic prediction on an unseen phantom), and what it leaves behind.

This is the one real-weights test of cpu_quick training; the command-line train and predict paths around it are
tested with tiny models (unit/cli, unit/worker)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from samtune.cli import main
from samtune.data import read_label
from samtune.errors import OutputError
from samtune.library import read_model_card
from samtune.train import load_preset

pytestmark = pytest.mark.slow


def test_the_demo_fine_tunes_and_beats_the_pretrained_model_without_prompts(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "demo"
    # The embedding store on, in a folder of its own, as a user's demo has it (the suite switches it off).
    monkeypatch.setenv("SAMTUNE_EMBEDDING_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("SAMTUNE_EMBEDDING_STORE_MB", "512")
    caplog.set_level(logging.INFO, logger="samtune.predict.volume")
    # as `make demo`, but 25 epochs of 4 steps instead of the preset's floor of 300 steps (~4 min instead of ~7.5)
    assert main(["demo", "--out-dir", str(folder), "--device", "cpu", "--quiet", "--epochs", "25"]) == 0
    out = capsys.readouterr().out
    scores = dict(line.rsplit(",", 1) for line in (folder / "scores.csv").read_text().splitlines()[1:])
    names = ("automatic, pretrained", "box on every slice, pretrained (reference)", "automatic, fine-tuned (cpu_quick)")
    before, boxed, after = (float(scores[name]) for name in names)
    assert before == 0.0 and boxed > 0.9  # pretrained LiteMedSAM needs a prompt
    assert after > 0.6  # fine-tuned, it segments the unseen phantom without one
    assert "Dice on the unseen test phantom" in out and f"{after:.3f}" in out
    card = read_model_card(folder / "model")  # trained on the real weights, their hash recorded
    assert card["backbone"] == "litemedsam" and card["backbone_sha256"]
    assert (
        card["training"]
        == load_preset("cpu_quick").train_config({"device": "cpu", "seed": 0, "epochs": 25, "min_steps": 0}).to_dict()
    )
    # Trained without boxes, it refines its masks with the pretrained decoder it kept (rebuilt when loaded).
    assert card["automatic"]["refine"] == 2 and card["automatic"]["refine_decoder"] == "pretrained"
    assert (folder / "data" / "manifest.json").is_file()
    # The test phantom is encoded once: the boxed run (its prompted slices) and the fine-tuned one (the same
    # frozen encoder) reuse the embeddings.
    test_label = read_label(folder / "data" / "test-label.nii.gz")
    reference = test_label.array
    boxed_slices = int(reference.reshape(reference.shape[0], -1).any(1).sum())
    reuse = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Embedding store:")]
    assert reuse == [
        f"Embedding store: 0 slices reused, {reference.shape[0]} encoded.",
        f"Embedding store: {boxed_slices} slices reused, 0 encoded.",
        f"Embedding store: {reference.shape[0]} slices reused, 0 encoded.",
    ]
    for name in ("automatic-pretrained", "box-pretrained", "automatic-fine-tuned"):
        read_label(folder / "predictions" / f"{name}.nii.gz", reference=test_label)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("the user's", encoding="utf-8")
    with pytest.raises(OutputError, match="not made by the demo"):
        from samtune.cli.demo import run_demo

        run_demo(out_dir=tmp_path / "mine", show_progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text(encoding="utf-8") == "the user's"
