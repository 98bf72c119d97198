"""Training objectives. Names follow the paper (arXiv 2412.04276, Sec. 3) and DirectAU (Wang et al. 2022).

All alignment and uniformity terms act on L2-normalised embeddings:
    align(x, y)  = mean_b ||x_b - y_b||^2
    unif(x)      = log mean_{i<j} exp(-2 ||x_i - x_j||^2)
    unif(x, y)   = log mean_b exp(-2 ||x_b - y_b||^2)           (paired: user vs. negative item)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def alignment(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    return (x - y).pow(2).sum(dim=-1).mean()


def uniformity(x: torch.Tensor) -> torch.Tensor:
    """Over all pairs i < j of the batch. For unit vectors ||x_i - x_j||^2 = 2 - 2 x_i.x_j, so one
    Gram matmul replaces pdist. The mean over i < j equals the mean over i != j (the matrix is
    symmetric), so the diagonal is dropped by setting it to -inf before a stable logsumexp."""
    x = F.normalize(x, dim=-1)
    n = x.shape[0]
    if n < 2:
        return x.new_zeros(())
    logits = -2.0 * (2.0 - 2.0 * (x @ x.T)).clamp_min(0.0)
    logits = logits.masked_fill(torch.eye(n, dtype=torch.bool, device=x.device), float("-inf"))
    return torch.logsumexp(logits.flatten(), dim=0) - math.log(n * (n - 1))


def pair_uniformity(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    sq = (x - y).pow(2).sum(dim=-1)
    return torch.logsumexp(-2.0 * sq, dim=0) - math.log(sq.numel())


def derangement(n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """A random permutation with no fixed point: row b gets index out[b] != b (n >= 2).

    Shuffle, then send each element to its successor in shuffled order by a random non-zero
    cyclic shift; a cycle of length n has no fixed points.
    """
    if n < 2:
        raise ValueError("a derangement needs at least 2 rows")
    order = torch.randperm(n, generator=generator, device=device)
    shift = int(torch.randint(1, n, (1,), generator=generator))
    out = torch.empty_like(order)
    out[order] = order.roll(-shift)
    return out


def bpr(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid(pos_scores - neg_scores).mean()


def l2_regularizer(*embeddings: torch.Tensor) -> torch.Tensor:
    """Sum of squared L2 norms per example, averaged over the batch: sum_b (|u_b|^2 + |i_b|^2 + |j_b|^2) / B.
    (LightGCN's paper writes the same with a factor 1/2; RecBole's default drops the square.)"""
    return sum(e.pow(2).sum() for e in embeddings) / embeddings[0].shape[0]


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, targets)
