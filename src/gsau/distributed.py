"""Several processes (torch.distributed, launched by torchrun): what each rank trains on, and how
their results are combined so that a run means the same at any world size.

The config's batch size stays the global batch: every rank draws the same global batch (the same
numpy generator, consumed identically) and trains on its contiguous share of it. Objectives fall
into two kinds (Recommender.graph_terms / sequence_terms):
- means over samples (alignment, cross-entropy, BPR): each rank computes its share's mean, weighted
  by world * n_local / n_global, so that averaging the ranks' gradients gives the global mean's;
- terms over the whole batch (uniformity over all pairs, the derangement's user-negative pairs):
  each rank gathers the batch's representations with a differentiable all_gather and computes
  the global term; the gather's backward sums the ranks' identical gradients, which averaging
  divides back.
Gradients are averaged with one all_reduce of all of them per step. With one process (the default)
every function here is the identity and nothing is imported from torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from gsau.errors import GsauError


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # from_environment created the process group, so close() ends it

    def close(self) -> None:
        """End the process group this Dist created. A process that exits with a gloo group still
        alive can abort in gloo's threads ("terminate called without an active exception"; seen under
        load in a two-process test); a group the caller created stays theirs to end."""
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        self.owns_group = False

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives (no-ops in one process) ------------------------------------------------------
    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def all_gather_object(self, obj) -> list:
        if not self.active:
            return [obj]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def any(self, flag: bool, device) -> bool:
        """True on every rank when `flag` is True on any rank (so all ranks stop together)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.active:
            torch.distributed.all_reduce(tensor)
        return tensor

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """The ranks' x concatenated along dim 0, differentiable (ranks may hold different counts)."""
        if not self.active:
            return x
        return _Gather.apply(x, self.all_sizes(len(x), x.device), self.rank)

    def all_sizes(self, n: int, device) -> list[int]:
        t = torch.zeros(self.world, dtype=torch.int64, device=device)
        t[self.rank] = n
        torch.distributed.all_reduce(t)
        return t.tolist()

    def share_weight(self, n_local: int, device) -> float:
        """world * n_local / n_global: the weight of a rank's mean over its share of the samples."""
        if not self.active:
            return 1.0
        return self.world * n_local / sum(self.all_sizes(n_local, device))

    def average_gradients(self, model: torch.nn.Module) -> None:
        """One all_reduce of every gradient, flattened, then divided by the world size. A parameter
        that got no gradient on this rank contributes zeros (others may have one)."""
        if not self.active:
            return
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        torch.distributed.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset: offset + n].view_as(p))
            offset += n

    # -- shares of a global batch -------------------------------------------------------------------
    def share(self, n: int) -> slice:
        """This rank's contiguous share of n global items (np.array_split's layout)."""
        bounds = np.linspace(0, n, self.world + 1).round().astype(int) if self.active else np.array([0, n])
        return slice(int(bounds[self.rank]), int(bounds[self.rank + 1]))


class _Gather(torch.autograd.Function):
    """all_gather along dim 0 with a backward pass: every rank computes the same loss from the
    gathered tensor, so a rank's share gets the sum of all ranks' (equal) gradients for it."""

    @staticmethod
    def forward(ctx, x, sizes, rank):
        ctx.sizes, ctx.rank = sizes, rank
        # all_gather needs equal shapes: pad to the largest share, then drop the padding.
        pad = max(sizes) - len(x)
        padded = torch.cat([x, x.new_zeros(pad, *x.shape[1:])]) if pad else x.contiguous()
        parts = [torch.empty_like(padded) for _ in sizes]
        torch.distributed.all_gather(parts, padded)
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start: start + ctx.sizes[ctx.rank]], None, None


def from_environment(device_spec: str = "auto") -> Dist:
    """The process group torchrun set up in the environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT; `env://`, so multi-host launches work as torchrun documents), or one
    process. NCCL when training on CUDA, gloo on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.distributed.is_available():
        raise GsauError("this torch build has no torch.distributed")
    owns = not torch.distributed.is_initialized()
    if owns:
        cuda = device_spec.startswith("cuda") or (device_spec == "auto" and torch.cuda.is_available())
        if cuda:
            torch.cuda.set_device(local_rank)
        torch.distributed.init_process_group("nccl" if cuda else "gloo", init_method="env://")
    return Dist(rank=rank, world=world, local_rank=local_rank, owns_group=owns)


def device_for(dist: Dist, device: torch.device) -> torch.device:
    """Each rank on its own GPU (cuda:LOCAL_RANK) when training on CUDA."""
    if dist.active and device.type == "cuda":
        return torch.device("cuda", dist.local_rank)
    return device
