"""Encoder runtimes: ONNX Runtime gives PyTorch's embeddings, is cached on disk under the weights'
fingerprint, and everything falls back to PyTorch cleanly when OpenVINO cannot be used."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from samtune.data import make_phantom
from samtune.errors import ConfigurationError
from samtune.models import build_tiny_model
from samtune.models.runtime import decoder_fingerprint, decoder_runtime, encoder_fingerprint, encoder_runtime
from samtune.peft import FineTuneConfig, apply_finetuning
from samtune.peft.conv_lora import ConvLoRAQKV
from samtune.predict import PredictConfig, predict_volume
from samtune.predict.session import PredictorSession
from samtune.worker.client import WORKER_ENV

pytest.importorskip("onnxruntime", reason="onnxruntime is part of the development requirements")


@pytest.fixture(params=["litemedsam", "sam_vit_b"])
def model(request):
    return build_tiny_model(request.param, seed=0).eval()


def test_onnxruntime_equals_torch_and_is_cached(model, tmp_path, monkeypatch):
    images = torch.randn(2, 3, model.input_size, model.input_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.encode(images)
    conversions = []
    real_export = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: conversions.append(1) or real_export(*a, **k))

    first = encoder_runtime(model, "onnxruntime", cache_dir=tmp_path)
    assert first.name == "onnxruntime" and "exported" in first.reason
    got = first(images)
    assert got.shape == expected.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)

    forwards = []
    hook = model.image_encoder.register_forward_hook(lambda *_: forwards.append(1))
    second = encoder_runtime(model, "onnxruntime", cache_dir=tmp_path)  # same weights: read from disk
    hook.remove()
    assert "loaded from" in second.reason and len(conversions) == 1
    assert not forwards  # a cached export was checked when it was made, not again at every load
    torch.testing.assert_close(second(images), expected, atol=1e-4, rtol=1e-4)
    entries = [p for p in tmp_path.iterdir()]
    assert len(entries) == 1 and sorted(f.name for f in entries[0].iterdir()) == ["encoder.onnx"]


def test_changed_weights_get_their_own_entry(tmp_path):
    model = build_tiny_model("litemedsam", seed=0).eval()
    before = encoder_fingerprint(model)
    encoder_runtime(model, "onnxruntime", cache_dir=tmp_path)
    with torch.no_grad():
        next(model.image_encoder.parameters()).add_(0.5)  # e.g. an encoder fine-tuned with LoRA
    assert encoder_fingerprint(model) != before
    updated = encoder_runtime(model, "onnxruntime", cache_dir=tmp_path)
    assert "exported" in updated.reason and len(list(tmp_path.iterdir())) == 2
    images = torch.randn(1, 3, model.input_size, model.input_size)
    with torch.no_grad():
        torch.testing.assert_close(updated(images), model.encode(images), atol=1e-4, rtol=1e-4)


def test_fallbacks_and_errors(monkeypatch, tmp_path):
    model = build_tiny_model("litemedsam", seed=0).eval()
    assert encoder_runtime(model, "auto").name == "torch"  # tiny test configurations are never exported
    assert encoder_runtime(model, "torch").name == "torch"
    with pytest.raises(ConfigurationError, match="expected one of auto, torch, onnxruntime"):
        encoder_runtime(model, "tensorrt")
    with pytest.raises(ConfigurationError, match="Unknown encoder runtime 'onnx'. Did you mean 'onnxruntime'"):
        PredictConfig(runtime="onnx")

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the optional package were not installed
    model.tiny = False
    chosen = encoder_runtime(model, "auto", cache_dir=tmp_path)
    assert chosen.name == "torch" and "not installed" in chosen.reason
    with pytest.raises(ConfigurationError, match="not installed"):
        encoder_runtime(model, "onnxruntime", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_failed_conversion_falls_back_without_leaving_files(monkeypatch, tmp_path):
    model = build_tiny_model("litemedsam", seed=0).eval()
    model.tiny = False

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operation")

    monkeypatch.setattr(torch.onnx, "export", broken)
    chosen = encoder_runtime(model, "auto", cache_dir=tmp_path)
    assert chosen.name == "torch" and "unsupported operation" in chosen.reason
    with pytest.raises(ConfigurationError, match="could not be exported"):
        encoder_runtime(model, "onnxruntime", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_prediction_and_session_give_the_same_masks_with_onnxruntime(monkeypatch, tmp_path):
    monkeypatch.setenv("SAMTUNE_RUNTIME_CACHE", str(tmp_path))
    model = build_tiny_model("litemedsam", seed=3).eval()
    image, _ = make_phantom(shape=(5, 40, 48), seed=2)
    reference = predict_volume(model, image, PredictConfig(runtime="torch", threshold=0.45)).array
    fast = predict_volume(model, image, PredictConfig(runtime="onnxruntime", threshold=0.45)).array
    assert reference.any() and np.array_equal(reference, fast)
    session = PredictorSession(model, image, axis="k", runtime="onnxruntime")
    assert session.runtime.name == "onnxruntime"
    with torch.no_grad():
        torch.testing.assert_close(
            session.embedding(2),
            PredictorSession(model, image, axis="k", runtime="torch").embedding(2),
            atol=1e-4,
            rtol=1e-4,
        )


def test_an_export_that_differs_from_pytorch_is_refused_and_removed(monkeypatch, tmp_path):
    model = build_tiny_model("litemedsam", seed=0).eval()
    model.tiny = False
    real_export = torch.onnx.export

    def skewed(module, args, path, **kwargs):  # as if tracing had frozen a data-dependent branch
        clone = copy.deepcopy(module)
        with torch.no_grad():
            next(clone.parameters()).add_(1.0)
        return real_export(clone, args, path, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", skewed)
    chosen = encoder_runtime(model, "auto", cache_dir=tmp_path)
    assert chosen.name == "torch" and "differs from PyTorch" in chosen.reason
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("family", ["litemedsam", "sam_vit_b"])
def test_a_lora_encoder_is_exported_merged_and_gives_its_own_embeddings(family, tmp_path):
    model = build_tiny_model(family, seed=0)
    apply_finetuning(model, FineTuneConfig(method="lora", scope="encoder_decoder"))
    with torch.no_grad():  # a trained adapter (B starts at zero: the delta would vanish)
        for name, parameter in model.image_encoder.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(1))
    model.eval()
    images = torch.randn(2, 3, model.input_size, model.input_size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model.encode(images)
        plain = build_tiny_model(family, seed=0).eval().encode(images)
    assert not torch.allclose(want, plain, atol=1e-3)  # the adapter changes the embeddings
    chosen = encoder_runtime(model, "onnxruntime", cache_dir=tmp_path)
    assert chosen.name == "onnxruntime", chosen.reason
    torch.testing.assert_close(chosen.encode(images), want, atol=1e-4, rtol=1e-4)
    # The model itself is untouched: its adapters still train, unmerged.
    assert not any(getattr(m, "merged", False) for m in model.modules())
    assert any(p.requires_grad for n, p in model.image_encoder.named_parameters() if "lora_" in n)


def test_conv_lora_encoders_stay_in_pytorch(tmp_path):
    model = build_tiny_model("litemedsam", seed=0).eval()
    model.tiny = False
    model.image_encoder.add_module("routed", ConvLoRAQKV(torch.nn.Linear(8, 24), rank=2, alpha=2.0, scales=[1, 2]))
    chosen = encoder_runtime(model, "auto", cache_dir=tmp_path)
    assert chosen.name == "torch" and "Conv-LoRA" in chosen.reason
    assert list(tmp_path.iterdir()) == []


def test_the_onnxruntime_decoder_equals_torch_with_and_without_a_box(model, tmp_path):
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        embeddings = model.encode(torch.randn(3, 3, model.input_size, model.input_size, generator=generator))
    boxes = torch.tensor([[2.0, 3.0, 20.0, 25.0], [0.0, 0.0, 10.0, 12.0], [5.0, 6.0, 30.0, 31.0]])
    fast = decoder_runtime(model, "onnxruntime", cache_dir=tmp_path)
    assert fast.name == "onnxruntime" and "exported" in fast.reason
    with torch.no_grad():
        for prompt in (None, boxes):
            want_logits, want_scores = model.decode(embeddings, boxes=prompt)
            logits, scores = fast(embeddings, prompt)
            torch.testing.assert_close(logits, want_logits, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(scores, want_scores, atol=1e-4, rtol=1e-4)
    again = decoder_runtime(model, "onnxruntime", cache_dir=tmp_path)
    assert "loaded from" in again.reason
    before = decoder_fingerprint(model)
    with torch.no_grad():
        next(model.mask_decoder.parameters()).add_(0.5)  # a fine-tuned decoder: its own export
    assert decoder_fingerprint(model) != before and encoder_fingerprint(model)
    updated = decoder_runtime(model, "onnxruntime", cache_dir=tmp_path)
    assert "exported" in updated.reason and len(list(tmp_path.iterdir())) == 2
    with torch.no_grad():
        torch.testing.assert_close(updated(embeddings)[0], model.decode(embeddings)[0], atol=1e-4, rtol=1e-4)
    assert decoder_runtime(model, "auto").name == "torch"  # tiny configurations stay in PyTorch


def test_a_kept_pretrained_decoder_refines_in_the_same_runtime(tmp_path):
    model = build_tiny_model("litemedsam", seed=0).eval()
    assert decoder_runtime(model, "onnxruntime", cache_dir=tmp_path).refine is None  # nothing kept
    model.keep_box_decoder()
    with torch.no_grad():
        next(model.mask_decoder.parameters()).add_(0.5)  # fine-tuned after the copy was kept
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        embeddings = model.encode(torch.randn(2, 3, model.input_size, model.input_size, generator=generator))
    boxes = torch.tensor([[2.0, 3.0, 20.0, 25.0], [5.0, 6.0, 30.0, 31.0]])
    fast = decoder_runtime(model, "onnxruntime", cache_dir=tmp_path)
    assert fast.name == "onnxruntime" and fast.refine is not None
    with torch.no_grad():
        want, _ = model.box_decoder.decode(embeddings, boxes=boxes)
        torch.testing.assert_close(fast.refine(embeddings, boxes)[0], want, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(want, model.decode(embeddings, boxes=boxes)[0], atol=1e-2)
        torch.testing.assert_close(decoder_runtime(model, "torch").refine(embeddings, boxes)[0], want)
    # The kept decoder is the unmodified one: its export is the one made before, reused.
    assert len(list(tmp_path.iterdir())) == 2


# The pinned wheel records nothing where one of these is set (the build-server names are in its binary): a CI
# machine sets some of them, and with them the control below would find nothing to switch off.
_NOT_ON_A_USERS_MACHINE = frozenset(
    [
        "ORT_DISABLE_TELEMETRY",
        "ORT_RUNNING_UNIT_TESTS",
        "CI",
        "TF_BUILD",
        "GITHUB_ACTIONS",
        "GITLAB_CI",
        "CIRCLECI",
        "TRAVIS",
        "JENKINS_URL",
        "CODEBUILD_BUILD_ID",
        "BUILDKITE",
        "TEAMCITY_VERSION",
        "APPVEYOR",
        "BITBUCKET_BUILD_NUMBER",
    ]
)


def _fresh_python(code: str, home: Path, env_updates: dict[str, str] | None = None) -> str:
    """Run ``code`` in a fresh Python whose home (and cache) is ``home``; its standard error."""
    env = {k: v for k, v in os.environ.items() if k not in _NOT_ON_A_USERS_MACHINE}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), **(env_updates or {}))
    home.mkdir(exist_ok=True)
    run = subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120, capture_output=True, text=True)
    return run.stderr


def _files_written_by(code: str, home: Path, env_updates: dict[str, str] | None = None) -> list[Path]:
    """Run ``code`` in a fresh Python whose home (and cache) is ``home``; the files it left there."""
    _fresh_python(code, home, env_updates)
    return [path for path in home.rglob("*") if path.is_file()]


def test_onnx_runtime_is_imported_with_its_telemetry_off(tmp_path):
    # What the pinned wheel does on its own: importing it queues a "ProcessInfo" event with a device ID for upload.
    plain = _files_written_by("import onnxruntime", tmp_path / "plain")
    assert "onnxruntime.db" in {path.name for path in plain}, "onnxruntime no longer records telemetry on import"
    # SAMTune's import, and running a session (the tiny encoder's export and check), leave nothing else.
    home = tmp_path / "samtune"
    code = (
        "import torch\n"
        "from samtune.models import build_tiny_model\n"
        "from samtune.models.runtime import encoder_runtime\n"
        "model = build_tiny_model('litemedsam', seed=0).eval()\n"
        f"runtime = encoder_runtime(model, 'onnxruntime', cache_dir={str(home / 'runtime')!r})\n"
        "runtime(torch.zeros(1, 3, model.input_size, model.input_size))\n"
    )
    left = _files_written_by(code, home)
    assert left and all(path.is_relative_to(home / "runtime") for path in left), left
    # The worker's environment keeps it off even for code that imports onnxruntime before SAMTune does.
    assert _files_written_by("import onnxruntime", tmp_path / "worker", WORKER_ENV) == []


def test_an_onnx_runtime_imported_before_samtune_is_reported(tmp_path):
    code = (
        "import logging, onnxruntime\n"
        "from samtune.privacy import onnxruntime_module\n"
        "logging.basicConfig()\n"
        "onnxruntime_module(); onnxruntime_module()\n"
    )
    stderr = _fresh_python(code, tmp_path)
    assert stderr.count("imported before SAMTune could switch its telemetry off") == 1, stderr
    assert "ORT_DISABLE_TELEMETRY=1" in stderr


def test_the_product_imports_onnx_runtime_only_through_the_telemetry_switch():
    import re

    import samtune.privacy as privacy

    root = Path(privacy.__file__).resolve().parents[3]  # the core, the Slicer module and the effect
    pattern = re.compile(r"^\s*(import onnxruntime|from onnxruntime)", re.MULTILINE)
    product = [path for folder in ("SAMTune", "SegmentEditorSAMAuto") for path in (root / folder).rglob("*.py")]
    importers = {path.relative_to(root).as_posix(): len(pattern.findall(path.read_text(encoding="utf-8")))
                 for path in product if pattern.search(path.read_text(encoding="utf-8"))}  # fmt: skip
    assert len(product) > 50 and importers == {"SAMTune/Logic/samtune/privacy.py": 2}
    source = Path(privacy.__file__).read_text(encoding="utf-8")
    assert source.index("os.environ.update(TELEMETRY_OFF)") < source.index("import onnxruntime")
    # The quantisation tools (int8 decoder copies) are imported only after the switch, in the same module.
    quantization = source.index("from onnxruntime import quantization")
    assert source.rindex("onnxruntime_module()", 0, quantization) > source.index("def onnxruntime_quantization")


def test_onnx_runtime_sessions_do_not_spin_between_runs(tmp_path):
    # A prediction alternates sessions; spinning threads of one held the cores the next needed (bench_decoder.py).
    from samtune.models.onnx_graphs import Graph, load_sessions
    from samtune.privacy import onnxruntime_module

    model = build_tiny_model("litemedsam", seed=0).eval()
    encoder_runtime(model, "onnxruntime", cache_dir=tmp_path)  # exports the graph
    folder = next(tmp_path.glob("*-onnx"))
    graph = Graph("encoder.onnx", model.image_encoder, (), ("images",), ("embeddings",))  # loaded, not exported
    (session,), _ = load_sessions(model.image_encoder, folder, [graph], what="encoder")
    options = session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert isinstance(session, onnxruntime_module().InferenceSession)
