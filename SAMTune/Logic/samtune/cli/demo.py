"""The demo behind ``make demo``: SAMTune's main job, end to end, on synthetic phantoms.

1. Three labelled MR phantoms for training and one unseen test phantom.
2. Before: pretrained LiteMedSAM on the test phantom, automatically (no prompt: it segments nothing)
   and with a box per slice taken from the reference (the prompted reference a user would get by
   drawing boxes).
3. Fine-tune with the ``cpu_quick`` preset (decoder LoRA on cached embeddings).
4. After: the fine-tuned model segments the test phantom automatically.

Everything is written to one folder (``samtune-demo`` by default): the phantoms and the training
manifest, the model folder, the three predictions and a ``scores.csv``, so the result can be opened
in Slicer or used with ``samtune predict --model``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from samtune.cli.terminal import ProgressBar
from samtune.data.image_io import write_label, write_volume
from samtune.data.phantom import make_phantom, write_phantom_cases
from samtune.data.slicing import resolve_axis
from samtune.errors import OutputError
from samtune.metrics import dice
from samtune.predict.config import PredictConfig
from samtune.predict.user_prompts import boxes_from_label
from samtune.predict.volume import predict_volume

#: Marker file of a folder the demo made (only such a folder is ever emptied by a later demo).
MARKER = ".samtune-demo"
#: Training phantoms (slices, rows, columns) and the unseen test phantom.
TRAIN_SHAPE = (8, 96, 96)
TEST_SHAPE = (16, 96, 96)
#: Seed offset of the test phantom: never one of the training phantoms.
TEST_SEED_OFFSET = 100


def _prepare(folder: Path) -> None:
    if folder.exists() and any(folder.iterdir()) and not (folder / MARKER).is_file():
        raise OutputError(
            f"'{folder}' exists and was not made by the demo; give an empty or new folder with --out-dir."
        )
    for part in ("data", "model", "model.run", "predictions"):
        shutil.rmtree(folder / part, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("made by `samtune demo`; emptied by the next one\n", encoding="utf-8")


class _Stages:
    """One progress bar per training stage (image embeddings, then epochs)."""

    def __init__(self, show: bool) -> None:
        self.show = show
        self.bar: ProgressBar | None = None
        self.stage = ""
        self.validation: list[float] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if event["event"] == "metrics" and event.get("val_dice") is not None:
            self.validation.append(float(event["val_dice"]))
        if event["event"] != "progress":
            return
        stage = str(event.get("stage", ""))
        if stage != self.stage:
            self.close()
            label = {"cache": "  embeddings", "train": "  training"}.get(stage, f"  {stage}")
            self.bar, self.stage = ProgressBar(f"{label:<13}", enabled=self.show).__enter__(), stage
        if self.bar is not None:
            detail = f"epoch {event['epoch']}/{event['epochs']}" if stage == "train" else ""
            self.bar.update(int(event["step"]), int(event["total"]), detail)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__()
            self.bar = None


def run_demo(
    *,
    out_dir: Path | None = None,
    device: str = "auto",
    seed: int = 0,
    show_progress: bool = True,
    epochs: int | None = None,
) -> dict[str, float]:
    """Run the demo, print what it does and the Dice before and after fine-tuning.

    Args:
        out_dir: Folder for everything the demo writes (default ``./samtune-demo``); a folder the
            demo did not make must be empty.
        device: Compute device (``auto``, ``cpu``, ``cuda``...).
        seed: Seed of the phantoms and of training.
        show_progress: Draw progress bars on a terminal.
        epochs: Train exactly this many epochs (default: the ``cpu_quick`` preset's epochs and its step
            floor, ``min_steps``).

    Returns:
        Dice of the three predictions and the seconds each stage took.
    """
    from samtune.models.builders import build_model
    from samtune.models.device import resolve_device
    from samtune.train.fine_tuning import fine_tune
    from samtune.train.manifest import cases_from_manifest
    from samtune.train.presets import load_preset

    folder = Path(out_dir if out_dir is not None else "samtune-demo").expanduser().resolve()
    _prepare(folder)
    results: dict[str, float] = {}
    print(f"SAMTune demo: everything goes to {folder}")

    print(f"1/4 Phantoms: 3 labelled training phantoms {TRAIN_SHAPE[::-1]} and 1 unseen test phantom "
          f"{TEST_SHAPE[::-1]} (i, j, k)")  # fmt: skip
    (folder / "data").mkdir()
    manifest = write_phantom_cases(folder / "data", 3, shape=TRAIN_SHAPE, structure="target", first_seed=seed)
    image, label = make_phantom(shape=TEST_SHAPE, seed=seed + TEST_SEED_OFFSET, modality="mr")
    write_volume(image, folder / "data" / "test-image.nii.gz")
    write_label(label, folder / "data" / "test-label.nii.gz")
    predictions = folder / "predictions"
    predictions.mkdir()

    def segment(model: Any, mode: str, prompts: Any, name: str) -> float:
        started = time.perf_counter()
        with ProgressBar(f"  {mode:<11}", enabled=show_progress) as bar:
            prediction = predict_volume(model, image, PredictConfig(), prompts=prompts, progress=bar.update)
        results[f"seconds_{name}"] = time.perf_counter() - started
        write_label(prediction, predictions / f"{name}.nii.gz")
        results[f"dice_{name}"] = score = dice(prediction.array, label.array)
        return score

    print("2/4 Before fine-tuning: pretrained LiteMedSAM on the test phantom")
    pretrained = build_model("litemedsam", device=resolve_device(device))
    axis = resolve_axis(image, PredictConfig().slices.axis)
    before = segment(pretrained, "automatic", None, "automatic-pretrained")
    boxed = segment(pretrained, "box prompts", boxes_from_label(label.array, axis=axis), "box-pretrained")
    print(f"    automatic Dice {before:.3f} (no prompt: the pretrained model segments nothing); "
          f"with a box on every slice {boxed:.3f}")  # fmt: skip

    overrides: dict[str, Any] = {"device": device, "seed": seed}
    if epochs is not None:  # exactly these epochs: the preset's step floor would otherwise outlast them
        overrides.update(epochs=epochs, min_steps=0)
    config = load_preset("cpu_quick").train_config(overrides)
    print(
        f"3/4 Fine-tuning with the cpu_quick preset ({config.epochs} epochs, decoder LoRA) on the 3 training phantoms"
    )
    stages = _Stages(show_progress)
    started = time.perf_counter()
    try:
        fine_tune(cases_from_manifest(manifest), config, out_dir=folder / "model", on_event=stages)
    finally:
        stages.close()
    results["seconds_training"] = time.perf_counter() - started
    validation = f", validation Dice {stages.validation[-1]:.3f}" if stages.validation else ""
    print(f"    trained in {results['seconds_training']:.0f} s{validation}; model folder {folder / 'model'}")

    print("4/4 After fine-tuning: the fine-tuned model on the unseen test phantom, no prompt")
    from samtune.library.model_folder import load_trained_model

    tuned, _card = load_trained_model(folder / "model", device=device)
    after = segment(tuned, "automatic", None, "automatic-fine-tuned")

    rows = [("automatic, pretrained", before), ("box on every slice, pretrained (reference)", boxed),
            ("automatic, fine-tuned (cpu_quick)", after)]  # fmt: skip
    (folder / "scores.csv").write_text(
        "prediction,dice\n" + "".join(f"{name},{value:.4f}\n" for name, value in rows), encoding="utf-8"
    )
    print("\nDice on the unseen test phantom:")
    for name, value in rows:
        print(f"  {name:<44} {value:.3f}")
    print(f"\nWritten: {folder / 'data'} (phantoms, manifest.json), {folder / 'model'} (the fine-tuned model), "
          f"{predictions} (3 label maps), {folder / 'scores.csv'}.")  # fmt: skip
    print(f"Open data/test-image.nii.gz and predictions/automatic-fine-tuned.nii.gz in 3D Slicer, or run\n"
          f"  samtune predict --image {folder / 'data' / 'test-image.nii.gz'} --model {folder / 'model'} "
          f"--out prediction.nii.gz")  # fmt: skip
    return results
