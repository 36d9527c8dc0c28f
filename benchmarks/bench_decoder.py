"""The mask decoder, where a warm whole-volume prediction spends its time: is batching slices a lever?

A warm prediction (every embedding in the store) costs decoder time only, one pass per slice (two with
self-prompting refinement). Measured in one process, LiteMedSAM, per slice (medians of ``--repeats``
over ``--slices`` random embeddings):

* the product's ONNX Runtime decoder (exported for one slice and run slice by slice), automatic and
  with a box;
* the same graphs exported for a fixed batch of 8 slices, run 8 at a time (the lever in question;
  never used by the product);
* PyTorch at batch 1 and batch 8;
* a refined slice as automatic prediction decodes it (one automatic pass, two box passes, each in its
  own session as the fine-tuned and the pretrained decoder are), with ONNX Runtime's threads spinning
  after each run (its default) and not (the product's setting);
* a cold ``predict_volume`` of an 88-slice 256 x 256 phantom (pretrained model, no store: every slice
  encoded, then decoded), the product's sessions spinning and not (``onnx_graphs.SPIN_BETWEEN_RUNS``),
  twice each, interleaved;
* a warm ``predict_volume`` of an 88-slice 256 x 256 phantom (embeddings stored first, pretrained
  model: one automatic pass per slice, nothing found, so no refinement) end to end, and the share of
  it the decoder is (88 x the product decoder's time per slice).

    .venv/bin/python benchmarks/bench_decoder.py --json benchmarks/results/decoder.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import machine, median_seconds, write_results

from samtune.data import make_phantom
from samtune.data.pipeline import SliceConfig
from samtune.models import build_model, onnx_graphs
from samtune.models.embedding_store import EmbeddingStore
from samtune.models.onnx_graphs import Graph, load_sessions
from samtune.models.runtime import _AutomaticDecoder, _BoxDecoder, decoder_runtime, encoder_runtime
from samtune.predict import PredictConfig, predict_volume
from samtune.privacy import onnxruntime_module

BATCH = 8


def batched_sessions(model: Any, folder: Path, threads: int) -> tuple[Any, Any]:
    """The product's two decoder graphs, exported for a fixed batch of :data:`BATCH` slices."""
    ort = onnxruntime_module()
    prompt_encoder = model.prompt_encoder
    shape = (BATCH, int(prompt_encoder.embed_dim), *(int(n) for n in prompt_encoder.image_embedding_size))
    embedding = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[0.2, 0.25, 0.7, 0.8]]).repeat(BATCH, 1) * model.input_size
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the product's sessions
    sessions = []
    for name, module, example, inputs in (
        ("automatic", _AutomaticDecoder(model), (embedding,), ["embeddings"]),
        ("box", _BoxDecoder(model), (embedding, boxes), ["embeddings", "boxes"]),
    ):
        path = folder / f"{name}-batch{BATCH}.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # traced at batch 8; the batch axis is named (a static batch-8 graph fails ONNX shape inference at
            # load), but the graph only ever runs at 8 and is checked against the product's graph at 8
            axes = {name: {0: "batch"} for name in [*inputs, "logits", "scores"]}
            torch.onnx.export(module, example, str(path), opset_version=17, dynamo=False, input_names=inputs,
                              output_names=["logits", "scores"], dynamic_axes=axes)  # fmt: skip
        sessions.append(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]))
    return sessions[0], sessions[1]


def spinning_sessions(model: Any, folder: Path, spin: bool) -> tuple[Any, Any]:
    """The product's exported automatic and box graphs (under ``folder``) in the product's two sessions,
    with ONNX Runtime's threads spinning after each run or not (``onnx_graphs.SPIN_BETWEEN_RUNS``)."""
    exported = next(folder.glob("*-onnx-decoder"))
    graphs = [Graph(name, model, (), (), ()) for name in ("automatic.onnx", "box.onnx")]  # loaded, not exported
    onnx_graphs.SPIN_BETWEEN_RUNS = spin
    try:
        sessions, _ = load_sessions(model, exported, graphs, what="decoder")
    finally:
        onnx_graphs.SPIN_BETWEEN_RUNS = False
    return sessions[0], sessions[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=16, help="embeddings per timed call (a multiple of 8)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = args.slices - args.slices % BATCH or BATCH
    model = build_model("litemedsam", device="cpu").eval()
    prompt_encoder: Any = model.prompt_encoder
    shape = (n, int(prompt_encoder.embed_dim), *(int(s) for s in prompt_encoder.image_embedding_size))
    embeddings = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    boxes = torch.tensor([[50.0, 60.0, 180.0, 200.0]]).repeat(n, 1) + torch.rand(n, 4) * 8
    e, b = embeddings.numpy(), boxes.numpy()
    rows: dict[str, float] = {}

    def timed(name: str, fn: Any) -> None:
        name = name if name not in rows else f"{name}_again"
        rows[name] = median_seconds(fn, args.repeats) / n
        print(f"{name}: {1000 * rows[name]:.1f} ms per slice", flush=True)

    with tempfile.TemporaryDirectory() as folder:
        automatic8, box8 = batched_sessions(model, Path(folder), args.threads)
        product = decoder_runtime(model, "onnxruntime", cache_dir=folder)

        def in_eights(session: Any, with_boxes: bool) -> list[Any]:
            feeds = [{"embeddings": e[i : i + BATCH], **({"boxes": b[i : i + BATCH]} if with_boxes else {})}
                     for i in range(0, n, BATCH)]  # fmt: skip
            return [session.run(None, feed)[0] for feed in feeds]

        with torch.inference_mode():
            difference = max(
                float(np.abs(in_eights(automatic8, False)[0] - product(embeddings[:BATCH])[0].numpy()).max()),
                float(np.abs(in_eights(box8, True)[0] - product(embeddings[:BATCH], boxes[:BATCH])[0].numpy()).max()),
            )
            for _ in range(2):  # twice, interleaved (``*_again``): drift over the run shows between the rounds
                timed("onnx_automatic_batch1", lambda: product(embeddings))
                timed("onnx_automatic_batch8", lambda: in_eights(automatic8, False))
                timed("onnx_box_batch1", lambda: product(embeddings, boxes))
                timed("onnx_box_batch8", lambda: in_eights(box8, True))
            for spin in (True, False, True, False):  # interleaved, as above
                automatic, box = spinning_sessions(model, Path(folder), spin)

                def refined(automatic: Any = automatic, box: Any = box) -> None:
                    for i in range(n):
                        automatic.run(None, {"embeddings": e[i : i + 1]})
                        for _ in range(2):
                            box.run(None, {"embeddings": e[i : i + 1], "boxes": b[i : i + 1]})

                timed(f"onnx_refined_slice_{'spinning' if spin else 'not_spinning'}", refined)
            timed("torch_automatic_batch1", lambda: [model.decode(embeddings[i : i + 1]) for i in range(n)])
            timed(
                "torch_automatic_batch8", lambda: [model.decode(embeddings[i : i + BATCH]) for i in range(0, n, BATCH)]
            )

        image, _ = make_phantom(shape=(88, 256, 256), seed=0)
        store = EmbeddingStore(Path(folder) / "store", max_bytes=1 << 30)
        config = PredictConfig(slices=SliceConfig(axis="k"))
        runtimes = (encoder_runtime(model, "onnxruntime", cache_dir=folder), product)
        cold: dict[str, list[float]] = {"spinning": [], "not_spinning": []}
        for spin in (True, False, True, False):
            onnx_graphs.SPIN_BETWEEN_RUNS = spin  # new sessions, loaded from the exported graphs
            fresh = (encoder_runtime(model, "onnxruntime", cache_dir=folder), decoder_runtime(model, "onnxruntime",
                     cache_dir=folder))  # fmt: skip
            started = time.perf_counter()
            predict_volume(model, image, config, store=False, runtimes=fresh)
            seconds = time.perf_counter() - started
            cold["spinning" if spin else "not_spinning"].append(seconds)
            print(f"cold 88-slice prediction, {'spinning' if spin else 'not spinning'}: {seconds:.1f} s", flush=True)
        onnx_graphs.SPIN_BETWEEN_RUNS = False
        predict_volume(model, image, config, store=store, runtimes=runtimes)  # cold: fills the store
        warm = median_seconds(lambda: predict_volume(model, image, config, store=store, runtimes=runtimes),
                              args.repeats, warmup=False)  # fmt: skip
    decoder_share = 88 * rows["onnx_automatic_batch1"] / warm
    print(f"warm 88-slice prediction: {warm:.2f} s, of which the decoder {100 * decoder_share:.0f} %", flush=True)
    results: dict[str, Any] = {
        "machine": machine(args.threads),
        "backbone": "litemedsam",
        "slices_per_call": n,
        "s_per_slice": rows,
        "batch8_max_abs_diff": difference,
        "warm_88_slices_s": warm,
        "decoder_share_of_warm": decoder_share,
        "cold_88_slices_s": cold,
        "spinning_off_speedup": rows["onnx_refined_slice_spinning"] / rows["onnx_refined_slice_not_spinning"],
        "batch8_speedup": {
            kind: rows[f"onnx_{kind}_batch1"] / rows[f"onnx_{kind}_batch8"] for kind in ("automatic", "box")
        },
    }
    if args.json is not None:
        write_results(args.json, results)


if __name__ == "__main__":
    main()
