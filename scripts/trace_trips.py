"""Follow three requests through the code and count the files they cross (docs/architecture.md).

    python scripts/trace_trips.py [--json OUT]

The trips, each on real code with tiny random models and phantoms (a few seconds on a CPU):

* **training**: the Slicer logic's training call (``SAMTuneLib.Jobs.JobRunner.train`` on real MRML
  from ``slicer-core``), then the worker half (``python -m samtune.worker --job``, run in this
  process so it can be traced) up to the end of the first optimiser step;
* **CLI prediction**: ``samtune predict`` in automatic mode with a model folder;
* **click**: what the "SAM auto" effect calls for one point click on a slice: the view's slice
  axis, RAS to IJK, the prompt book, the session pool (first click: the model and the slice
  embedding are computed; cached click: the same slice again), and the preview write.

For each trip it reports the project files entered (``files``) and how many of them are entered
again after the request had moved on to another file (``re-entered``: the back-and-forth), from
``sys.setprofile`` call events into SAMTune's own files (``samtune/``, ``SAMTuneLib/``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "SAMTune" / "Logic"), str(ROOT / "SAMTune")]
ROOTS = (str(ROOT / "SAMTune" / "Logic" / "samtune"), str(ROOT / "SAMTune" / "SAMTuneLib"))


class Trip:
    """Records the project files a request enters, and its call chain where it does its work.

    Args:
        targets: ``(file name, function name)`` pairs where the request does its work; at the first
            call of each, the chain of project files on the call stack (outermost first) is kept.
    """

    def __init__(self, targets: tuple[tuple[str, str], ...] = ()) -> None:
        self.sequence: list[str] = []
        self.targets = targets
        self.chains: dict[str, list[str]] = {}
        self.active = True

    def _profile(self, frame: Any, event: str, arg: Any) -> None:
        if event != "call" or not self.active or frame.f_code.co_name == "<module>":  # imports are not the trip
            return
        path = frame.f_code.co_filename
        if not path.startswith(ROOTS):
            return
        name = os.path.relpath(path, ROOT)
        if not self.sequence or self.sequence[-1] != name:
            self.sequence.append(name)
        for file_name, function in self.targets:
            key = f"{file_name}:{function}"
            if key not in self.chains and frame.f_code.co_name == function and path.endswith(file_name):
                self.chains[key] = _chain(frame)

    def run(self, function: Callable[[], Any]) -> Any:
        sys.setprofile(self._profile)
        try:
            return function()
        finally:
            sys.setprofile(None)

    def summary(self) -> dict[str, Any]:
        seen: list[str] = []
        reentered: set[str] = set()
        for name in self.sequence:
            if name in seen:
                reentered.add(name)
            else:
                seen.append(name)
        return {**summarise(seen, sorted(reentered)), **summarise_chains(self.chains)}


def _chain(frame: Any) -> list[str]:
    """Project files on the call stack of ``frame``, outermost first, consecutive repeats merged."""
    files: list[str] = []
    while frame is not None:
        path = frame.f_code.co_filename
        if path.startswith(ROOTS):
            name = os.path.relpath(path, ROOT)
            if not files or files[-1] != name:
                files.append(name)
        frame = frame.f_back
    return files[::-1]


def summarise_chains(chains: dict[str, list[str]]) -> dict[str, Any]:
    """The request's main line: files on the call chains to where it works, and the back-and-forth
    (a file the chain leaves and comes back to, counted once per return)."""
    on_chain = sorted({n for chain in chains.values() for n in chain})
    returns = sum(len(chain) - len(set(chain)) for chain in chains.values())
    return {"chain files": len(on_chain), "chain returns": returns, "chains": chains}


#: Where each request does its work (file name, function): the chains to these are its main line.
TRAIN_TARGETS = (("TrainingData.py", "exportTrainingSet"), ("client.py", "start"), ("trainer.py", "train_step"))
PREDICT_TARGETS = (("sam_model.py", "decode"), ("io.py", "write_label"))
CLICK_TARGETS = (
    ("sam_model.py", "decode"),
    ("Segments.py", "writeMaskToSegment"),
    ("Segments.py", "writeSlicesToSegment"),
)

#: The shared helpers (errors, enumerations, configuration I/O, ...) and package ``__init__`` files: a
#: reader following a request does not walk into them, so they are counted apart.
SHARED = ("errors.py", "enums.py", "config_io.py", "paths.py", "atomic.py", "quiet.py", "_lazy.py", "__init__.py")


def summarise(order: list[str], reentered: list[str]) -> dict[str, Any]:
    """Counts of a trip from the files in first-entry order and the files entered again."""
    own = [n for n in order if not n.endswith(SHARED) or n.endswith("presets/__init__.py")]
    return {"files": len(order), "re-entered": len(reentered), "files without shared helpers": len(own),
            "re-entered without shared helpers": len([n for n in reentered if n in own]),
            "order": order, "re-entered files": reentered}  # fmt: skip


def _scene_with_case(shape: tuple[int, int, int] = (6, 48, 48)) -> tuple[Any, Any, Any, Any]:
    import numpy as np
    import slicer
    import vtk
    from vtk.util import numpy_support

    from samtune.data import make_phantom

    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if not factory.GetConverterRules():
        for rule in (slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule,
                     slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule):  # fmt: skip
            factory.RegisterConverterRule(rule())
    image, label = make_phantom(shape=shape, seed=0, structures=1)
    scene = slicer.vtkMRMLScene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "phantom")
    data = vtk.vtkImageData()
    data.SetDimensions(shape[2], shape[1], shape[0])
    data.AllocateScalars(vtk.VTK_FLOAT, 1)
    numpy_support.vtk_to_numpy(data.GetPointData().GetScalars())[:] = image.array.astype(np.float32).ravel()
    volume.SetAndObserveImageData(data)
    volume.SetSpacing(*image.spacing[::-1])
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "labels")
    from SAMTuneLib.Segments import writeMaskToSegment

    segment = writeMaskToSegment(label.array > 0, segmentation, volume, name="atrium")
    return scene, volume, segmentation, segment


def _tiny_model_folder(folder: Path) -> str:
    from samtune.library.model_folder import save_trained_model
    from samtune.models import build_tiny_model
    from samtune.peft.apply import FineTuneConfig, apply_finetuning

    folder.mkdir(parents=True, exist_ok=True)
    net = build_tiny_model("litemedsam", seed=0)
    apply_finetuning(net, FineTuneConfig())
    return str(save_trained_model(folder / "model", net, train_config={"finetune": {}}, structure="atrium",
                                  data_summary={}, metrics={}, extra={"tiny": True, "tiny_seed": 0}))  # fmt: skip


def trip_training(work: Path) -> dict[str, Any]:
    from SAMTuneLib.Jobs import JobRunner

    import samtune.train.trainer as trainer_module
    from samtune.worker.client import default_launcher

    _scene, volume, segmentation, segment = _scene_with_case()
    launched: list[list[str]] = []

    def launch(args: list[str], env: dict[str, str]) -> Any:
        launched.append(list(args))
        return default_launcher([sys.executable, "-c", "pass"], env)

    trip = Trip(TRAIN_TARGETS)
    runner = JobRunner(python=sys.executable, launcher=launch)
    job = trip.run(lambda: runner.train([(volume, segmentation, [segment], True)], runsFolder=str(work),
                                        modelDir=str(work / "model"), preset="cpu_quick", tiny=True,
                                        overrides={"epochs": 1, "val_fraction": 0}))  # fmt: skip
    runner.wait(job, timeout=60)
    args = launched[0]
    job_file = args[args.index("--job") + 1]
    original = trainer_module.Trainer.train_step

    def first_step(self: Any, indices: Any) -> Any:
        out = original(self, indices)
        trip.active = False  # the trip ends with the first optimiser step
        return out

    trainer_module.Trainer.train_step = first_step  # type: ignore[method-assign]
    try:
        from samtune.worker import main as worker

        code = trip.run(lambda: worker.run(["--job", job_file], stdout=open(os.devnull, "w")))  # noqa: SIM115
    finally:
        trainer_module.Trainer.train_step = original  # type: ignore[method-assign]
    assert code == 0, code
    return trip.summary()


def trip_cli_predict(work: Path) -> dict[str, Any]:
    from samtune.cli import main
    from samtune.data import make_phantom, write_volume

    image, _ = make_phantom(shape=(6, 48, 48), seed=1, structures=1)
    path = write_volume(image, work / "new.nii.gz")
    model = _tiny_model_folder(work / "cli")
    trip = Trip(PREDICT_TARGETS)
    code = trip.run(lambda: main(["predict", "--image", str(path), "--out", str(work / "seg.nii.gz"),
                                  "--model", model, "--quiet"]))  # fmt: skip
    assert code == 0, code
    return trip.summary()


def _click_once(volume: Any, model: str, pool: Any, book: Any, preview: Any) -> None:
    """What ``SegmentEditorEffect._addPrompt`` / ``runPrompted`` / ``showPreview`` call for a point click."""
    import numpy as np
    import vtk
    from SAMTuneLib.Geometry import rasToIjk, sliceAxisOfView, volumeToCore
    from SAMTuneLib.Segments import writeMaskToSegment, writeSlicesToSegment

    from samtune.library.model_folder import load_trained_model

    ijk_to_ras = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(ijk_to_ras)
    slice_to_ras = vtk.vtkMatrix4x4()  # an axial view through slice 3
    center = ijk_to_ras.MultiplyPoint((24, 24, 3, 1))
    for r in range(3):
        slice_to_ras.SetElement(r, 3, center[r])
    axis = sliceAxisOfView(volume, slice_to_ras)
    key = book.add_point(rasToIjk(volume, center[:3]), 1, axis=axis)
    session = pool.get(model, lambda: load_trained_model(model)[0], (volume.GetID(), volume.GetImageData().GetMTime()),
                       lambda: volumeToCore(volume), axis=axis, threshold=0.5)  # fmt: skip
    entry = book.prompts(*key)
    index, mask = session.predict_ijk(entry.points, entry.labels, box=entry.box)
    if preview.GetSegmentation().GetNumberOfSegments():  # the preview is shown: only this slice is rewritten
        writeSlicesToSegment({index: mask}, session.axis, preview, volume, name="SAM preview")
    else:
        full = np.zeros(session.volume.shape[:3], dtype=bool)
        np.moveaxis(full, session.axis, 0)[index] = mask
        writeMaskToSegment(full, preview, volume, name="SAM preview")


def trip_clicks(work: Path) -> dict[str, Any]:
    from samtune.predict.prompt_book import PromptBook
    from samtune.predict.session import SessionPool

    scene, volume, _segmentation, _segment = _scene_with_case()
    model = _tiny_model_folder(work / "click")
    preview = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "preview")
    pool, book = SessionPool(), PromptBook()
    first, cached = Trip(CLICK_TARGETS), Trip(CLICK_TARGETS)
    first.run(lambda: _click_once(volume, model, pool, book, preview))
    cached.run(lambda: _click_once(volume, model, pool, book, preview))
    return {"first click": first.summary(), "cached click": cached.summary()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the full result (with file orders) here")
    args = parser.parse_args()
    os.environ.setdefault("SAMTUNE_VERBOSE", "0")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "train").mkdir()
        (work / "predict").mkdir()
        (work / "click").mkdir()
        results["training"] = trip_training(work / "train")
        results["CLI prediction"] = trip_cli_predict(work / "predict")
        results.update(trip_clicks(work / "click"))
    print(f"{'trip':24s} {'main line: files':>16s} {'returns':>8s}   {'all calls: files':>16s} {'re-entered':>10s}")
    for name, summary in results.items():
        print(
            f"{name:24s} {summary['chain files']:16d} {summary['chain returns']:8d}   "
            f"{summary['files without shared helpers']:16d} {summary['re-entered without shared helpers']:10d}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
