"""Multi-process training with ``torchrun``: one process per GPU (NCCL) or per CPU worker (gloo).

``torchrun --nproc_per_node=N -m samtune train ...`` (or ``-m samtune.worker --job ...``) starts N
processes; each reads ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` from its environment, and
:func:`init_from_environment` joins them into one process group. Every global batch is split
evenly: rank ``r`` owns the training samples ``r, r + N, r + 2N, ...`` (its *shard*), draws its part
of every batch from its shard, and encodes only its shard into the embedding cache (the cache is
sharded, not duplicated). DistributedDataParallel averages the gradients, so a step equals a
single-process step on the whole global batch. Only rank 0 writes files and events.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from samtune.errors import ConfigurationError, DeviceError


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a multi-process run."""

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and events."""
        return self.rank == 0

    def any(self, flag: bool) -> bool:
        """True when ``flag`` is True on any rank (so every rank stops at the same step)."""
        value = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def barrier(self) -> None:
        """Wait for every rank."""
        dist.barrier()


def environment_world_size() -> int:
    """``WORLD_SIZE`` set by ``torchrun`` (1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_from_environment(device: str = "auto") -> DistributedContext | None:
    """Join the process group ``torchrun`` describes; ``None`` for a single process.

    NCCL when the device is CUDA (each process takes ``cuda:LOCAL_RANK``), gloo otherwise.

    Raises:
        DeviceError: CUDA requested but fewer GPUs than processes on this node.
    """
    world = environment_world_size()
    if world <= 1:
        return None
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if torch.cuda.device_count() <= local_rank:
            raise DeviceError(
                f"Process {local_rank} on this node needs GPU cuda:{local_rank}, but {torch.cuda.device_count()} "
                "GPU(s) are visible. Start at most one process per GPU (--nproc_per_node)."
            )
        torch.cuda.set_device(local_rank)
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistributedContext(rank=rank, world_size=world, local_rank=local_rank, backend=backend)


def device_for(context: DistributedContext | None, device: str) -> str:
    """The device this process trains on (``cuda:LOCAL_RANK`` with NCCL)."""
    if context is not None and context.backend == "nccl":
        return f"cuda:{context.local_rank}"
    if context is not None:
        return "cpu"
    return device


def check_batch(batch_size: int, shards: int) -> int:
    """Samples per process and step.

    Raises:
        ConfigurationError: The global batch does not split evenly over the processes.
    """
    if batch_size % shards:
        raise ConfigurationError(
            f"batch_size {batch_size} does not split evenly over {shards} processes; use a multiple of {shards}."
        )
    return batch_size // shards


def shutdown(context: DistributedContext | None) -> None:
    """Leave the process group."""
    if context is not None and dist.is_initialized():
        dist.destroy_process_group()


__all__ = [
    "DistributedContext",
    "check_batch",
    "device_for",
    "environment_world_size",
    "init_from_environment",
    "shutdown",
]
