"""The command line documents every option and fails early with clear messages."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from samtune.cli import EXIT_CODES, build_parser, main


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no sub-commands")


def test_every_command_and_option_has_help_text() -> None:
    parser = build_parser()
    commands = _subparsers(parser)
    assert {"models", "predict", "demo"} <= set(commands)
    for name, sub in commands.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"`samtune {name} {action.option_strings}` has no help text"


def test_top_level_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("models", "predict", "demo"):
        assert command in out


def test_predict_into_missing_folder_fails_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "no-such-folder" / "seg.nii.gz"
    code = main(["predict", "--image", str(tmp_path / "missing.nii.gz"), "--out", str(out)])
    assert code == EXIT_CODES["output"]
    err = capsys.readouterr().err
    assert "does not exist" in err and "Create it first" in err
    assert not out.parent.exists()


def test_predict_rejects_unsupported_output_suffix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["predict", "--image", "x.nii.gz", "--out", str(tmp_path / "seg.jpg")])  # JPEG is lossy
    assert code == EXIT_CODES["output"]
    assert ".seg.nrrd" in capsys.readouterr().err


def test_bad_slice_range_is_an_argument_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--image", "a.nii", "--out", "b.nii", "--slices", "10-20"])
    assert exit_info.value.code == 2
    assert "START:STOP" in capsys.readouterr().err


def test_docs_cli_mentions_every_option() -> None:
    docs = (Path(__file__).resolve().parents[4] / "docs" / "cli.md").read_text(encoding="utf-8")
    for name, sub in _subparsers(build_parser()).items():
        assert f"samtune {name}" in docs
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert option in docs, f"docs/cli.md does not document `samtune {name} {option}`"


def test_models_lists_backbones_and_where_weights_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SAMTUNE_WEIGHTS_DIR", str(tmp_path))
    (tmp_path / "sam_vit_b_01ec64.pth").write_bytes(b"x")
    assert main(["models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "bundled" in lines["litemedsam"] and "lite_medsam.pth" in lines["litemedsam"]
    assert "present" in lines["sam_vit_b"] and str(tmp_path) in lines["sam_vit_b"]
    assert "missing" in lines["sam_vit_h"] and "--weights" in lines["sam_vit_h"]
    assert "256x256" in lines["litemedsam"] and "1024x1024" in lines["mobilesam_vit_t"]


def test_unknown_model_is_a_configuration_error_with_a_suggestion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from samtune.data import make_phantom, write_volume

    image, _ = make_phantom(shape=(2, 16, 16))
    write_volume(image, tmp_path / "image.nii.gz")
    code = main(["predict", "--image", str(tmp_path / "image.nii.gz"), "--out", str(tmp_path / "o.nii.gz"),
                 "--model", "litemedsum", "--device", "cpu"])  # fmt: skip
    assert code == EXIT_CODES["configuration"]
    assert "Did you mean 'litemedsam'" in capsys.readouterr().err
    assert not (tmp_path / "o.nii.gz").exists()


def test_a_bad_prediction_setting_still_ends_the_event_stream_with_an_error(tmp_path, capsys) -> None:
    import json

    code = main(["predict", "--image", "i.nii.gz", "--out", str(tmp_path / "o.nii.gz"), "--slice-search", "1",
                 "--events"])  # fmt: skip
    assert code == 2
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["event"] == "error" and last["kind"] == "configuration" and "slice_search" in last["message"]


def test_enumerated_options_ignore_case() -> None:
    args = build_parser().parse_args(["predict", "--image", "i.nii", "--out", "o.nii", "--runtime", "TORCH"])
    from samtune.cli.options import options_to_dict
    from samtune.worker.jobs import PredictJob

    assert options_to_dict(PredictJob, args)["predict"]["runtime"] == "torch"
