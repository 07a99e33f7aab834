"""Training as one rank of a torchrun group (stages/train/launch.py starts the group).

The whole group walks one global batch order (batches.py, the same for any number of ranks): an
optimizer step takes ``ranks × gradient_accumulation`` micro-batches and rank r computes every r-th of
them, so the shards are disjoint, every sample is seen once per epoch, and a run on N ranks takes the
same steps as one rank with N times the accumulation. Rank 0 alone writes events, checkpoints and the
adapter; the others compute and wait.

``shard`` says what each rank holds:
- ``ddp``: the whole base; DDP averages the LoRA gradients (the frozen base is never synchronised:
  identical on every rank, loaded from the same files).
- ``fsdp``: 1/N of the frozen base, for bases that do not fit one GPU. PyTorch's FSDP2
  (``fully_shard``) shards every decoder layer, the embeddings and the head, and gathers each for its
  forward and backward. The LoRA weights are left out of the sharding (``ignored_params``): they stay
  whole fp32 tensors on every rank, so the optimizer, the grad norm, checkpoints and the adapter are
  exactly those of one rank (a checkpoint moves between ddp, fsdp and one rank as it is), and their
  gradients, accumulated locally over the micro-batches, are averaged once a step (``reduce``).

``SOLO`` is the one-process group: every hook is a no-op, so the loop has one code path.
"""

from __future__ import annotations

import contextlib
import datetime
import math
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
    shard: str = "ddp"  # or "fsdp", see above
    wrapped: Any = None  # the loss module under DDP or FSDP (None alone)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.world > 1 and self.shard == "fsdp"

    def load_device(self, device: str) -> str:
        """Where the base loads: a base to be sharded on the CPU (only each rank's shard goes to its GPU)."""
        return "cpu" if self.sharded else device

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
        micro-batch, ``sync``), FSDP (gradients averaged by ``reduce``), or the model alone."""
        if self.wrapped is None:
            return loss_sum(model, batch, device)
        if sync or self.sharded:
            return self.wrapped(batch)
        with self.wrapped.no_sync():
            return self.wrapped(batch)

    def eval_forwards(self, samples: int, batch_size: int) -> int:
        """The eval forwards every rank runs under fsdp (each gathers the weights from all ranks, so a
        rank short of a batch runs one that counts nothing); 0: each rank its own."""
        return math.ceil(samples / batch_size / self.world) if self.sharded else 0

    def eval_loss(self, model, batch, device: str):
        """The loss without gradients: sharded weights are gathered by the FSDP module's own forward."""
        return self.wrapped(batch) if self.sharded else loss_sum(model, batch, device)

    def reduce(self, params: list) -> None:
        """fsdp: average the LoRA gradients over the ranks, once a step, before they are unscaled or
        clipped, so every rank steps the same weights (DDP does this inside its backward)."""
        if not self.sharded:
            return
        for p in params:
            if p.grad is None:  # every rank runs a forward each step; were one missing, the buckets stay equal
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params]
        for start in range(0, len(grads), _BUCKET):
            bucket = grads[start : start + _BUCKET]
            flat = torch._utils._flatten_dense_tensors(bucket)
            dist.all_reduce(flat)
            flat /= self.world
            for grad, averaged in zip(bucket, torch._utils._unflatten_dense_tensors(flat, bucket)):
                grad.copy_(averaged)

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
        """DDP over the LoRA parameters only (the frozen base is neither broadcast nor reduced), or
        FSDP2 over the frozen base. Before the optimizer is made: fsdp moves the LoRA weights."""
        if self.world == 1:
            return
        module = _LossModule(model, device)
        if self.sharded:
            self.wrapped = _fully_shard(module, model, device, self.world)
            return
        frozen = [name for name, p in module.named_parameters() if not p.requires_grad]
        torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            module, frozen + [name for name, _ in module.named_buffers()]
        )
        ids = [self.local_rank] if device == "cuda" else None
        self.wrapped = torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def held(self, model) -> tuple[int, int]:
        """(bytes of the frozen base this rank holds, bytes of the whole base): 1/N under fsdp."""
        from torch.distributed.tensor import DTensor

        frozen = [p for p in model.parameters() if not p.requires_grad]
        local = sum((p.to_local() if isinstance(p, DTensor) else p).nbytes for p in frozen)
        return local, sum(p.numel() * p.element_size() for p in frozen)

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


SOLO = Group()
_BUCKET = 64  # LoRA gradients averaged per all-reduce (a 7B's r=16 LoRA has 392 tensors)


def _fully_shard(module: torch.nn.Module, model, device: str, world: int) -> torch.nn.Module:
    """FSDP2 units: each decoder layer, the embeddings, the head (untied), and the rest in the root;
    one unit's full weights exist at a time (and the next one's, prefetched). The LoRA weights are
    ignored by FSDP: whole on every rank, moved to this rank's device here (FSDP moves only its own)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device, (world,))
    lora = {p for p in module.parameters() if p.requires_grad}
    causal_lm = model.get_base_model()
    layers = getattr(getattr(causal_lm, "model", None), "layers", None)
    if layers is None:  # the units are found by Qwen2/Llama's layout
        raise StageError(
            f"--shard fsdp: {type(causal_lm).__name__} has no model.layers to shard", hint="use --shard ddp"
        )
    units = list(layers)
    embeddings, head = causal_lm.get_input_embeddings(), causal_lm.get_output_embeddings()
    if head is not None and head.weight is not embeddings.weight:  # tied: one weight, one unit (the root)
        units += [embeddings, head]
    for p in lora:
        p.data = p.data.to(device)
    for unit in units:
        fully_shard(unit, mesh=mesh, ignored_params=lora)
    fully_shard(module, mesh=mesh, ignored_params=lora)
    return module


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


def join(device: str, shard: str = "ddp") -> Group:
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
    if shard == "fsdp" and device not in ("cuda", "cpu"):  # FSDP2's device mesh: CUDA or the CPU
        raise StageError(f"--shard fsdp trains on CUDA GPUs or the CPU, not {device}", hint="use --shard ddp")
    # SIGTERM in a group is torchrun stopping it (another rank died): no cancel, no final event of ours;
    # the launcher writes the error naming the rank that died.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "900")))
    dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=timeout)
    return Group(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank, shard=shard)
