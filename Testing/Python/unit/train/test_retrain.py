"""Retraining a model on corrections (warm start): the weights continue from the parent, the card
links it, the settings stay its own, a retrain run cancels and resumes, and `samtune train --from`
drives it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from samtune.cli.main import main as cli_main
from samtune.data import make_phantom, write_phantom_cases
from samtune.errors import ConfigurationError, TrainingCancelledError, WeightsError
from samtune.library import read_model_card
from samtune.models.weights import sha256_file
from samtune.train import TrainingCase, fine_tune, load_preset
from samtune.worker.jobs import TrainJob
from samtune.worker.train_job import run_train_job

SETTINGS = {
    "backbone": "sam_vit_b", "device": "cpu", "epochs": 3, "batch_size": 2, "lr": 0.01, "warmup_steps": 1,
    "val_fraction": 0.34, "augment": {"enabled": False}, "patience": 0, "min_steps": 0,
}  # fmt: skip


def _cases(first: int = 0, n: int = 3) -> list[TrainingCase]:
    out = []
    for seed in range(first, first + n):
        image, label = make_phantom(shape=(6, 48, 48), seed=seed)
        out.append(TrainingCase(f"case{seed}", image, label, structure="t", fully_labelled=True))
    return out


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("retrain") / "parent"
    config = load_preset("cpu_quick").train_config({**SETTINGS, "seed": 4})
    fine_tune(_cases(), config, tiny=True, out_dir=folder)
    return folder


def test_retraining_starts_from_the_parents_weights_and_links_it(parent: Path, tmp_path: Path) -> None:
    card = read_model_card(parent)
    config = load_preset("cpu_quick").train_config({**SETTINGS, "lr": 1e-12, "epochs": 1, "seed": 9})
    child = tmp_path / "child"
    fine_tune(_cases(3), config, parent=parent, out_dir=child)
    theirs, ours = load_file(str(parent / "weights.safetensors")), load_file(str(child / "weights.safetensors"))
    assert theirs.keys() == ours.keys()
    for name, value in theirs.items():  # a learning rate of 1e-12: the weights are where the parent left them
        torch.testing.assert_close(ours[name], value, rtol=0, atol=1e-6)
    fresh = tmp_path / "fresh"
    fine_tune(_cases(3), config, tiny=True, out_dir=fresh)  # the same run without the parent
    assert any(not torch.allclose(load_file(str(fresh / "weights.safetensors"))[n], v) for n, v in theirs.items())
    link = read_model_card(child)["parent"]
    weights_hash = sha256_file(parent / "weights.safetensors")
    assert link == {"name": "parent", "path": str(parent.resolve()), "weights_sha256": weights_hash,
                    "created": card["created"], "generation": 1}  # fmt: skip
    assert read_model_card(child)["tiny_seed"] == card["tiny_seed"] == 4  # the parent's random base, not seed 9
    grandchild = tmp_path / "grandchild"
    fine_tune(_cases(3), config, parent=child, out_dir=grandchild)
    assert read_model_card(grandchild)["parent"]["generation"] == 2


def test_retraining_keeps_the_parents_backbone_and_method(parent: Path, tmp_path: Path) -> None:
    config = load_preset("cpu_quick").train_config({**SETTINGS, "finetune": {"method": "lora", "lora": {"rank": 8}}})
    with pytest.raises(ConfigurationError, match="keeps its fine-tuning method"):
        fine_tune(_cases(3), config, parent=parent)
    with pytest.raises(WeightsError, match="not a SAMTune model folder"):
        fine_tune(_cases(3), config, parent=tmp_path)


def test_a_retrain_job_uses_the_parents_settings_cancels_and_resumes(parent: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_phantom_cases(data)
    job = TrainJob(manifest=str(data / "manifest.json"), run_dir=str(tmp_path / "run"), parent=str(parent),
                   overrides={"epochs": 4})  # fmt: skip
    parents_own = read_model_card(parent)["training"]
    resolved = job.train_config().to_dict()
    assert resolved["lr"] == parents_own["lr"] and resolved["batch_size"] == parents_own["batch_size"]
    assert resolved["epochs"] == 4
    events: list[dict[str, Any]] = []
    steps = {"n": 0}

    def stop_after_three_steps() -> bool:
        steps["n"] += any(e["event"] == "progress" and e.get("stage") == "train" for e in events[-1:])
        return steps["n"] >= 3

    with pytest.raises(TrainingCancelledError):
        run_train_job(job, emit=events.append, should_stop=stop_after_three_steps)
    assert events[0]["event"] == "started" and events[0]["parent"] == str(parent)
    stored = json.loads((tmp_path / "run" / "job.json").read_text(encoding="utf-8"))
    assert stored["parent"] == str(parent)  # a resume knows what it retrains
    from samtune.worker.jobs import load_run_job

    model = run_train_job(load_run_job(tmp_path / "run"), emit=events.append, resume=True)
    assert read_model_card(model)["parent"]["name"] == "parent"
    assert any(e["event"] == "log" and "Resuming" in e.get("message", "") for e in events)


def test_samtune_train_from_a_model(parent: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_phantom_cases(data)
    out = tmp_path / "retrained"
    code = cli_main(["train", "--from", str(parent), "--train-manifest", str(data / "manifest.json"), "--out", str(out),
                     "--set", "epochs=1", "--quiet"])  # fmt: skip
    assert code == 0
    assert read_model_card(out)["parent"]["path"] == str(parent.resolve())
    assert "Wrote model" in capsys.readouterr().err
    code = cli_main(["train", "--from", str(tmp_path / "nothing"), "--train-manifest", str(data / "manifest.json"),
                     "--out", str(tmp_path / "x")])  # fmt: skip
    assert code == 4 and "not a SAMTune model folder" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_corrections_that_only_remove_false_positives_are_training_data() -> None:
    # A user corrected two slices where the model marked structure that is not there: the case's
    # label is empty, its two slices are marked empty; they are negatives, not a mistake.
    from samtune.errors import LabelError
    from samtune.train import TrainConfig
    from samtune.train.data import build_samples

    image, label = make_phantom(shape=(6, 48, 48), seed=1)
    label.array[...] = 0
    kwargs = {"input_size": 64, "pixel_norm": "sam", "slices": TrainConfig().slices, "empty_policy": "keep_all",
              "keep_fraction": 1.0, "seed": 0}  # fmt: skip
    negatives = TrainingCase("corrected", image, label, structure="t", empty_slices=[1, 4])
    samples = build_samples([negatives], **kwargs)
    assert sorted(samples.slice_index) == [1, 4]
    assert not samples.masks.any()
    # Balancing empty slices against painted ones thins a fully labelled volume's background, never
    # the slices a user marked one by one.
    balanced = build_samples([negatives], **{**kwargs, "empty_policy": "balanced"})
    assert sorted(balanced.slice_index) == [1, 4]
    with pytest.raises(LabelError, match="empty"):  # nothing painted and nothing marked: refused as before
        build_samples([TrainingCase("unlabelled", image, label, structure="t")], **kwargs)
