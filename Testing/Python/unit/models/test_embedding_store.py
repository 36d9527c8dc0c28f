"""The on-disk embedding store: keyed by voxels, slicing and encoder weights; bounded (least recently
used first); two processes writing at once leave whole entries; a damaged entry is recomputed, never
served; prediction, the interactive session and the training cache share it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from samtune.data import make_phantom, prepare_slices
from samtune.data.pipeline import SliceConfig
from samtune.errors import ConfigurationError
from samtune.models import build_tiny_model
from samtune.models.embedding_store import EmbeddingStore, StoredEncoder, store_limit_mb
from samtune.models.runtime import encoder_fingerprint
from samtune.predict import PredictConfig, predict_volume
from samtune.predict.session import PredictorSession
from samtune.train import TrainingCase
from samtune.train.cache import EmbeddingCache
from samtune.train.data import build_samples


@pytest.fixture(scope="module")
def model():
    return build_tiny_model("litemedsam", seed=0).eval()


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(shape=(5, 40, 48), spacing=(0.8, 1.1, 2.5), seed=3)


def _counting(model, request) -> dict[str, int]:
    """Slices the image encoder processes from now on (a forward hook, removed after the test)."""
    calls = {"slices": 0}
    hook = model.image_encoder.register_forward_hook(
        lambda _module, inputs, _output: calls.__setitem__("slices", calls["slices"] + inputs[0].shape[0])
    )
    request.addfinalizer(hook.remove)
    return calls


def test_entries_round_trip_in_float16(tmp_path):
    store = EmbeddingStore(tmp_path, max_bytes=1 << 30)
    embedding = torch.randn(8, 4, 4)
    key = store.key("encoder", torch.zeros(3, 16, 16))
    assert store.get(key) is None
    store.put(key, embedding)
    got = store.get(key)
    assert got is not None and got.dtype == torch.float16
    assert torch.equal(got, embedding.half())
    assert store.nbytes == store.path(key).stat().st_size


def test_keys_change_with_a_voxel_the_slicing_and_the_encoder(model, phantom):
    image, _ = phantom
    fingerprint = encoder_fingerprint(model)
    key = EmbeddingStore.key
    inputs = {}
    for name, array, axis in (
        ("base", image.array, "k"),
        ("voxel", image.array.copy(), "k"),
        ("axis", image.array, "j"),
    ):
        if name == "voxel":  # one voxel of slice 2, from the darkest value to a middle one (inside the clip range)
            low, middle = np.percentile(array, [5, 50])
            array[2, 20, 20] = low if array[2, 20, 20] > middle else middle
        volume = image.with_array(array)
        inputs[name], _ = prepare_slices(volume, input_size=model.input_size, pixel_norm=model.pixel_norm,
                                         config=SliceConfig(axis=axis))  # fmt: skip
    base = [key(fingerprint, x) for x in inputs["base"]]
    assert len(set(base)) == len(base)
    assert key(fingerprint, inputs["voxel"][2]) != base[2]
    assert not set(key(fingerprint, x) for x in inputs["axis"]) & set(base)
    other = build_tiny_model("litemedsam", seed=1)
    assert encoder_fingerprint(other) != fingerprint
    assert key(encoder_fingerprint(other), inputs["base"][0]) != base[0]


def test_prediction_reuses_stored_embeddings_and_recomputes_a_changed_voxel(model, phantom, tmp_path, request):
    image, _ = phantom
    store = EmbeddingStore(tmp_path, max_bytes=1 << 30)
    config = PredictConfig(slices=SliceConfig(axis="k"), presence_threshold=0.0)
    calls = _counting(model, request)
    cold = predict_volume(model, image, config, store=store)
    assert calls["slices"] == image.shape[0]
    warm = predict_volume(model, image, config, store=store)
    assert calls["slices"] == image.shape[0]  # every slice served from the store
    assert np.array_equal(cold.array, warm.array)
    changed = image.array.copy()
    low, middle = np.percentile(changed, [5, 50])
    changed[2, 20, 20] = low if changed[2, 20, 20] > middle else middle
    edited = image.with_array(changed)
    before = calls["slices"]
    again = predict_volume(model, edited, config, store=store)
    assert calls["slices"] > before  # the edited slice (and any whose normalised input moved) re-encoded
    fresh = predict_volume(model, edited, config, store=EmbeddingStore(tmp_path / "fresh", max_bytes=1 << 30))
    assert np.array_equal(again.array, fresh.array)


def test_the_session_and_the_training_cache_share_the_store(model, phantom, tmp_path, request):
    image, label = phantom
    store = EmbeddingStore(tmp_path, max_bytes=1 << 30)
    config = PredictConfig(slices=SliceConfig(axis="k"), presence_threshold=0.0)
    predict_volume(model, image, config, store=store)
    calls = _counting(model, request)
    session = PredictorSession(model, image, axis="k", store=store, runtime="torch")
    session.embedding(1)
    session.embedding(3)
    assert calls["slices"] == 0 and session.stored_slices == 2
    session.close()
    case = TrainingCase("c", image, label, structure="s", value=1, fully_labelled=True)
    samples = build_samples(
        [case], input_size=model.input_size, pixel_norm=model.pixel_norm, slices=SliceConfig(axis="k"),
        empty_policy="keep_all", keep_fraction=1.0, seed=0,
    )  # fmt: skip
    cache = EmbeddingCache(model, samples.images, store=store)
    assert calls["slices"] == 0 and cache.encoded == 0 and len(cache) == len(samples)


def test_the_store_is_bounded_least_recently_used_first(tmp_path):
    embedding = torch.zeros(64, 16, 16)  # 32 KiB in float16
    probe = EmbeddingStore(tmp_path, max_bytes=1 << 30)
    probe.put("00probe", embedding)
    entry = probe.path("00probe").stat().st_size
    probe.clear()
    store = EmbeddingStore(tmp_path, max_bytes=3 * entry)
    keys = [f"{n:02d}" + "a" * 30 for n in range(5)]
    for n, key in enumerate(keys):
        store.put(key, embedding)
        os.utime(store.path(key), (1000.0 + n, 1000.0 + n))
    assert store.get(keys[0]) is not None  # a read refreshes the oldest entry
    assert store.prune() == 2
    assert store.nbytes <= 3 * entry
    assert [store.get(k) is not None for k in keys] == [True, False, False, True, True]


def test_a_damaged_entry_is_recomputed_not_served(tmp_path, caplog):
    store = EmbeddingStore(tmp_path, max_bytes=1 << 30)
    images = torch.randn(2, 3, 16, 16)
    encoder = StoredEncoder(lambda x: x[:, :2] * 2.0, store, "encoder")
    expected = encoder(images)
    keys = [store.key("encoder", image) for image in images]
    blob = bytearray(store.path(keys[0]).read_bytes())
    blob[-3] ^= 0xFF  # one flipped byte of the payload
    store.path(keys[0]).write_bytes(bytes(blob))
    store.path(keys[1]).write_bytes(store.path(keys[1]).read_bytes()[:40])  # a truncated entry
    assert store.get(keys[0]) is None and not store.path(keys[0]).exists()
    assert "damaged" in caplog.text
    again = StoredEncoder(lambda x: x[:, :2] * 2.0, store, "encoder")
    assert torch.equal(again(images), expected) and again.misses == 2 and again.hits == 0  # both re-encoded
    assert store.get(keys[0]) is not None and store.get(keys[1]) is not None


def test_two_processes_writing_at_once_leave_whole_entries(tmp_path):
    script = textwrap.dedent(
        """
        import sys, torch
        from samtune.models.embedding_store import EmbeddingStore
        store = EmbeddingStore(sys.argv[1], max_bytes=1 << 30)
        worker = int(sys.argv[2])
        for round in range(40):
            for n in range(6):  # keys 0-2 shared by both processes, 3-5 each its own
                key = f"{n:02d}" + ("shared" if n < 3 else f"own{worker}") + "x" * 24
                store.put(key, torch.full((32, 8, 8), float(n)))
                got = store.get(key)
                assert got is not None and float(got[0, 0, 0]) == float(n), (key, got)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    runs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(w)], env=env, stderr=subprocess.PIPE)
            for w in (0, 1)]  # fmt: skip
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err.decode()
    store = EmbeddingStore(tmp_path, max_bytes=1 << 30)
    paths = [p for p, _, _ in store.entries()]
    assert len(paths) == 9
    assert not list(Path(tmp_path).glob("*/.partial-*"))
    for path in paths:
        value = store.get(path.stem)
        assert value is not None and float(value[0, 0, 0]) == float(int(path.stem[:2]))


def test_stale_partial_files_are_removed_and_the_limit_is_checked(tmp_path, monkeypatch):
    store = EmbeddingStore(tmp_path, max_bytes=0)
    (tmp_path / "ab").mkdir()
    partial = tmp_path / "ab" / ".partial-123"
    partial.write_bytes(b"half")
    old = time.time() - 7200
    os.utime(partial, (old, old))
    store.prune()
    assert not partial.exists()
    monkeypatch.setenv("SAMTUNE_EMBEDDING_STORE_MB", "lots")
    with pytest.raises(ConfigurationError, match="SAMTUNE_EMBEDDING_STORE_MB"):
        store_limit_mb()
    monkeypatch.setenv("SAMTUNE_EMBEDDING_STORE_MB", "0")
    assert EmbeddingStore.default() is None
    monkeypatch.setenv("SAMTUNE_EMBEDDING_STORE_MB", "5")
    monkeypatch.setenv("SAMTUNE_EMBEDDING_STORE", str(tmp_path / "mine"))
    default = EmbeddingStore.default()
    assert default is not None and default.root == tmp_path / "mine" and default.max_bytes == 5 << 20
