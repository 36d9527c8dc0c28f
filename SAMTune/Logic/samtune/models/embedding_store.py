"""A per-user store of slice image embeddings on disk, shared by prediction, the effect and training.

A slice's image embedding depends only on the image encoder's weights and on the model input made
from the slice (its voxels after intensity normalisation, 2.5D stacking and resizing). Models that
keep the pretrained encoder frozen (decoder-only fine-tuning, BLO-SAM) therefore share one embedding
per slice: segmenting a volume again, with another model, another threshold, in the effect after
the panel, or training on a volume segmented before, then costs decoder time only.

Each entry is keyed by SHA-256 over the encoder's fingerprint (its weights and input size, see
:func:`samtune.models.runtime.encoder_fingerprint`) and the exact bytes of the model input. Any
change of a voxel, of the slicing, of the normalisation or of the encoder's weights therefore makes
another key: a stale embedding is never served. An entry is a small binary file (a magic tag, a JSON
header with dtype, shape and the payload's SHA-256, then the raw float16 values; nothing is
unpickled), written to a temporary file and renamed into place, so two processes writing at once
each leave a whole entry and a reader never sees half of one. An entry that fails its checksum is
removed and recomputed. The store is bounded in bytes; the least recently used entries go first.

Embeddings are kept in float16, as the training cache keeps them; :class:`StoredEncoder` returns
the float16-rounded values on a cold pass too, so a volume segments identically cold and warm.

Configuration: ``SAMTUNE_EMBEDDING_STORE`` (folder; default the per-user cache ``embeddings``) and
``SAMTUNE_EMBEDDING_STORE_MB`` (bound, default 2048; ``0`` switches the store off).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from samtune.errors import ConfigurationError
from samtune.paths import user_dir

logger = logging.getLogger(__name__)

#: Default bound of the store: 2 GiB (about 1000 slices of LiteMedSAM or SAM ViT-B embeddings).
DEFAULT_MAX_MB = 2048
_MAGIC = b"SAMTEMB1"
_SUFFIX = ".emb"
_PARTIAL = ".partial-"
#: Part of every key: entries written by an incompatible store format are never read.
_FORMAT = "samtune-embedding-store-1"
#: Temporary files older than this are left over by a process that died while writing.
_STALE_PARTIAL_S = 3600.0


def embedding_store_dir() -> Path:
    """Where embeddings are kept: ``SAMTUNE_EMBEDDING_STORE`` or the per-user cache ``embeddings``."""
    return user_dir("embeddings", override_env="SAMTUNE_EMBEDDING_STORE", cache=True)


def store_limit_mb() -> int:
    """The bound from ``SAMTUNE_EMBEDDING_STORE_MB`` (default :data:`DEFAULT_MAX_MB`; 0 = store off)."""
    text = os.environ.get("SAMTUNE_EMBEDDING_STORE_MB", "").strip()
    if not text:
        return DEFAULT_MAX_MB
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigurationError(
            f"SAMTUNE_EMBEDDING_STORE_MB must be a whole number of megabytes (0 switches the store off), got {text!r}."
        )
    return value


class EmbeddingStore:
    """Slice embeddings on disk, keyed by encoder and model input, bounded in bytes.

    Args:
        root: Folder of the store (default :func:`embedding_store_dir`).
        max_bytes: Bound; the least recently used entries are removed beyond it
            (default from :func:`store_limit_mb`).
    """

    def __init__(self, root: str | Path | None = None, *, max_bytes: int | None = None) -> None:
        self.root = Path(root) if root is not None else embedding_store_dir()
        self.max_bytes = int(max_bytes) if max_bytes is not None else store_limit_mb() << 20
        if self.max_bytes < 0:
            raise ConfigurationError(f"max_bytes must be >= 0, got {max_bytes}.")

    @classmethod
    def default(cls) -> EmbeddingStore | None:
        """The per-user store, or ``None`` when ``SAMTUNE_EMBEDDING_STORE_MB`` is 0."""
        limit = store_limit_mb()
        return cls(max_bytes=limit << 20) if limit > 0 else None

    # -- keys and entries ----------------------------------------------------------------------
    @staticmethod
    def key(encoder_id: str, image: torch.Tensor) -> str:
        """The key of one model input ``(C, S, S)`` for the encoder ``encoder_id``."""
        data = image.detach().to("cpu").contiguous()
        digest = hashlib.sha256(f"{_FORMAT}:{encoder_id}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}{_SUFFIX}"

    def get(self, key: str) -> torch.Tensor | None:
        """The stored embedding (float16, CPU), or ``None`` when absent or corrupt (then it is removed)."""
        path = self.path(key)
        try:
            blob = path.read_bytes()
        except OSError:
            return None
        embedding = _decode(blob)
        if embedding is None:
            logger.warning("Embedding store: %s is damaged; it is removed and recomputed.", path)
            _remove(path)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # least recently *used* goes first
        return embedding

    def put(self, key: str, embedding: torch.Tensor) -> None:
        """Store ``embedding`` under ``key`` (atomically; a failure to write only logs a warning)."""
        path = self.path(key)
        blob = _encode(embedding)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, partial = tempfile.mkstemp(prefix=_PARTIAL, dir=path.parent)
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(blob)
                os.replace(partial, path)
            except BaseException:
                _remove(Path(partial))
                raise
        except OSError as error:  # a full or read-only disk must not stop a prediction
            logger.warning("Embedding store: could not write %s (%s); continuing without storing it.", path, error)

    # -- size ----------------------------------------------------------------------------------
    def entries(self) -> list[tuple[Path, int, float]]:
        """``(path, bytes, last use)`` of every entry."""
        found: list[tuple[Path, int, float]] = []
        if not self.root.is_dir():
            return found
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            for item in folder.iterdir():
                if not item.name.endswith(_SUFFIX):
                    continue
                try:
                    stat = item.stat()
                except OSError:  # removed by another process meanwhile
                    continue
                found.append((item, stat.st_size, stat.st_mtime))
        return found

    @property
    def nbytes(self) -> int:
        """Bytes held by the store's entries."""
        return sum(size for _, size, _ in self.entries())

    def prune(self) -> int:
        """Remove the least recently used entries beyond :attr:`max_bytes` (and stale temporary files).

        Returns:
            The number of entries removed.
        """
        self._remove_stale_partials()
        entries = sorted(self.entries(), key=lambda entry: entry[2])
        total = sum(size for _, size, _ in entries)
        removed = 0
        for path, size, _ in entries:
            if total <= self.max_bytes:
                break
            _remove(path)
            total -= size
            removed += 1
        return removed

    def clear(self) -> None:
        """Remove every entry."""
        for path, _, _ in self.entries():
            _remove(path)

    def _remove_stale_partials(self) -> None:
        if not self.root.is_dir():
            return
        now = time.time()
        for partial in self.root.glob(f"*/{_PARTIAL}*"):
            try:
                if now - partial.stat().st_mtime > _STALE_PARTIAL_S:
                    partial.unlink()
            except OSError:
                pass


class StoredEncoder:
    """An image encoder that reads embeddings from an :class:`EmbeddingStore` and writes the ones it computes.

    Args:
        encode: ``(B, 3, S, S) -> (B, C, h, w)``, the encoder to call for inputs not in the store.
        store: The store.
        encoder_id: The encoder's fingerprint (part of every key).

    Returns embeddings as float32 on the inputs' device, float16-rounded whether they were stored or
    computed. :attr:`hits` and :attr:`misses` count slices served and encoded.
    """

    def __init__(self, encode: Callable[[torch.Tensor], torch.Tensor], store: EmbeddingStore, encoder_id: str) -> None:
        self.encode = encode
        self.store = store
        self.encoder_id = encoder_id
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        keys = [self.store.key(self.encoder_id, image) for image in images]
        found: list[torch.Tensor | None] = [self.store.get(key) for key in keys]
        missing = [n for n, embedding in enumerate(found) if embedding is None]
        if missing:
            computed = self.encode(images[missing]).detach().to("cpu", torch.float16)
            for n, embedding in zip(missing, computed):
                self.store.put(keys[n], embedding)
                found[n] = embedding
        with self._lock:
            self.hits += len(keys) - len(missing)
            self.misses += len(missing)
        return torch.stack([e for e in found if e is not None]).to(images.device, torch.float32)


def resolve_store(store: EmbeddingStore | bool) -> EmbeddingStore | None:
    """``True``: the per-user store (``None`` when switched off); ``False``: none; a store: itself."""
    if isinstance(store, EmbeddingStore):
        return store
    return EmbeddingStore.default() if store else None


def stored_encoder(
    encode: Callable[[torch.Tensor], torch.Tensor], fingerprint: Callable[[], str], store: EmbeddingStore | bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``encode`` backed by ``store`` (see :func:`resolve_store`), or ``encode`` itself without a store.

    ``fingerprint`` is called only when a store is used (hashing the encoder's weights costs ~20 ms
    for LiteMedSAM, ~0.5 s for SAM ViT-B).
    """
    resolved = resolve_store(store)
    return encode if resolved is None else StoredEncoder(encode, resolved, fingerprint())


def _encode(embedding: torch.Tensor) -> bytes:
    array = np.ascontiguousarray(embedding.detach().to("cpu", torch.float16).numpy())
    payload = array.tobytes()
    header = json.dumps(
        {"dtype": "float16", "shape": list(array.shape), "sha256": hashlib.sha256(payload).hexdigest()}
    ).encode("utf-8")
    return _MAGIC + struct.pack("<I", len(header)) + header + payload


def _decode(blob: bytes) -> torch.Tensor | None:
    """The embedding in ``blob``, or ``None`` if the entry is not a whole, intact one."""
    start = len(_MAGIC) + 4
    if len(blob) < start or not blob.startswith(_MAGIC):
        return None
    (length,) = struct.unpack("<I", blob[len(_MAGIC) : start])
    try:
        header = json.loads(blob[start : start + length].decode("utf-8"))
        shape = tuple(int(n) for n in header["shape"])
        expected = str(header["sha256"])
        ok = header["dtype"] == "float16"
    except (ValueError, KeyError, TypeError):
        return None
    payload = blob[start + length :]
    if not ok or len(payload) != 2 * int(np.prod(shape)) or hashlib.sha256(payload).hexdigest() != expected:
        return None
    return torch.from_numpy(np.frombuffer(payload, dtype=np.float16).reshape(shape).copy())


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


__all__ = [
    "DEFAULT_MAX_MB",
    "EmbeddingStore",
    "StoredEncoder",
    "embedding_store_dir",
    "resolve_store",
    "store_limit_mb",
    "stored_encoder",
]
