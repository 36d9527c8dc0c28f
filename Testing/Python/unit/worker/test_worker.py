"""The background worker as a real subprocess: events, run folder, cancel, kill, resume, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from samtune.data import make_phantom, read_label, write_phantom_cases
from samtune.data.image_io import read_volume
from samtune.library.model_folder import load_trained_model
from samtune.predict.config import PredictConfig
from samtune.predict.uncertainty import rank_slices
from samtune.predict.volume import predict_volume
from samtune.train import TrainingCancelledError, TrainingCase, fine_tune, load_preset
from samtune.worker.predict_job import UNCERTAIN_SLICES

TRAIN_OVERRIDES = {
    "backbone": "sam_vit_b", "device": "cpu", "epochs": 6, "batch_size": 2, "lr": 0.01, "warmup_steps": 1,
    "val_fraction": 0.34, "augment": {"enabled": False}, "patience": 0, "min_steps": 0,
}  # fmt: skip


def _job(folder: Path, run: str = "run", **overrides: Any) -> Path:
    job = {"version": 1, "kind": "train", "preset": "cpu_quick", "tiny": True, "manifest": "manifest.json",
           "run_dir": run, "overrides": {**TRAIN_OVERRIDES, **overrides}}  # fmt: skip
    path = folder / f"{run.replace('/', '-')}.job.json"
    path.write_text(json.dumps(job), encoding="utf-8")
    return path


def _worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "samtune.worker", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def _run(*args: str) -> tuple[int, list[dict[str, Any]], str]:
    process = _worker(*args)
    out, err = process.communicate(timeout=300)
    return process.returncode, [json.loads(line) for line in out.splitlines()], err


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "weights.safetensors"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("worker")
    write_phantom_cases(folder)
    return folder


@pytest.fixture(scope="module")
def uninterrupted(data: Path) -> Path:
    """One complete run, the reference for every interrupted one."""
    code, events, err = _run("--job", str(_job(data, "reference")))
    assert code == 0, err
    return data / "reference"


def test_worker_trains_reports_json_lines_in_order_and_its_model_predicts(data: Path, uninterrupted: Path) -> None:
    lines = (uninterrupted / "events.jsonl").read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines]
    assert all(e["v"] == 1 and "time" in e for e in events)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished"
    assert set(kinds) <= {"started", "progress", "metrics", "checkpoint", "log", "finished"}
    train_steps = [e["step"] for e in events if e["event"] == "progress" and e["stage"] == "train"]
    assert train_steps == list(range(1, len(train_steps) + 1))
    totals = {e["total"] for e in events if e["event"] == "progress" and e["stage"] == "train"}
    assert totals == {train_steps[-1]} and train_steps[-1] % 6 == 0  # every step of 6 equal epochs
    assert [e["epoch"] for e in events if e["event"] == "metrics"] == list(range(1, 7))
    assert all(0.0 <= e["val_dice"] <= 1.0 for e in events if e["event"] == "metrics")
    # A checkpoint after every epoch, each announced after its metrics.
    assert [e["epoch"] for e in events if e["event"] == "checkpoint"] == list(range(1, 7))
    assert kinds.index("checkpoint") > kinds.index("metrics")
    finished = events[-1]
    assert Path(finished["model"]) == uninterrupted / "model" and finished["best_epoch"] >= 1
    # The run folder holds everything.
    for name in (
        "job.json",
        "config.json",
        "manifest.json",
        "metrics.csv",
        "training_curve.png",
        "model/model_card.json",
    ):
        assert (uninterrupted / name).is_file(), name
    assert (uninterrupted / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (uninterrupted / "metrics.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("epoch,loss") and len(rows) == 7
    # The model predicts, through a prediction job in another worker process.
    job = data / "predict.job.json"
    job.write_text(json.dumps({"kind": "predict", "image": "image0.nii.gz", "out": "image0-seg.nii.gz",
                               "model": str(uninterrupted / "model"), "device": "cpu"}), encoding="utf-8")  # fmt: skip
    code, events, err = _run("--job", str(job))
    assert code == 0, err
    assert [e["event"] for e in events][0] == "started" and events[-1]["event"] == "finished"
    assert events[0]["mode"] == "automatic"
    uncertain = events[-1]["uncertain_slices"]  # which slices to correct first, most uncertain first
    scores: dict[int, float] = {}  # the same model and image in this process: the core's own ranking
    model, _ = load_trained_model(uninterrupted / "model", device="cpu")
    predict_volume(model, read_volume(data / "image0.nii.gz"), PredictConfig(), uncertainty=scores)
    expected = rank_slices(scores, UNCERTAIN_SLICES)
    assert expected and [s for s, _ in uncertain] == [s for s, _ in expected]
    assert [u for _, u in uncertain] == pytest.approx([u for _, u in expected], abs=1e-3)
    image0 = read_label(data / "image0-seg.nii.gz")
    assert image0.array.shape == (6, 48, 48) and events[-1]["foreground_voxels"] == int((image0.array != 0).sum())
    assert events[-1]["decoder"] == "torch fp32"  # what ran is recorded: tiny decoders stay in PyTorch
    # An int8 decoder is recorded as such (its Dice change is tested in test_automatic_levers.py).
    job.write_text(json.dumps({"kind": "predict", "image": "image0.nii.gz", "out": "image0-int8.nii.gz",
                               "model": str(uninterrupted / "model"), "device": "cpu",
                               "predict": {"runtime": "onnxruntime", "decoder_precision": "int8"}}),
                   encoding="utf-8")  # fmt: skip
    code, events, err = _run("--job", str(job))
    assert code == 0, err
    assert events[-1]["decoder"] == "onnxruntime int8"


def test_sigterm_cancels_with_a_checkpoint_and_resume_gives_the_uninterrupted_result(
    data: Path, uninterrupted: Path
) -> None:
    process = _worker("--job", str(_job(data, "cancelled", epochs=6)))
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(json.loads(line))
        if seen[-1]["event"] == "progress" and seen[-1].get("stage") == "train" and seen[-1]["step"] == 3:
            process.send_signal(signal.SIGTERM)
            break
    rest, err = process.communicate(timeout=120)
    events = seen + [json.loads(line) for line in rest.splitlines()]
    assert process.returncode == 9, err
    assert events[-1]["event"] == "cancelled" and events[-1]["signal"] == "SIGTERM"
    assert "--resume" in events[-1]["resume"]
    assert [e["reason"] for e in events if e["event"] == "checkpoint"][-1] == "cancelled"
    assert not (data / "cancelled" / "model").exists()
    code, resumed, err = _run("--resume", str(data / "cancelled"))
    assert code == 0, err
    assert resumed[0]["event"] == "started" and resumed[0]["resume"] is True
    assert any("Resuming from" in e.get("message", "") for e in resumed if e["event"] == "log")
    ours, reference = _weights(data / "cancelled"), _weights(uninterrupted)
    assert ours.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(ours[name], reference[name], rtol=0, atol=0)
    epochs = [line.split(",")[0] for line in (data / "cancelled" / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == [str(e) for e in range(1, 7)]


def test_sigkill_then_a_truncated_checkpoint_resumes_from_the_previous_one(data: Path, uninterrupted: Path) -> None:
    process = _worker("--job", str(_job(data, "killed")))
    assert process.stdout is not None
    checkpoints = 0
    for line in process.stdout:
        event = json.loads(line)
        checkpoints += event["event"] == "checkpoint"
        if checkpoints == 3:
            process.kill()
            break
    process.communicate(timeout=60)
    index = json.loads((data / "killed" / "checkpoints" / "index.json").read_text(encoding="utf-8"))
    newest = data / "killed" / "checkpoints" / index["checkpoints"][-1]["file"]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a write cut short
    code, resumed, err = _run("--resume", str(data / "killed"))
    assert code == 0, err
    warnings = [e["message"] for e in resumed if e["event"] == "log" and e.get("level") == "warning"]
    assert any(newest.name in w and "damaged" in w for w in warnings), warnings
    assert resumed[-1]["event"] == "finished"
    ours, reference = _weights(data / "killed"), _weights(uninterrupted)
    for name in reference:
        torch.testing.assert_close(ours[name], reference[name], rtol=0, atol=0)


def test_cancel_mid_epoch_in_process_resumes_to_identical_weights(tmp_path: Path) -> None:
    cases = []
    for seed in range(3):
        image, label = make_phantom(shape=(6, 48, 48), seed=seed)
        cases.append(TrainingCase(f"case{seed}", image, label, structure="t", fully_labelled=True))
    config = load_preset("cpu_quick").train_config({**TRAIN_OVERRIDES, "epochs": 3})
    full = fine_tune(cases, config, tiny=True)
    calls = {"n": 0, "training": False}

    def seen(event: dict[str, Any]) -> None:
        calls["training"] = calls["training"] or (event["event"] == "progress" and event["stage"] == "train")

    def stop_at_step_8() -> bool:  # polled once per step (and per cached slice before); epochs have 5 steps
        calls["n"] += calls["training"]
        return calls["n"] == 8

    with pytest.raises(TrainingCancelledError, match="resume"):
        fine_tune(cases, config, tiny=True, checkpoint_dir=tmp_path, should_stop=stop_at_step_8, on_event=seen)
    index = json.loads((tmp_path / "index.json").read_text(encoding="utf-8"))
    last = index["checkpoints"][-1]
    assert last["reason"] == "cancelled" and last["step"] == 8
    state = torch.load(tmp_path / last["file"], weights_only=True)
    assert 0 < state["position"] < len(state["plan"])  # stopped inside an epoch
    resumed = fine_tune(cases, config, tiny=True, checkpoint_dir=tmp_path, resume=True)
    assert [h["loss"] for h in resumed.result.history] == [h["loss"] for h in full.result.history]
    for name, value in full.result.best_state.items():
        torch.testing.assert_close(resumed.result.best_state[name], value, rtol=0, atol=0)


# --- bad input ------------------------------------------------------------------------------------


def _error(args: list[str]) -> tuple[int, dict[str, Any]]:
    code, events, _ = _run(*args)
    assert events and events[-1]["event"] == "error"
    return code, events[-1]


def test_malformed_job_json_is_a_configuration_error(tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_text('{"kind": "train",\n "manifest": }', encoding="utf-8")
    code, error = _error(["--job", str(job)])
    assert code == 2 and error["kind"] == "configuration" and "line 2" in error["message"]


def test_unknown_job_keys_are_named(tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"kind": "train", "manifest": "m.json", "run_dir": "r", "presett": "cpu_quick"}))
    code, error = _error(["--job", str(job)])
    assert code == 2 and "presett" in error["message"] and "preset" in error["message"]


def test_every_missing_manifest_file_is_listed(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"cases": [
        {"id": "a", "image": "a.nii.gz", "label": "a-label.nii.gz"},
        {"id": "b", "image": "b.nii.gz", "label": "b-label.nii.gz"},
    ]}), encoding="utf-8")  # fmt: skip
    code, error = _error(["--job", str(_job(tmp_path))])
    assert code == 3 and error["kind"] == "data"
    for name in ("a.nii.gz", "a-label.nii.gz", "b.nii.gz", "b-label.nii.gz"):
        assert name in error["message"]
    assert not (tmp_path / "run").exists()  # nothing written before the data was checked


def test_an_unwritable_run_folder_is_refused_before_training(tmp_path: Path) -> None:
    write_phantom_cases(tmp_path, n=2)
    (tmp_path / "a-file").write_text("not a folder", encoding="utf-8")
    code, error = _error(["--job", str(_job(tmp_path, "a-file/run"))])
    assert code == 6 and error["kind"] == "output" and "a-file" in error["message"]


def test_an_existing_run_folder_is_not_overwritten(data: Path, uninterrupted: Path) -> None:
    before = (uninterrupted / "model" / "weights.safetensors").read_bytes()
    code, error = _error(["--job", str(data / "reference.job.json")])
    assert code == 6 and "--resume" in error["message"]
    assert (uninterrupted / "model" / "weights.safetensors").read_bytes() == before


def test_a_nearly_full_disk_is_refused_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    from collections import namedtuple

    from samtune.errors import OutputError
    from samtune.worker.run_folder import RunFolder

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 5 * 2**20, 5 * 2**20))
    with pytest.raises(OutputError, match=r"Only 5 MB free.*at least 200 MB"):
        RunFolder(tmp_path / "run").prepare(resume=False)
