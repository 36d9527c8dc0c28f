"""What a probe of hostile and careless inputs found, each answered without loss (one test per defect)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from samtune.cli import main
from samtune.data import Geometry, Volume, make_phantom, write_phantom_cases, write_volume
from samtune.errors import ConfigurationError, TrainingDivergedError
from samtune.library.model_folder import save_trained_model
from samtune.models import build_tiny_model
from samtune.peft.apply import FineTuneConfig, apply_finetuning
from samtune.predict.user_prompts import point_prompts_from_ijk
from samtune.train import TrainingCancelledError

TINY = {"backbone": "sam_vit_b", "device": "cpu", "epochs": 2, "batch_size": 2, "lr": 0.01, "warmup_steps": 1,
        "val_fraction": 0.34, "augment": {"enabled": False}, "patience": 0, "min_steps": 0}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    net = build_tiny_model("sam_vit_b", seed=0)
    apply_finetuning(net, FineTuneConfig())
    return save_trained_model(tmp_path_factory.mktemp("m") / "atrium", net, train_config={"finetune": {}},
                              structure="atrium", data_summary={}, metrics={}, extra={"tiny": True})  # fmt: skip


@pytest.fixture
def image(tmp_path: Path) -> Path:
    volume, _ = make_phantom(shape=(3, 24, 24), seed=0)
    return write_volume(volume, tmp_path / "image.nii.gz")


def _samtune(*args: str, limit: int | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    prefix = ""
    if limit is not None:  # a file-size limit stands in for a full disk: writes past it fail, as on a full disk
        prefix = f"import resource; resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
    code = prefix + "import sys\nfrom samtune.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})  # fmt: skip


# --- high ------------------------------------------------------------------------------------------------


_WRITE_UNDER_LIMIT = r"""
import resource, sys, numpy as np
from samtune.data import Geometry, Volume, write_label
from samtune.errors import OutputError
labels = Volume((np.random.default_rng(0).random((20, 64, 64)) > 0.5).astype(np.uint8), Geometry())
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
for name in sys.argv[1:]:
    try:
        write_label(labels, name)
        print(name, "WROTE")
    except OutputError as error:
        print(name, "REFUSED", str(error).replace("\n", " "))
"""


def test_a_full_disk_leaves_no_partial_file_in_any_output_format(tmp_path: Path):
    names = ["a.nii.gz", "a.nii", "a.nrrd", "a.seg.nrrd", "a.mha"]
    result = subprocess.run([sys.executable, "-c", _WRITE_UNDER_LIMIT, *names], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)  # fmt: skip
    lines = result.stdout.splitlines()
    assert [line.split()[1] for line in lines] == ["REFUSED"] * len(names), result.stdout
    assert all("Nothing was written" in line for line in lines)
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file


def test_predict_on_a_full_disk_exits_with_the_output_code_and_writes_nothing(tmp_path, tiny_model, image):
    out = tmp_path / "seg.nii.gz"
    result = _samtune("predict", "--image", str(image), "--out", str(out), "--model", str(tiny_model),
                      "--runtime", "torch", "--quiet", limit=200)  # fmt: skip
    assert result.returncode == 6, result.stderr
    assert "Wrote" not in result.stderr and "Nothing was written" in result.stderr and str(out) in result.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["image.nii.gz"]


def test_out_equal_to_the_image_is_refused_before_any_work(tmp_path, tiny_model, image):
    before = image.read_bytes()
    os.link(image, tmp_path / "same.nii.gz")
    for out in (image, tmp_path / "." / "image.nii.gz", tmp_path / "same.nii.gz"):
        assert main(["predict", "--image", str(image), "--out", str(out), "--model", str(tiny_model)]) == 6
    assert image.read_bytes() == before


# --- medium ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["NaN", "Infinity", '"abc"', "true"])
def test_non_finite_and_wrong_type_numbers_are_configuration_errors(tmp_path, value, capsys):
    write_phantom_cases(tmp_path, n=2)
    code = main(["train", "--preset", "cpu_quick", "--train-manifest", str(tmp_path / "manifest.json"),
                 "--out", str(tmp_path / "model"), "--set", f"lr={value}"])  # fmt: skip
    assert code == 2
    assert "'lr' must be" in capsys.readouterr().err
    assert not (tmp_path / "model.run").exists()


def test_a_model_with_non_finite_weights_is_never_saved(tmp_path: Path):
    import torch

    net = build_tiny_model("sam_vit_b", seed=0)
    apply_finetuning(net, FineTuneConfig())
    next(p for p in net.parameters() if p.requires_grad).data.fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match="NaN or infinite"):  # exit 7, "diverged"
        save_trained_model(tmp_path / "m", net, train_config={}, structure="s", data_summary={}, metrics={},
                           extra={"tiny": True})  # fmt: skip
    assert not (tmp_path / "m").exists() and list(tmp_path.iterdir()) == []
    assert torch.isnan(next(p for p in net.parameters() if p.requires_grad)).all()


def test_an_unwritable_output_folder_is_refused_before_computing(tiny_model, image, capsys):
    assert main(["predict", "--image", str(image), "--out", "/sys/seg.nii.gz", "--model", str(tiny_model)]) == 6
    err = capsys.readouterr().err
    assert "not writable" in err and "Segmenting" not in err


def test_mhd_output_is_refused_before_the_image_is_even_read(tmp_path, capsys):
    code = main(["predict", "--image", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "seg.mhd")])
    assert code == 6 and ".mha" in capsys.readouterr().err


def _job(tmp_path: Path, **fields: Any) -> Path:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(fields), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"kind": "predict", "image": "i.nii.gz", "out": "o.nii.gz", "predict": {"threshold": "high"}},
            "'predict.threshold' must be",
        ),
        ({"kind": "predict", "image": "i.nii.gz", "out": 5}, "'out' must be a text"),
        (
            {"kind": "predict", "image": "i.nii.gz", "out": "o.nii.gz", "predict": {"slice_range": [1]}},
            "'predict.slice_range' must be a list of 2",
        ),
        ({"kind": "train", "manifest": "m.json", "run_dir": "r", "overrides": [1]}, "'overrides' must be a JSON"),
        ({"kind": "train", "manifest": "m.json", "run_dir": "r", "preset": ["cpu_quick"]}, "'preset' must be"),
        (
            {
                "kind": "train",
                "manifest": "m.json",
                "run_dir": "r",
                "preset": "cpu_quick",
                "overrides": {"epochs": "many"},
            },
            "'epochs' must be a whole number",
        ),
    ],
    ids=["threshold text", "out number", "slices one value", "overrides list", "preset list", "epochs text"],
)
def test_wrong_value_types_in_a_job_are_configuration_errors(tmp_path, fields, expected):
    from samtune.worker.main import run

    write_phantom_cases(tmp_path, n=2)
    (tmp_path / "m.json").write_text((tmp_path / "manifest.json").read_text(), encoding="utf-8")
    lines: list[str] = []

    class Out:
        def write(self, text: str) -> None:
            lines.extend(text.splitlines())

        def flush(self) -> None:
            pass

    assert run(["--job", str(_job(tmp_path, version=1, **fields))], stdout=Out()) == 2  # type: ignore[arg-type]
    last = json.loads(lines[-1])
    assert last["event"] == "error" and last["kind"] == "configuration" and expected in last["message"]


def test_a_manifest_with_a_number_for_a_file_is_a_data_error(tmp_path: Path):
    from samtune.train.manifest import validate_manifest

    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"cases": [{"id": "a", "image": 5, "label": "l.nii.gz"}]}), encoding="utf-8")
    [problem, missing] = validate_manifest(manifest)
    assert "'image' must be a file name (text), got 5" in problem and "does not exist" in missing


def test_a_damaged_model_card_is_a_weights_error(tmp_path, tiny_model, image, capsys):
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_model, damaged)
    card = json.loads((damaged / "model_card.json").read_text(encoding="utf-8"))
    card["training"] = "oops"
    (damaged / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
    assert main(["predict", "--image", str(image), "--out", str(tmp_path / "o.nii.gz"), "--model", str(damaged)]) == 4
    assert "damaged" in capsys.readouterr().err


def test_predict_and_train_events_end_with_the_error_event(tmp_path, image):
    result = _samtune("predict", "--image", str(image), "--out", str(tmp_path / "o.nii.gz"), "--model", "nonsense",
                      "--events")  # fmt: skip
    last = json.loads(result.stdout.splitlines()[-1])
    assert result.returncode == 2 and last["event"] == "error" and last["kind"] == "configuration"
    (tmp_path / "manifest.json").write_text(json.dumps({"cases": [{"id": "a", "image": "x.nii.gz",
                                                                   "label": "y.nii.gz"}]}))  # fmt: skip
    result = _samtune("train", "--preset", "cpu_quick", "--train-manifest", str(tmp_path / "manifest.json"),
                      "--out", str(tmp_path / "model"), "--events")  # fmt: skip
    last = json.loads(result.stdout.splitlines()[-1])
    assert result.returncode == 3 and last["event"] == "error" and "x.nii.gz" in last["message"]


def _train_job(folder: Path, **overrides: Any):
    from samtune.worker.jobs import TrainJob

    return TrainJob(manifest=str(folder / "manifest.json"), run_dir=str(folder / "run"), preset="cpu_quick",
                    overrides={**TINY, **overrides}, model_dir=str(folder / "model"), tiny=True)  # fmt: skip


def test_a_copied_run_folder_resumes_where_it_is(tmp_path: Path):
    from samtune.worker.jobs import load_run_job
    from samtune.worker.train_job import run_train_job

    (tmp_path / "a").mkdir()
    write_phantom_cases(tmp_path / "a", n=3)
    calls = {"n": 0}

    def stop_at_step_3() -> bool:
        calls["n"] += 1
        return calls["n"] == 3

    with pytest.raises(TrainingCancelledError):
        run_train_job(_train_job(tmp_path / "a", epochs=3), emit=lambda e: None, should_stop=stop_at_step_3)
    stored = json.loads((tmp_path / "a" / "run" / "job.json").read_text(encoding="utf-8"))
    assert stored["run_dir"] == "." and stored["manifest"] == "manifest.json" and stored["model_dir"] == "../model"
    shutil.copytree(tmp_path / "a" / "run", tmp_path / "b" / "run")
    job = load_run_job(tmp_path / "b" / "run")
    assert job.run_dir == str((tmp_path / "b" / "run").resolve())
    model = run_train_job(job, emit=lambda e: None, resume=True)
    assert model == (tmp_path / "b" / "model").resolve() and (model / "weights.safetensors").is_file()
    assert not (tmp_path / "a" / "model").exists()  # the original was never written into


def test_a_run_that_never_trained_can_be_retried_or_resumed_on_another_device(tmp_path: Path):
    from samtune.worker.jobs import job_to_dict, load_run_job
    from samtune.worker.main import run
    from samtune.worker.train_job import run_train_job

    write_phantom_cases(tmp_path, n=3)
    good = (tmp_path / "image0.nii.gz").read_bytes()

    def worker(*args: str) -> tuple[int, dict[str, Any]]:
        lines: list[str] = []
        out = type("Out", (), {"write": lambda self, t: lines.extend(t.splitlines()), "flush": lambda self: None})()
        return run(list(args), stdout=out), json.loads(lines[-1])

    def job_file(**overrides: Any) -> str:
        path = tmp_path / "job.json"
        path.write_text(json.dumps(job_to_dict(_train_job(tmp_path, **overrides))), encoding="utf-8")
        return str(path)

    (tmp_path / "image0.nii.gz").write_bytes(b"not an image")
    assert worker("--job", job_file())[0] == 3  # bad data: the run folder is left with its error recorded
    assert (tmp_path / "run" / "job.json").is_file()
    (tmp_path / "image0.nii.gz").write_bytes(good)
    code, final = worker("--job", job_file(device="cuda:7"))  # the retry replaces it, and fails on the device
    assert code == 5 and final["kind"] == "device"
    model = run_train_job(load_run_job(tmp_path / "run", device="cpu"), emit=lambda e: None, resume=True)
    assert (model / "weights.safetensors").is_file()


def test_a_point_outside_the_image_is_refused_like_a_box():
    with pytest.raises(ConfigurationError, match="outside the volume"):
        point_prompts_from_ijk([(30, 5, 1)], [1], axis=0, shape=(3, 24, 24))
    assert list(point_prompts_from_ijk([(23, 5, 1)], [1], axis=0, shape=(3, 24, 24))) == [1]


# --- low -------------------------------------------------------------------------------------------------


def test_outputs_and_model_folders_follow_the_umask(tmp_path: Path):
    from samtune.data import write_label

    old = os.umask(0o022)
    try:
        path = write_label(Volume(np.zeros((2, 4, 4), np.uint8), Geometry()), tmp_path / "l.nii.gz")
        net = build_tiny_model("sam_vit_b", seed=0)
        apply_finetuning(net, FineTuneConfig())
        folder = save_trained_model(tmp_path / "m", net, train_config={}, structure="s", data_summary={},
                                    metrics={}, extra={"tiny": True})  # fmt: skip
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644 and folder.stat().st_mode & 0o777 == 0o755


def test_a_stop_is_honoured_while_the_embeddings_are_computed():
    from samtune.train import TrainingCase, fine_tune, load_preset

    cases = [TrainingCase(f"c{s}", *make_phantom(shape=(6, 32, 32), seed=s), structure="t", fully_labelled=True)
             for s in range(3)]  # fmt: skip
    events: list[dict[str, Any]] = []
    with pytest.raises(TrainingCancelledError, match="embeddings"):
        fine_tune(cases, load_preset("cpu_quick").train_config(TINY), tiny=True, on_event=events.append,
                  should_stop=lambda: True)  # fmt: skip
    assert [e["stage"] for e in events if e["event"] == "progress"] == ["cache"]  # stopped after the first slice
    assert not any(e["event"] == "metrics" for e in events)


def test_evaluate_refuses_a_negative_tolerance_and_names_absent_structures(tmp_path, capsys):
    from samtune.data import write_label

    empty = Volume(np.zeros((3, 8, 8), np.uint8), Geometry())
    write_label(empty, tmp_path / "p.nii.gz")
    write_label(empty, tmp_path / "r.nii.gz")
    common = ["evaluate", "--pred", str(tmp_path / "p.nii.gz"), "--ref", str(tmp_path / "r.nii.gz")]
    assert main([*common, "--tolerance-mm", "-1"]) == 2
    assert "positive" in capsys.readouterr().err
    assert main([*common, "--structure", "atrium=1", "--csv", str(tmp_path / "s.csv")]) == 0
    assert "absent in both" in capsys.readouterr().out
    assert (tmp_path / "s.csv").read_text(encoding="utf-8").splitlines()[1].endswith(",absent in both")


def test_the_manifest_check_names_unknown_top_level_keys_and_duplicate_ids(tmp_path: Path):
    from samtune.train.manifest import validate_manifest

    write_phantom_cases(tmp_path, n=2)
    data = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    data["cases"][1]["id"] = data["cases"][0]["id"]
    data["casse"] = []
    (tmp_path / "manifest.json").write_text(json.dumps(data), encoding="utf-8")
    problems = validate_manifest(tmp_path / "manifest.json")
    assert any("unknown top-level keys ['casse']" in p for p in problems)
    assert any("used by another case" in p for p in problems)


# --- quiet output ----------------------------------------------------------------------------------------


def test_library_warnings_stay_off_the_terminal_unless_verbose():
    quiet = _samtune("models")
    assert quiet.returncode == 0 and "Warning" not in quiet.stderr and "litemedsam" in quiet.stdout
    verbose = _samtune("-v", "models")
    assert "FutureWarning" in verbose.stderr  # the same warnings, shown on request


# --- found by the review of these fixes ---------------------------------------------------------------


def test_float_images_with_nan_and_vector_images_write_and_read_back(tmp_path: Path):
    from samtune.data import read_volume

    values = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    values[1, 2, 3] = np.nan  # NRRD and MHA keep a NaN voxel; ITK's NIfTI writer stores it as 0
    for name in ("f.nrrd", "f.nii.gz", "f.mha"):
        back = read_volume(write_volume(Volume(values, Geometry()), tmp_path / name)).array
        known = ~np.isnan(values)
        assert np.array_equal(back[known], values[known]) and (name == "f.nii.gz" or np.isnan(back[1, 2, 3]))
    rgb = Volume(np.random.default_rng(1).integers(0, 255, (1, 6, 6, 3)).astype(np.uint8), Geometry())
    assert np.array_equal(read_volume(write_volume(rgb, tmp_path / "rgb.nrrd")).array, rgb.array)


def test_metrics_of_masks_that_fill_the_whole_grid():
    from samtune.metrics import hausdorff_95, normalized_surface_dice

    full = np.ones((4, 6, 6), dtype=bool)
    part = np.zeros_like(full)
    part[1:3, 1:4, 1:4] = True
    assert normalized_surface_dice(full, full, spacing=(1, 1, 1)) == 1.0
    assert hausdorff_95(full, full, spacing=(1, 1, 1)) == 0
    assert hausdorff_95(full, part, spacing=(1, 1, 1)) == float("inf")  # no surface to measure against


def test_job_prompts_may_be_continuous_voxel_positions(tmp_path: Path):
    from samtune.worker.jobs import job_from_dict

    job = job_from_dict({"kind": "predict", "image": "i.nii.gz", "out": "o.nii.gz",
                         "prompts": {"box": [[1.5, 2, 0, 9.5, 9, 2]], "point": [[4.25, 5, 1]]}})  # fmt: skip
    assert job.prompts.box == [[1.5, 2, 0, 9.5, 9, 2]] and job.prompts.point == [[4.25, 5, 1]]


def test_a_run_still_starting_or_a_plain_folder_is_never_replaced(tmp_path: Path):
    from samtune.errors import OutputError
    from samtune.worker.run_folder import RunFolder

    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    run.job.write_text("{}", encoding="utf-8")  # a run still computing its embeddings: no final event yet
    run.events.write_text('{"v": 1, "event": "started"}\n', encoding="utf-8")
    with pytest.raises(OutputError, match="already exists"):
        run.check_start(resume=False)
    run.events.write_text('{"v": 1, "event": "started"}\n{"v": 1, "event": "error", "kind": "data"}\n')
    run.check_start(resume=False)  # a run that failed before its first checkpoint may be replaced
    (run.checkpoints).mkdir()
    (run.checkpoints / "checkpoint-3.pt").write_bytes(b"x")
    with pytest.raises(OutputError, match="already exists"):
        run.check_start(resume=False)


def test_the_run_job_stores_the_model_folder_relative_only_when_it_lies_beside_the_run(tmp_path: Path):
    from samtune.worker.jobs import portable_model_dir

    run = tmp_path / "runs" / "atrium.run"
    assert portable_model_dir(tmp_path / "runs" / "atrium", run) == "../atrium"
    assert portable_model_dir(run / "model", run) == "model"
    assert portable_model_dir(tmp_path / "library" / "atrium", run) == str((tmp_path / "library" / "atrium").resolve())


def test_extra_top_level_manifest_keys_are_reported_but_do_not_stop_training(tmp_path: Path, caplog):
    from samtune.train.manifest import read_manifest

    write_phantom_cases(tmp_path, n=2)
    data = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    data["created_by"] = "a script"
    data["cases"][0]["id"] = 7  # numeric ids are names too
    (tmp_path / "manifest.json").write_text(json.dumps(data), encoding="utf-8")
    entries = read_manifest(tmp_path / "manifest.json")
    assert len(entries) == 2 and "created_by" in caplog.text
