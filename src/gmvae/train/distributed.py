"""Where training runs: the device, and several processes training one model with
DistributedDataParallel, set up from torchrun's environment.

    torchrun --nproc_per_node=N -m gmvae train ...      (one machine)
    torchrun --nnodes=M --nproc_per_node=N --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT \\
        -m gmvae train ...                               (each of M machines)

Every rank seeds the same way, draws the same batch order and the same noise for the whole
global batch, and trains on its own slice of each batch; DDP averages the gradients, so the
result is the single-process run's with the same global batch, up to float rounding.
Only rank 0 prints, evaluates and writes files.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from gmvae.errors import GMVAEError

# A rank that waits this long on the others (a hung or dead peer) fails instead of hanging.
TIMEOUT_SECONDS = float(os.environ.get("GMVAE_DIST_TIMEOUT", "600"))


@dataclass(frozen=True)
class World:
    """This process's place among the processes training one model."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's part of a global batch: contiguous, disjoint across ranks, covering it."""
        return torch.tensor_split(rows, self.size)[self.rank]


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; 'cpu', 'cuda' and 'cuda:N' are taken as asked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GMVAEError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GMVAEError(f"device {name!r} asked for, but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise GMVAEError(f"device {name!r} asked for, but there are only {count} GPUs")
    elif device.type != "cpu":
        raise GMVAEError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device_name: str) -> tuple[World, torch.device]:
    """Join the process group torchrun describes (nccl on CUDA, gloo on the CPU), or, when not
    launched by torchrun, a world of one. Returns the world and this rank's device."""
    device = resolve_device(device_name)
    if not launched_by_torchrun() or dist.is_initialized():
        if dist.is_initialized():
            return World(dist.get_rank(), dist.get_world_size()), device
        return World(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=TIMEOUT_SECONDS))
    return World(dist.get_rank(), dist.get_world_size()), device


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
        # gloo's worker threads let go of a collective's tensors just after the call returns,
        # and need the GIL for that. A rank that exits straight after its last collective (one
        # with nothing left to do while rank 0 writes the results) could shut Python down
        # under them, which aborts it: 'terminate called without an active exception'
        # (seen about one exit in three). destroy_process_group does not join those threads
        # once DDP has held the group, so give up the GIL for a moment and let them finish
        # (they need microseconds).
        time.sleep(0.1)


def all_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """The element-wise sum over ranks (the tensor itself in a world of one)."""
    if world.size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast(value: object, world: World) -> object:
    """Rank 0's value (a picklable Python object: an error message, a choice) on every rank."""
    if world.size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def share_buffers(module: torch.nn.Module, world: World) -> None:
    """Rank 0's buffers (batch normalisation's running statistics) on every rank. DDP sends
    them at the start of each forward pass, so after the last step each rank still holds the
    statistics of its own last batch; this makes the trained models identical."""
    if world.size > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def share_parameters(module: torch.nn.Module, world: World) -> None:
    """Rank 0's parameters on every rank: after each rank changed them outside DDP's steps
    (pretraining), in case float rounding made them differ."""
    if world.size > 1:
        for param in module.parameters():
            dist.broadcast(param.data, src=0)
