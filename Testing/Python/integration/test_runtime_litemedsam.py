"""Real LiteMedSAM through ONNX Runtime: the same embeddings and the same box-prompted masks as PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samtune.data import make_phantom
from samtune.data.pipeline import SliceConfig
from samtune.models import build_model
from samtune.models.runtime import decoder_runtime, encoder_runtime
from samtune.predict import PredictConfig, boxes_from_label, predict_volume

pytestmark = pytest.mark.slow
pytest.importorskip("onnxruntime", reason="onnxruntime is part of the development requirements")


def test_onnxruntime_encoder_matches_pytorch_on_the_real_weights(tmp_path):
    model = build_model("litemedsam")
    runtime = encoder_runtime(model, "auto", cache_dir=tmp_path)
    assert runtime.name == "onnxruntime", runtime.reason
    images = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.encode(images)
    got = runtime(images)
    assert (got - expected).abs().max().item() < 1e-3 * expected.abs().max().item()

    image, label = make_phantom(shape=(10, 96, 96), seed=5)
    prompts = boxes_from_label(label.array, axis=0)
    config = PredictConfig(runtime="torch", slices=SliceConfig(axis="k"))
    # the encoder exported above (a second export would cost ~15 s); prompted runs use no decoder runtime
    unused_decoder = decoder_runtime(model, "torch")
    runtimes = {"torch": (encoder_runtime(model, "torch"), unused_decoder), "onnxruntime": (runtime, unused_decoder)}
    masks = {
        name: predict_volume(model, image, config, prompts=prompts, runtimes=pair, store=False).array
        for name, pair in runtimes.items()
    }
    assert masks["torch"].any()
    differing = np.count_nonzero(masks["torch"] != masks["onnxruntime"])
    assert differing <= 0.001 * masks["torch"].size, differing
