"""Image-embedding cache for runs whose encoder is frozen (decoder-only scopes, BLO-SAM).

Each slice is encoded once and reused every epoch. Augmentation on the fly would change the
embedding, so cached runs train the decoder on the original slices, plus any augmented views made
before the cache is built (``TrainConfig.cached_views``), which are encoded once like the originals.
Embeddings are kept on the CPU in float16 (4 MB -> 2 MB per slice for a 256 x 64 x 64 embedding)
and moved to the training device per batch. Slices already in the on-disk embedding store
(:mod:`samtune.models.embedding_store`; e.g. a volume segmented before) are read from it instead of
encoded, and the ones encoded here are added to it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from samtune.models.embedding_store import EmbeddingStore, StoredEncoder, stored_encoder
from samtune.models.runtime import encoder_fingerprint
from samtune.models.sam_model import SamModel


class EmbeddingCache:
    """Embeddings of every training sample, computed once.

    Args:
        model: The (frozen-encoder) model.
        images: ``(N, 3, S, S)`` model inputs.
        rows: Only these rows (a process's shard); ``None`` caches all.
        batch_size: Slices encoded together.
        dtype: Storage dtype.
        progress: ``progress(done, total, message)`` while encoding.
        store: The on-disk embedding store to read from and add to (``True``: the per-user one).
    """

    def __init__(
        self,
        model: SamModel,
        images: torch.Tensor,
        *,
        batch_size: int = 1,
        dtype: torch.dtype = torch.float16,
        progress: Callable[[int, int, str], None] | None = None,
        rows: list[int] | None = None,
        store: EmbeddingStore | bool = False,
    ) -> None:
        device = model.device
        chunks = []
        #: Sample rows held (all when ``rows`` is None: a shard in multi-process training).
        self.rows = list(range(images.shape[0])) if rows is None else list(rows)
        self._position = {row: n for n, row in enumerate(self.rows)}
        if rows is not None:
            images = images[torch.tensor(self.rows, dtype=torch.long)]
        total = images.shape[0]
        was_training = model.image_encoder.training
        model.image_encoder.eval()
        encode = stored_encoder(model.encode, lambda: encoder_fingerprint(model), store)
        with torch.no_grad():
            for start in range(0, total, batch_size):
                batch = images[start : start + batch_size].to(device)
                chunks.append(encode(batch).to("cpu", dtype))
                if progress is not None:
                    progress(min(start + batch_size, total), total, "Caching image embeddings")
        model.image_encoder.train(was_training)
        self.embeddings = torch.cat(chunks)
        #: Number of slices the encoder processed to build the cache (the rest came from the store).
        self.encoded = total
        if isinstance(encode, StoredEncoder):
            self.encoded = encode.misses
            encode.store.prune()

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def get(self, indices: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Embeddings of sample rows ``indices`` as float32 on ``device``.

        Raises:
            KeyError: A row this (sharded) cache does not hold.
        """
        local = torch.tensor([self._position[int(i)] for i in indices.tolist()], dtype=torch.long)
        return self.embeddings.index_select(0, local).to(device, torch.float32)

    @property
    def nbytes(self) -> int:
        """Memory held by the cache."""
        return self.embeddings.element_size() * self.embeddings.nelement()
