"""Weights: cache folder, verified downloads, and loading that never runs pickled code."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import pytest
import torch

from samtune.errors import OutputError, WeightsError
from samtune.models import (
    build_model,
    download_weights,
    get_backbone,
    load_checkpoint,
    save_state_dict,
    verify_sha256,
    weights_cache_dir,
)


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("SAMTUNE_WEIGHTS_DIR", str(folder))
    return folder


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    model = build_model("sam_vit_b", tiny=True)
    path = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), path)
    return path


def test_cache_dir_follows_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAMTUNE_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("SAMTUNE_HOME", str(tmp_path / "home"))
    assert weights_cache_dir() == tmp_path / "home" / "weights"
    monkeypatch.setenv("SAMTUNE_WEIGHTS_DIR", str(tmp_path / "w"))
    assert weights_cache_dir() == tmp_path / "w"


def test_download_from_local_url_is_verified_and_lands_in_the_cache(cache: Path, checkpoint: Path) -> None:
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    seen: list[int] = []
    path = download_weights(
        get_backbone("sam_vit_b"),
        url=checkpoint.as_uri(),
        expected_sha256=digest,
        progress=lambda done, total: seen.append(done),
    )
    assert path == cache / "sam_vit_b_01ec64.pth"
    assert path.read_bytes() == checkpoint.read_bytes()
    assert seen and seen[-1] == checkpoint.stat().st_size
    # The cached file is what build_model finds; it is the tiny architecture, so the real one refuses it.
    with pytest.raises(WeightsError, match="does not fit backbone 'sam_vit_b'"):
        build_model("sam_vit_b", verify=False)


def test_download_with_wrong_hash_leaves_nothing_behind(cache: Path, checkpoint: Path) -> None:
    with pytest.raises(WeightsError, match="expected 0000"):
        download_weights(get_backbone("sam_vit_b"), url=checkpoint.as_uri(), expected_sha256="0" * 64)
    assert list(cache.iterdir()) == []


def test_download_refuses_unverifiable_files_unless_allowed(cache: Path, checkpoint: Path) -> None:
    spec = get_backbone("mobilesam_vit_t")
    with pytest.raises(WeightsError, match="cannot be verified"):
        download_weights(spec, url=checkpoint.as_uri())
    assert download_weights(spec, url=checkpoint.as_uri(), allow_unverified=True).is_file()


def test_download_failure_is_a_weights_error(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="Could not download"):
        download_weights(get_backbone("sam_vit_b"), url=(tmp_path / "nope.pth").as_uri())
    assert list(cache.iterdir()) == []


def test_missing_weights_message_says_how_to_get_them(cache: Path) -> None:
    with pytest.raises(WeightsError, match="download_weights\\('sam_vit_b'\\).*--weights PATH"):
        build_model("sam_vit_b")
    with pytest.raises(WeightsError, match="obtain 'medsam_vit_b.pth'"):
        build_model("medsam_vit_b")


def test_missing_truncated_and_garbage_files(tmp_path: Path, checkpoint: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    with pytest.raises(WeightsError, match="truncated.pth' is corrupt or truncated"):
        load_checkpoint(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(os.urandom(1000))
    with pytest.raises(WeightsError, match="garbage.safetensors' is corrupt"):
        load_checkpoint(garbage)


class _Exploit:
    marker: Path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    exploit = _Exploit()
    exploit.marker = marker
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as handle:
        pickle.dump({"model": exploit}, handle)
    with pytest.raises(WeightsError, match="never does for safety"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_wrong_architecture_names_file_and_backbone(tmp_path: Path) -> None:
    other = build_model("litemedsam", tiny=True)
    path = save_state_dict(other.state_dict(), tmp_path / "lite.safetensors")
    with pytest.raises(WeightsError, match="lite.safetensors' does not fit backbone 'sam_vit_b'.*missing"):
        build_model("sam_vit_b", weights=path, verify=False)


def test_sha256_mismatch_is_reported(checkpoint: Path) -> None:
    with pytest.raises(WeightsError, match="SHA-256"):
        verify_sha256(checkpoint, "f" * 64)


def test_save_into_missing_folder_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        save_state_dict({"a": torch.zeros(1)}, tmp_path / "missing" / "w.safetensors")
