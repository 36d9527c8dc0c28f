"""Job documents (samtune.worker.jobs): reading, paths, refusals, round trip, the resolved training configuration.

Named ``test_job_documents.py``, not ``test_jobs.py``: the suite imports test modules by their basename
(no ``__init__.py``), and ``unit/slicer/test_jobs.py`` already holds that name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from samtune.data.slicing import SliceConfig
from samtune.errors import (
    EXIT_CODES,
    CancelledError,
    ConfigurationError,
    DataError,
    OutputError,
    SAMTuneError,
    TrainingCancelledError,
    UnknownNameError,
    WeightsError,
)
from samtune.predict.config import PredictConfig, PromptSpec
from samtune.train.config import TrainConfig
from samtune.train.presets import changed_fields, load_preset, resolve_train_config
from samtune.worker.events import event_line, parse_event_line
from samtune.worker.jobs import (
    PredictJob,
    TrainJob,
    job_from_dict,
    job_to_dict,
    load_job,
    load_run_job,
    terminal_event,
)

PREDICT = {
    "version": 1,
    "kind": "predict",
    "image": "images/new.nii.gz",
    "out": "out/new-seg.nii.gz",
    "model": "models/atrium",
    "prompts": {"box": [[10, 12, 3, 40, 44, 9]], "point": [[20, 21, 5]], "neg_point": [[1, 2, 3], [4, 5, 6]]},
    "predict": {"threshold": 0.4, "batch_size": 2, "slice_range": [1, 8], "slices": {"axis": "k"}},
}


def _write(folder: Path, data: Any, name: str = "job.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def _refusal(data: Any, **kwargs: Any) -> str:
    with pytest.raises(ConfigurationError) as info:
        job_from_dict(data, **kwargs)
    return str(info.value)


# --- reading a job file --------------------------------------------------------------------------------


def test_relative_paths_of_a_training_job_are_resolved_against_the_job_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "jobs").mkdir()
    path = _write(
        tmp_path / "jobs",
        {
            "kind": "train",
            "preset": "cpu_quick",
            "manifest": "data/cases.json",
            "run_dir": "../runs/atrium",
            "model_dir": "models/atrium",
            "weights": "/abs/sam.pth",
        },
    )
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the working directory must not matter
    job = load_job(path)
    assert isinstance(job, TrainJob)
    base = (tmp_path / "jobs").resolve()
    assert job.manifest == str(base / "data" / "cases.json")
    assert job.run_dir == str((tmp_path / "runs" / "atrium").resolve())
    assert job.model_dir == str(base / "models" / "atrium")
    assert job.weights == "/abs/sam.pth"  # absolute paths stay as they are


def test_relative_paths_of_a_prediction_job_are_resolved_and_a_backbone_name_is_kept(tmp_path: Path) -> None:
    (tmp_path / "models" / "atrium").mkdir(parents=True)
    job = load_job(_write(tmp_path, {**PREDICT, "weights": "w/lite.pth"}))
    assert isinstance(job, PredictJob)
    root = tmp_path.resolve()
    assert job.image == str(root / "images" / "new.nii.gz") and job.out == str(root / "out" / "new-seg.nii.gz")
    assert job.weights == str(root / "w" / "lite.pth")
    assert job.model == str(root / "models" / "atrium")  # an existing model folder beside the job
    backbone = load_job(_write(tmp_path, {**PREDICT, "model": "litemedsam"}, "backbone.json"))
    assert backbone.model == "litemedsam"  # a backbone name is not a path


def test_a_nested_prediction_job_builds_its_prompts_and_settings(tmp_path: Path) -> None:
    job = load_job(_write(tmp_path, PREDICT))
    assert isinstance(job, PredictJob) and job.kind == "predict" and job.version == 1
    assert isinstance(job.prompts, PromptSpec)
    assert job.prompts.box == [[10, 12, 3, 40, 44, 9]] and job.prompts.point == [[20, 21, 5]]
    assert job.prompts.neg_point == [[1, 2, 3], [4, 5, 6]]
    assert job.mode == "prompted"
    assert isinstance(job.predict, PredictConfig) and isinstance(job.predict.slices, SliceConfig)
    assert job.predict.threshold == 0.4 and job.predict.batch_size == 2 and job.predict.slice_range == (1, 8)
    assert job.predict.slices.axis == "k"
    assert job.device == "auto" and job.name == "Segment_1"  # defaults of the keys not given


def test_a_prediction_job_without_prompts_is_automatic() -> None:
    plain = {"kind": "predict", "image": "i.nii.gz", "out": "o.nii.gz"}
    job = job_from_dict(plain)
    assert isinstance(job, PredictJob) and job.prompts is None and job.mode == "automatic"
    assert job.predict == PredictConfig()
    assert job_from_dict({**plain, "prompts": {}}).mode == "automatic"
    assert job_from_dict({**plain, "prompts": {"neg_point": [[1, 2, 3]]}}).mode == "prompted"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"kind": "segment", "image": "i", "out": "o"}, "'kind' must be 'train' or 'predict', got 'segment'."),
        ({"image": "i", "out": "o"}, "'kind' must be 'train' or 'predict', got None."),
        ({"kind": "train", "version": 2, "manifest": "m", "run_dir": "r"}, "job version 2 is not supported"),
        ({"kind": "predict", "version": 0, "image": "i", "out": "o"}, "this SAMTune reads version 1"),
        ({"kind": "train", "preset": "cpu_quick"}, "a train job needs 'manifest', 'run_dir'."),
        ({"kind": "train", "manifest": "m.json"}, "a train job needs 'run_dir'."),
        ({"kind": "predict", "image": "i.nii.gz"}, "a predict job needs 'out'."),
        ({"kind": "predict"}, "a predict job needs 'image', 'out'."),
    ],
    ids=[
        "unknown kind",
        "no kind",
        "version 2",
        "version 0",
        "train lacks both",
        "train lacks run_dir",
        "predict lacks out",
        "predict lacks both",
    ],
)
def test_unknown_kinds_versions_and_missing_keys_are_refused(data: dict[str, Any], expected: str) -> None:
    message = _refusal(data, where="my-job.json")
    assert message.startswith("my-job.json: ") and expected in message


def test_a_job_that_is_not_an_object_is_refused() -> None:
    assert "job: a job is a JSON object, got list." in _refusal([{"kind": "train"}])


def test_unknown_keys_are_named_also_inside_the_prediction_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"'predict\.treshold'.*Did you mean 'threshold'\?"):
        load_job(_write(tmp_path, {**PREDICT, "predict": {"treshold": 0.5}}))
    with pytest.raises(ConfigurationError, match=r"'prompts\.boxes'.*Did you mean 'box'\?"):
        load_job(_write(tmp_path, {**PREDICT, "prompts": {"boxes": [[1, 2, 3, 4, 5, 6]]}}))


def test_malformed_json_is_reported_with_its_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, '{\n  "kind": "train",\n  "manifest": ,\n  "run_dir": "r"\n}')
    with pytest.raises(ConfigurationError) as info:
        load_job(path)
    message = str(info.value)
    assert str(path) in message and "is not valid JSON" in message
    assert "at line 3, column 15." in message  # the comma where a value should be


def test_an_unreadable_job_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="Cannot read job file .*missing.json"):
        load_job(tmp_path / "missing.json")
    with pytest.raises(ConfigurationError, match="Cannot read job file"):
        load_job(tmp_path)  # a folder


# --- writing a job back ---------------------------------------------------------------------------------


def test_a_prediction_job_round_trips_through_job_to_dict_and_json() -> None:
    job = job_from_dict(PREDICT)
    data = json.loads(json.dumps(job_to_dict(job)))
    assert data["kind"] == "predict" and data["version"] == 1
    assert data["prompts"] == PREDICT["prompts"]
    assert data["predict"]["slice_range"] == [1, 8] and data["predict"]["runtime"] == "auto"
    assert data["predict"]["slices"]["axis"] == "k"
    assert job_from_dict(data) == job


def test_a_training_job_round_trips_through_job_to_dict_and_json(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    job = TrainJob(
        manifest=str(root / "m.json"),
        run_dir=str(root / "run"),
        preset="cpu_quick",
        overrides={"epochs": 5, "finetune": {"lora": {"rank": 8}}},
        structure="atrium",
        tiny=True,
    )
    data = json.loads(json.dumps(job_to_dict(job)))
    assert data["kind"] == "train" and data["overrides"] == {"epochs": 5, "finetune": {"lora": {"rank": 8}}}
    assert job_from_dict(data) == job
    assert load_job(_write(tmp_path, data)) == job  # absolute paths survive the file's own folder


# --- the training configuration of a job ------------------------------------------------------------------


def test_the_training_configuration_is_the_preset_with_the_overrides_deep_merged() -> None:
    overrides = {"epochs": 5, "device": "cpu", "finetune": {"lora": {"rank": 8}}}
    job = TrainJob(manifest="m.json", run_dir="r", preset="cpu_quick", overrides=overrides)
    config = job.train_config()
    assert isinstance(config, TrainConfig)
    assert config == resolve_train_config("cpu_quick", overrides=overrides)
    preset = load_preset("cpu_quick").config
    assert config.epochs == 5 and config.device == "cpu" and config.finetune.lora.rank == 8
    assert config.lr == preset["lr"] and config.backbone == preset["backbone"]  # the rest is the preset's
    assert config.finetune.method.value == preset["finetune"]["method"]  # merged, not replaced
    assert config.finetune.scope.value == preset["finetune"]["scope"]
    assert job.overrides == {"epochs": 5, "device": "cpu", "finetune": {"lora": {"rank": 8}}}  # unchanged


def test_a_job_configuration_goes_on_top_of_the_preset_and_the_overrides_on_top_of_both() -> None:
    job = TrainJob(
        manifest="m.json", run_dir="r", preset="cpu_quick", config={"epochs": 9, "lr": 0.02}, overrides={"epochs": 3}
    )
    config = job.train_config()
    assert config.epochs == 3 and config.lr == 0.02
    assert config.warmup_steps == load_preset("cpu_quick").config["warmup_steps"]
    alone = TrainJob(manifest="m.json", run_dir="r", config={"backbone": "sam_vit_b", "epochs": 2}).train_config()
    assert alone.backbone == "sam_vit_b" and alone.epochs == 2 and alone.lr == TrainConfig().lr


def test_a_training_job_needs_a_known_preset_or_a_configuration() -> None:
    with pytest.raises(ConfigurationError, match="needs a 'preset' or a 'config'"):
        TrainJob(manifest="m.json", run_dir="r").train_config()
    with pytest.raises(UnknownNameError, match="cpu_quik.*cpu_quick"):
        TrainJob(manifest="m.json", run_dir="r", preset="cpu_quik").train_config()
    with pytest.raises(ConfigurationError, match="Unknown configuration key 'epoch'. Did you mean 'epochs'"):
        TrainJob(manifest="m.json", run_dir="r", preset="cpu_quick", overrides={"epoch": 3}).train_config()


def test_changed_fields_returns_only_what_differs_from_the_preset() -> None:
    values = resolve_train_config("cpu_quick").to_dict()
    assert changed_fields("cpu_quick", values) == {}
    values["epochs"] = 7
    values["finetune"]["lora"]["rank"] = 8
    values["augment"]["zoom"] = tuple(values["augment"]["zoom"])  # a tuple equals the preset's list
    assert changed_fields("cpu_quick", values) == {"epochs": 7, "finetune": {"lora": {"rank": 8}}}
    # what it returns rebuilds the same configuration as overrides of the preset
    rebuilt = resolve_train_config("cpu_quick", overrides=changed_fields("cpu_quick", values))
    assert rebuilt == TrainConfig.from_dict(values)


def test_changed_fields_keeps_partial_values_and_keys_the_preset_lacks() -> None:
    preset = load_preset("cpu_quick")
    assert changed_fields(preset, {"lr": preset.config["lr"], "device": "cpu"}) == {"device": "cpu"}
    assert changed_fields(preset, {"finetune": {"scope": "encoder_decoder"}}) == {
        "finetune": {"scope": "encoder_decoder"}
    }
    assert changed_fields(preset, {"future_option": 1}) == {"future_option": 1}


# --- how a job ends ----------------------------------------------------------------------------------------


def test_a_cancelled_training_job_ends_with_a_cancelled_event_that_says_how_to_resume() -> None:
    job = TrainJob(manifest="/d/m.json", run_dir="/runs/atrium", preset="cpu_quick")
    final = terminal_event(TrainingCancelledError("Stopped at step 3."), job, signal="SIGTERM")
    assert final == {
        "event": "cancelled",
        "message": "Stopped at step 3.",
        "signal": "SIGTERM",
        "run_dir": "/runs/atrium",
        "resume": "python -m samtune.worker --resume /runs/atrium",
    }
    event = parse_event_line(event_line(final))
    assert event is not None and event["event"] == "cancelled"


def test_a_cancelled_prediction_has_no_run_folder_to_resume() -> None:
    job = job_from_dict({"kind": "predict", "image": "i.nii.gz", "out": "o.nii.gz"})
    for ended in (job, None):
        final = terminal_event(CancelledError("Stopped."), ended)
        assert final == {"event": "cancelled", "message": "Stopped.", "signal": None, "run_dir": ""}


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (ConfigurationError("bad key"), "configuration"),
        (DataError("no label"), "data"),
        (WeightsError("damaged"), "weights"),
        (OutputError("disk full"), "output"),
        (SAMTuneError("surprise"), "internal"),
    ],
)
def test_an_error_ends_with_an_error_event_with_its_kind_and_exit_code(error: SAMTuneError, kind: str) -> None:
    job = TrainJob(manifest="m.json", run_dir="r", preset="cpu_quick")
    final = terminal_event(error, job, signal="SIGTERM")
    assert final == {"event": "error", "kind": kind, "message": str(error), "exit_code": EXIT_CODES[kind]}
    assert parse_event_line(event_line(final)) is not None


# --- the job of a run folder -------------------------------------------------------------------------------


def test_a_folder_without_job_json_is_not_a_run_to_resume(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "events.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(OutputError, match=r"Cannot resume '.*run': it holds no job\.json"):
        load_run_job(tmp_path / "run")
    with pytest.raises(OutputError, match="holds no job.json"):
        load_run_job(tmp_path / "absent")


def test_a_run_folder_holding_a_prediction_job_is_not_a_training_run(tmp_path: Path) -> None:
    _write(tmp_path, {"kind": "predict", "image": "i.nii.gz", "out": "o.nii.gz"})
    with pytest.raises(OutputError, match="is a predict job, not a training run"):
        load_run_job(tmp_path)


def test_the_run_job_takes_the_folder_where_it_is_and_the_device_given(tmp_path: Path) -> None:
    """A run folder's job.json stores its paths relative to the folder (``run_dir`` is ``.``)."""
    run = tmp_path / "copied" / "run"
    run.mkdir(parents=True)
    _write(
        run,
        {
            "kind": "train",
            "preset": "cpu_quick",
            "manifest": "manifest.json",
            "run_dir": "/elsewhere/run",
            "model_dir": "../model",
            "overrides": {"epochs": 4, "device": "cuda:1"},
        },
    )
    job = load_run_job(run, device="cpu")
    assert job.run_dir == str(run.resolve())  # not the recorded one: a copy never writes into its original
    assert job.manifest == str(run.resolve() / "manifest.json")
    assert job.model_dir == str((tmp_path / "copied" / "model").resolve())
    assert job.overrides == {"epochs": 4, "device": "cpu"}
    assert load_run_job(run).overrides == {"epochs": 4, "device": "cuda:1"}  # no device given: the recorded one


@pytest.mark.parametrize(("prompts", "expected"), [({"box": [[1, 2, 3]]}, "prompts.box is [i0, j0, k0, i1, j1, k1]"),
                                                   ({"point": [[1, 2]]}, "prompts.point is [i, j, k]"),
                                                   (5, "'job.prompts' must be a JSON object")])  # fmt: skip
def test_malformed_prompts_are_configuration_errors_when_the_job_is_read(prompts: Any, expected: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(expected)):
        job_from_dict({"kind": "predict", "image": "i.nii.gz", "out": "o.nii.gz", "prompts": prompts})


def test_a_flat_prediction_job_of_the_older_form_says_where_its_keys_went() -> None:
    with pytest.raises(ConfigurationError, match=r"'threshold' is now 'predict.threshold', 'box' is now 'prompts.box'"):
        job_from_dict({"kind": "predict", "image": "i.nii.gz", "out": "o.nii.gz", "threshold": 0.4, "box": [[0] * 6]})
