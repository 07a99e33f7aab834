"""Training as one rank of a torchrun group (stages/train/launch.py starts the group).

The whole group walks one global batch order (batches.py, the same for any number of ranks): an
optimizer step takes ``ranks × gradient_accumulation`` micro-batches and rank r computes every r-th of
them, so the shards are disjoint, every sample is seen once per epoch, and a run on N ranks takes the
same steps as one rank with N times the accumulation. DDP averages the LoRA gradients (the frozen base
is never synchronised: identical on every rank, loaded from the same files). Rank 0 alone writes
events, checkpoints and the adapter; the others compute and wait.

``SOLO`` is the one-process group: every hook is a no-op, so the loop has one code path.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from core.errors import StageError
from stages.train import launch
from stages.train.loss import loss_sum

# A collective that waits longer than this is a hang (a node gone silent); the group stops with an error.
TIMEOUT_ENV = "W4TUI_DIST_TIMEOUT_S"


@dataclass
class Group:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    ddp: Any = None  # the DistributedDataParallel wrapper of the loss (None alone)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def stop_signals(self) -> tuple[int, ...]:
        # In a group SIGTERM comes from torchrun taking the group down after a rank died: not a cancel
        # (no checkpoint can be agreed on with a dead peer), so it ends the process at once.
        return (signal.SIGINT,) if self.world > 1 else (signal.SIGINT, signal.SIGTERM)

    def share(self, group: list) -> tuple[list, float]:
        """This rank's micro-batches of a global step, and the factor on their loss. A rank left without
        one (the last step of an epoch) still takes part in the gradient average, with a zero loss."""
        mine = group[self.rank :: self.world]
        return (mine, float(self.world)) if mine else (group[:1], 0.0)

    def loss(self, model, batch, device: str, sync: bool):
        """The summed loss of ``batch`` through DDP (gradients averaged on the backward of the last
        micro-batch, ``sync``), or straight through the model alone."""
        if self.ddp is None:
            return loss_sum(model, batch, device)
        if sync:
            return self.ddp(batch)
        with self.ddp.no_sync():
            return self.ddp(batch)

    def agree(self, stop: bool) -> bool:
        """Whether any rank was asked to stop: every rank stops after the same step."""
        if self.world == 1:
            return stop
        flag = torch.tensor([1.0 if stop else 0.0], device=self._device)
        dist.all_reduce(flag)
        return bool(flag.item() > 0)

    def sum(self, *values: float) -> list[float]:
        if self.world == 1:
            return list(values)
        total = torch.tensor(values, dtype=torch.float64, device=self._device)
        dist.all_reduce(total)
        return total.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    @property
    def _device(self) -> str:
        return f"cuda:{self.local_rank}" if dist.get_backend() == "nccl" else "cpu"

    def wrap(self, model, device: str) -> None:
        """DDP over the LoRA parameters only: the frozen base is neither broadcast nor reduced."""
        if self.world == 1:
            return
        module = _LossModule(model, device)
        frozen = [name for name, p in module.named_parameters() if not p.requires_grad]
        torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            module, frozen + [name for name, _ in module.named_buffers()]
        )
        ids = [self.local_rank] if device == "cuda" else None
        self.ddp = torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


SOLO = Group()


@contextlib.contextmanager
def main_first(group: Group) -> Iterator[None]:
    """Rank 0 runs the block first (it may write a cache), then the others (they read it)."""
    if not group.is_main:
        group.barrier()
    yield
    if group.is_main:
        group.barrier()


class _LossModule(torch.nn.Module):
    """The loss as a module, so DDP's forward (and its gradient hooks) wraps exactly what the loop runs."""

    def __init__(self, model, device: str) -> None:
        super().__init__()
        self.model = model
        self.device = device

    def forward(self, batch):
        return loss_sum(self.model, batch, self.device)


def join(device: str) -> Group:
    """This process's group: SOLO outside torchrun, else a rank joined over gloo (CPU) or NCCL (CUDA)."""
    rank = launch.worker_rank()
    if rank is None:
        return SOLO
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise StageError(
                f"rank {local_rank} needs GPU {local_rank}, but this machine has {torch.cuda.device_count()}",
                hint="lower --gpus ([train] gpus) to the number of GPUs",
            )
        torch.cuda.set_device(local_rank)  # "cuda" then means this rank's GPU everywhere
    # SIGTERM in a group is torchrun stopping it (another rank died): no cancel, no final event of ours;
    # the launcher writes the error naming the rank that died.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "900")))
    dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=timeout)
    return Group(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank)
