"""The int8 mask decoder: made once and reused, checked against fp32 before use, a failed check falls
back to fp32 with its reason (and is remembered), and nothing half-written is left behind."""

from __future__ import annotations

import pytest
import torch

from samtune.errors import SAMTuneError
from samtune.models import build_tiny_model, onnx_graphs
from samtune.models.runtime import decoder_runtime
from samtune.predict import PredictConfig

pytest.importorskip("onnxruntime", reason="onnxruntime is part of the development requirements")


def _embeddings(model, n: int = 4, seed: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return model.encode(torch.randn(n, 3, model.input_size, model.input_size, generator=generator))


def _files(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_the_int8_decoder_is_made_once_agrees_with_fp32_and_is_reused(tmp_path, monkeypatch):
    model = build_tiny_model("litemedsam", seed=0).eval()
    model.keep_box_decoder()
    with torch.no_grad():
        next(model.mask_decoder.parameters()).add_(0.5)  # fine-tuned: its own graphs beside the pretrained ones
    fp32 = decoder_runtime(model, "onnxruntime", cache_dir=tmp_path)
    int8 = decoder_runtime(model, "onnxruntime", cache_dir=tmp_path, precision="int8")
    assert (fp32.summary, int8.summary) == ("onnxruntime fp32", "onnxruntime int8")
    assert "int8 copies" in int8.reason and int8.refine is not None
    copies = [name for name in _files(tmp_path) if name.endswith(".int8.onnx")]
    assert copies == ["automatic.int8.onnx", "automatic.int8.onnx", "box.int8.onnx", "box.int8.onnx"]
    assert not any("partial" in name or "rejected" in name for name in _files(tmp_path))
    embeddings = _embeddings(model)
    boxes = torch.tensor([[2.0, 3.0, 20.0, 25.0]] * 4)
    for prompt in (None, boxes):
        want, want_scores = fp32(embeddings, prompt)
        got, got_scores = int8(embeddings, prompt)
        assert not torch.equal(got, want)  # other arithmetic ...
        assert float(((got > 0) == (want > 0)).float().mean()) >= 0.98  # ... nearly the same masks
        assert float((got_scores - want_scores).abs().max()) < onnx_graphs.MAX_SCORE_DIFFERENCE
    want, got = fp32.refine(embeddings, boxes)[0], int8.refine(embeddings, boxes)[0]
    assert float(((got > 0) == (want > 0)).float().mean()) >= 0.98

    def no_more_quantising(*args, **kwargs):
        raise AssertionError("the int8 copies exist: nothing is quantised again")

    monkeypatch.setattr("onnxruntime.quantization.quantize_dynamic", no_more_quantising)
    again = decoder_runtime(model, "onnxruntime", cache_dir=tmp_path, precision="int8")
    assert again.precision == "int8"
    torch.testing.assert_close(again(embeddings)[0], int8(embeddings)[0])


def test_a_copy_that_fails_its_check_falls_back_to_fp32_and_is_not_made_again(tmp_path, monkeypatch):
    model = build_tiny_model("litemedsam", seed=0).eval()
    monkeypatch.setattr(onnx_graphs, "MAX_RELATIVE_ERROR", 0.0)  # no copy can pass
    chosen = decoder_runtime(model, "onnxruntime", cache_dir=tmp_path, precision="int8")
    assert chosen.summary == "onnxruntime fp32"
    assert "failed its check" in chosen.reason and "(at most 0%)" in chosen.reason
    names = _files(tmp_path)
    assert "automatic.int8-rejected.txt" in names
    assert not any(name.endswith(".int8.onnx") or "partial" in name for name in names)
    embeddings = _embeddings(model, n=2)
    with torch.no_grad():
        torch.testing.assert_close(chosen(embeddings)[0], model.decode(embeddings)[0], atol=1e-4, rtol=1e-4)
    calls = []
    monkeypatch.setattr("onnxruntime.quantization.quantize_dynamic", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(onnx_graphs, "MAX_RELATIVE_ERROR", 1.0)  # the recorded failure stands
    again = decoder_runtime(model, "onnxruntime", cache_dir=tmp_path, precision="int8")
    assert again.precision == "fp32" and "failed its check" in again.reason and calls == []


def test_a_rejected_pretrained_decoder_keeps_both_decoders_in_fp32(tmp_path, monkeypatch):
    model = build_tiny_model("litemedsam", seed=0).eval()
    model.keep_box_decoder()
    with torch.no_grad():
        next(model.mask_decoder.parameters()).add_(0.5)  # fine-tuned: two decoders, two exports
    real = onnx_graphs.check_int8
    seen = []

    def reject_the_second_decoder(fp32, int8, feeds):  # the fine-tuned decoder's two graphs pass
        seen.append(1)
        return real(fp32, int8, feeds) if len(seen) <= 2 else "refused by the test"

    monkeypatch.setattr(onnx_graphs, "check_int8", reject_the_second_decoder)
    chosen = decoder_runtime(model, "onnxruntime", cache_dir=tmp_path, precision="int8")
    assert (
        chosen.precision == "fp32" and "pretrained decoder" in chosen.reason and "refused by the test" in chosen.reason
    )
    embeddings = _embeddings(model, n=2)
    boxes = torch.tensor([[2.0, 3.0, 20.0, 25.0]] * 2)
    with torch.no_grad():
        torch.testing.assert_close(chosen(embeddings)[0], model.decode(embeddings)[0], atol=1e-4, rtol=1e-4)
        want = model.box_decoder.decode(embeddings, boxes=boxes)[0]
        torch.testing.assert_close(chosen.refine(embeddings, boxes)[0], want, atol=1e-4, rtol=1e-4)


def test_precision_is_validated_and_pytorch_stays_fp32(tmp_path):
    model = build_tiny_model("litemedsam", seed=0).eval()
    with pytest.raises(SAMTuneError, match="decoder precision"):
        decoder_runtime(model, "onnxruntime", cache_dir=tmp_path, precision="fp16")
    with pytest.raises(SAMTuneError, match="int8"):
        PredictConfig(decoder_precision="int4")
    assert decoder_runtime(model, "torch", precision="int8").summary == "torch fp32"
    assert list(tmp_path.iterdir()) == []
