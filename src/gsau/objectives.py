"""Training objectives. Names follow the paper (arXiv 2412.04276, Sec. 3) and DirectAU (Wang et al. 2022).

All alignment and uniformity terms act on L2-normalised embeddings:
    align(x, y)  = mean_b ||x_b - y_b||^2
    unif(x)      = log mean_{i<j} exp(-2 ||x_i - x_j||^2)
    unif(x, y)   = log mean_b exp(-2 ||x_b - y_b||^2)           (paired: user vs. negative item)
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


def alignment(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    return (x - y).pow(2).sum(dim=-1).mean()


def _off_diagonal_logits(x: torch.Tensor, y: torch.Tensor, t: float, hits: torch.Tensor | None = None) -> torch.Tensor:
    """-t ||x_i - y_j||^2 for unit rows, [n, n], with the diagonal (i == j), and the pairs `hits`
    marks, at -inf. For unit vectors ||x_i - y_j||^2 = 2 - 2 x_i.y_j, so one Gram matmul replaces pdist."""
    logits = -t * (2.0 - 2.0 * (x @ y.T)).clamp_min(0.0)
    left_out = torch.eye(len(x), dtype=torch.bool, device=x.device)
    if hits is not None:
        left_out = left_out | hits
    return logits.masked_fill(left_out, float("-inf"))


def uniformity(x: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """log mean exp(-t ||x_i - x_j||^2) (Wang & Isola 2020, t = 2) over all pairs i < j of the batch.
    The mean over i < j equals the mean over i != j (the matrix is symmetric), so the diagonal is
    dropped by setting it to -inf before a stable logsumexp."""
    x = F.normalize(x, dim=-1)
    n = x.shape[0]
    if n < 2:
        return x.new_zeros(())
    return torch.logsumexp(_off_diagonal_logits(x, x, t).flatten(), dim=0) - math.log(n * (n - 1))


def pair_uniformity(x: torch.Tensor, y: torch.Tensor, t: float = 2.0, keep: torch.Tensor | None = None) -> torch.Tensor:
    """log mean_b exp(-t ||x_b - y_b||^2) over the pairs `keep` [n] marks (all without it); 0 when
    none is kept."""
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    logits = -t * (x - y).pow(2).sum(dim=-1)
    if keep is None:
        return torch.logsumexp(logits, dim=0) - math.log(logits.numel())
    value, _ = _log_weighted_mean(logits.masked_fill(~keep, float("-inf")), keep.to(logits.dtype))
    return value


def _weighted(logits: torch.Tensor, weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits + log w_j, the weight of each pair left in): a mean over pairs becomes the weighted
    mean sum w_j exp(l_ij) / sum w_j; without weights every pair weighs 1."""
    kept = torch.isfinite(logits)
    if weights is None:
        return logits, kept.to(logits.dtype)
    return logits + weights.log(), kept * weights  # weights broadcast over the last dimension (the y_j)


def _log_weighted_mean(logits: torch.Tensor, mass: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log(sum_j exp(logits_j) / sum_j mass_j) over the last dimension, and where anything is left
    (mass > 0); 0 where nothing is. Masked, not indexed: no host sync on a GPU."""
    total = mass.sum(dim=-1)
    left = total > 0
    logits = logits.masked_fill(~left.unsqueeze(-1), 0.0)  # all -inf would give NaN gradients through the where
    return torch.where(left, torch.logsumexp(logits, dim=-1) - total.clamp_min(1e-30).log(), 0.0), left


def cross_uniformity(x: torch.Tensor, y: torch.Tensor, t: float = 2.0, hits: torch.Tensor | None = None,
                     weights: torch.Tensor | None = None) -> torch.Tensor:
    """log mean exp(-t ||x_i - y_j||^2) over every pair i != j of two batches of rows (x_i's own
    y_i left out): `pair_uniformity` over all B(B - 1) pairs instead of one per row. `hits` [n, n]
    leaves out more pairs too (accidental hits: y_j is the item x_i predicts, as another sample's
    target); the mean is over the pairs left, weighted by `weights` [n] of the y_j where given."""
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    n = x.shape[0]
    if n < 2:
        return x.new_zeros(())
    logits = _off_diagonal_logits(x, y, t, hits)
    if hits is None and weights is None:
        return torch.logsumexp(logits.flatten(), dim=0) - math.log(n * (n - 1))
    value, _ = _log_weighted_mean(*_weighted(logits.flatten(), weights.repeat(n) if weights is not None else None))
    return value


def row_uniformity(x: torch.Tensor, y: torch.Tensor, t: float = 2.0, hits: torch.Tensor | None = None,
                   weights: torch.Tensor | None = None) -> torch.Tensor:
    """mean over rows i of log mean_{j != i} exp(-t ||x_i - y_j||^2): `cross_uniformity` with the
    log-mean-exp taken per row, so each row is pushed from its own closest y_j. With `hits`, those
    pairs are left out too, and a row left with no pair does not count; `weights` as there."""
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    n = x.shape[0]
    if n < 2:
        return x.new_zeros(())
    logits = _off_diagonal_logits(x, y, t, hits)
    if hits is None and weights is None:
        return (torch.logsumexp(logits, dim=1) - math.log(n - 1)).mean()
    per_row, rows = _log_weighted_mean(*_weighted(logits, weights))
    return per_row.sum() / rows.sum().clamp_min(1)  # rows with no pair left do not count


def catalogue_uniformity(x: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """mean over rows i of log mean_{j != targets_i} exp(-t ||x_i - items_j||^2): each row against
    every item of the catalogue (`items` [I + 1, d], row 0 the padding, left out) but its own target,
    as the all-item softmax ranks them. For unit vectors, -t ||x - y||^2 = 2t (x.y - 1)."""
    x, items = F.normalize(x, dim=-1), F.normalize(items[1:], dim=-1)
    logits = (2.0 * t) * (x @ items.T - 1.0)  # [B, I]
    logits = logits.scatter(1, (targets - 1).unsqueeze(1), float("-inf"))
    return (torch.logsumexp(logits, dim=1) - math.log(items.shape[0] - 1)).mean()


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


class FullSoftmaxCE:
    """Softmax cross-entropy over every item of the scores s @ table[1:]^T (+ bias[1:]), with
    targets given as item ids (row 0 of the table is padding and never a candidate).

    Same value and gradients as F.cross_entropy(s @ table[1:].T, targets - 1), with less memory
    traffic: the [B, I] scores live in one buffer reused across steps (a fresh 25 MB tensor every
    step costs as much in page faults as the matrix product itself), become the softmax in place,
    and the backward pass turns them into the score gradient in place. No log-probability or
    one-hot tensor is ever built. A buffer still awaiting its backward pass is never reused.
    """

    def __init__(self, dtype: torch.dtype = torch.float32):
        self._buffer: torch.Tensor | None = None
        self._busy = False
        # bfloat16: the three [B, I]-sized products (scores = s T^T, and in the backward pass the
        # score gradient times T and its transpose times s) take bfloat16 operands, faster on CPUs
        # with AVX-512 BF16 (README, "Opt-in, not exact"); the scores are rounded to bfloat16 once, then the max,
        # softmax, loss and gradients are float32. Each score and gradient entry carries a relative
        # rounding error of about 2^-8. Not the paper's arithmetic, hence opt-in.
        self.dtype = dtype

    def __call__(self, s: torch.Tensor, table: torch.Tensor, targets: torch.Tensor,
                 bias: torch.Tensor | None = None) -> torch.Tensor:
        return _FullSoftmaxCE.apply(s, table, bias, targets, self)

    def _take(self, rows: int, cols: int, like: torch.Tensor, keep: bool) -> tuple[torch.Tensor, bool]:
        """A [rows, cols] score buffer and whether it is the shared one. The shared buffer is the
        first rows of one that only grows: BERT4Rec's masked positions vary from step to step, and
        a fresh buffer of each new size would pay its page faults all over again."""
        buf = self._buffer
        fits = (buf is not None and buf.shape[0] >= rows and buf.shape[1] == cols
                and buf.dtype == like.dtype and buf.device == like.device)
        if self._busy:  # the shared buffer still awaits a backward pass: this call gets its own
            return torch.empty(rows, cols, dtype=like.dtype, device=like.device), False
        if not fits:
            self._buffer = buf = torch.empty(rows, cols, dtype=like.dtype, device=like.device)
        self._busy = keep
        return buf[:rows], True


class _FullSoftmaxCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s, table, bias, targets, owner):
        needs_grad = any(ctx.needs_input_grad[:3])
        scores, shared = owner._take(len(s), table.shape[0] - 1, s, keep=needs_grad)
        # Reduced-precision operands are made once here and reused by the backward pass.
        low = (s.to(owner.dtype), table[1:].to(owner.dtype)) if owner.dtype == torch.bfloat16 and s.dtype != torch.bfloat16 else None
        if low is not None:
            scores.copy_(low[0] @ low[1].T)
            if bias is not None:
                scores.add_(bias[1:])
        elif bias is None:
            torch.mm(s, table[1:].T, out=scores)
        else:
            torch.addmm(bias[1:], s, table[1:].T, out=scores)
        column = (targets - 1).unsqueeze(1)
        target_score = scores.gather(1, column)
        top = scores.amax(dim=1, keepdim=True)
        scores.sub_(top).exp_()  # exp(score - max): the softmax numerators
        z = scores.sum(dim=1, keepdim=True)
        loss = (top + z.log() - target_score).mean()
        if needs_grad:
            ctx.save_for_backward(s, table, z, column)
            ctx.scores, ctx.shared, ctx.owner, ctx.has_bias, ctx.low = scores, shared, owner, bias is not None, low
        return loss

    @staticmethod
    def backward(ctx, grad):
        s, table, z, column = ctx.saved_tensors
        scores, owner = ctx.scores, ctx.owner
        ctx.scores = None
        if ctx.shared:
            owner._busy = False  # free for the next forward once this backward is done with it
        c = grad / len(s)
        # d loss / d score = c (softmax - one_hot): scale the numerators by c / z, subtract c at targets.
        scores.mul_(c / z)
        scores.scatter_add_(1, column, (-c).expand(len(s), 1).contiguous())
        g, items, s_ = scores, table[1:], s
        if ctx.low is not None:
            (s_, items), ctx.low = ctx.low, None
            g = scores.to(owner.dtype)
        grad_s = (g @ items).to(s.dtype) if ctx.needs_input_grad[0] else None
        grad_table = None
        if ctx.needs_input_grad[1]:
            grad_table = torch.zeros_like(table)
            if g is scores:
                torch.mm(scores.T, s, out=grad_table[1:])
            else:
                grad_table[1:] = g.T @ s_
        grad_bias = None
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = torch.zeros(table.shape[0], dtype=scores.dtype, device=scores.device)
            grad_bias[1:] = scores.sum(dim=0)
        return grad_s, grad_table, grad_bias, None, None


class ChunkedSoftmaxCE:
    """The all-item softmax cross-entropy of FullSoftmaxCE (same value and gradients up to float
    rounding) for catalogues whose [B, I] score matrix does not fit: the items are taken
    `chunk_items` at a time, the log-partition accumulated as a running max and rescaled sum
    (online logsumexp), and the backward pass recomputes each chunk's scores instead of keeping them.
    Memory is [B, chunk_items] instead of [B, I]; the price is one more [B, I]-sized product (the
    scores, twice) per step.
    """

    def __init__(self, chunk_items: int):
        if chunk_items < 1:
            raise ValueError(f"chunk_items must be at least 1, not {chunk_items}")
        self.chunk_items = chunk_items

    def __call__(self, s: torch.Tensor, table: torch.Tensor, targets: torch.Tensor,
                 bias: torch.Tensor | None = None) -> torch.Tensor:
        return _ChunkedSoftmaxCE.apply(s, table, bias, targets, self.chunk_items)


def _item_chunks(n_rows: int, chunk: int):
    """(lo, hi) row ranges of a table's items 1..n_rows - 1 (row 0 is padding), `chunk` at a time."""
    return [(lo, min(lo + chunk, n_rows)) for lo in range(1, n_rows, chunk)]


def _chunk_scores(s, table, bias, lo, hi, out):
    scores = out[:, : hi - lo]
    if bias is None:
        return torch.mm(s, table[lo:hi].T, out=scores)
    return torch.addmm(bias[lo:hi], s, table[lo:hi].T, out=scores)


class _ChunkedSoftmaxCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s, table, bias, targets, chunk):
        n = len(s)
        buffer = s.new_empty(n, min(chunk, table.shape[0] - 1))
        top = s.new_full((n, 1), float("-inf"))
        z = s.new_zeros(n, 1)
        target_score = s.new_empty(n)
        for lo, hi in _item_chunks(table.shape[0], chunk):
            scores = _chunk_scores(s, table, bias, lo, hi, buffer)
            here = torch.nonzero((targets >= lo) & (targets < hi)).squeeze(1)
            target_score[here] = scores[here, targets[here] - lo]
            new_top = torch.maximum(top, scores.amax(dim=1, keepdim=True))
            # z held sum exp(score - top); rescale it to the new max before adding this chunk.
            z = z * (top - new_top).exp() + (scores - new_top).exp_().sum(dim=1, keepdim=True)
            top = new_top
        log_z = top + z.log()
        ctx.save_for_backward(s, table, bias, targets, log_z)
        ctx.chunk = chunk
        return (log_z.squeeze(1) - target_score).mean()

    @staticmethod
    def backward(ctx, grad):
        s, table, bias, targets, log_z = ctx.saved_tensors
        c = grad / len(s)
        buffer = s.new_empty(len(s), min(ctx.chunk, table.shape[0] - 1))
        grad_s = torch.zeros_like(s) if ctx.needs_input_grad[0] else None
        grad_table = torch.zeros_like(table) if ctx.needs_input_grad[1] else None
        grad_bias = torch.zeros_like(bias) if bias is not None and ctx.needs_input_grad[2] else None
        for lo, hi in _item_chunks(table.shape[0], ctx.chunk):
            # d loss / d score = c (softmax - one_hot), built in the chunk's score buffer.
            g = _chunk_scores(s, table, bias, lo, hi, buffer).sub_(log_z).exp_().mul_(c)
            here = torch.nonzero((targets >= lo) & (targets < hi)).squeeze(1)
            g[here, targets[here] - lo] -= c
            if grad_s is not None:
                grad_s.addmm_(g, table[lo:hi])
            if grad_table is not None:
                torch.mm(g.T, s, out=grad_table[lo:hi])
            if grad_bias is not None:
                grad_bias[lo:hi] = g.sum(dim=0)
        return grad_s, grad_table, grad_bias, None, None


def sampled_softmax_ce(s: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, candidates: torch.Tensor,
                       log_q: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                       sparse: bool = False) -> torch.Tensor:
    """Sampled softmax cross-entropy with the logQ correction (Bengio & Senecal 2008; Jean et al.
    2015), over the target and a set of candidate items shared by the batch.

    Row b's logits are its target's score o_y, in the set with certainty (Q = 1, no correction),
    and each candidate's o_c - log Q_c, where Q_c is the candidate's expected count in the draw
    (M q_c for M draws with replacement from q); a candidate that is the row's own target (an
    accidental hit) is masked out. Then sum_c exp(o_c - log Q_c) estimates sum_{j != y} exp(o_j)
    without bias, so the loss tends to the exact all-item CE as M grows. With `log_q` None and
    every item a candidate once, it is the exact CE. `sparse`: the table's gradient row-sparse
    (train.optimizer=lazy_adam), same values.
    """
    rows = (lambda ids: F.embedding(ids, table, sparse=True)) if sparse else table.__getitem__
    target_score = (s * rows(targets)).sum(dim=-1)
    logits = s @ rows(candidates).T
    if bias is not None:
        target_score = target_score + bias[targets]
        logits = logits + bias[candidates]
    if log_q is not None:
        logits = logits - log_q
    logits = logits.masked_fill(candidates.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))
    return (torch.logsumexp(torch.cat([target_score.unsqueeze(1), logits], dim=1), dim=1) - target_score).mean()


class SampledSoftmaxCE(nn.Module):
    """`sampled_softmax_ce` with `negatives` candidates drawn once per step for the whole batch,
    with replacement, from torch's generator (seeded and checkpointed like dropout):

    - "uniform": q = 1 / I;
    - "popularity": q proportional to 1 + the number of times each item has been a training target
      so far (counted here as batches go by, the streaming frequency estimate of Yi et al. 2019;
      after one epoch it is the training popularity). The correction uses the q the candidates were
      drawn from, so it is exact importance sampling at every step. The counts are a buffer of the
      model, saved with it, so a resumed run draws what an uninterrupted one would.
    """

    def __init__(self, n_items: int, negatives: int, sampling: str = "uniform"):
        super().__init__()
        if negatives < 1:
            raise ValueError(f"negatives must be at least 1, not {negatives}")
        if sampling not in ("uniform", "popularity"):
            raise ValueError(f"sampling must be uniform or popularity, not {sampling!r}")
        self.n_items, self.negatives, self.sampling = n_items, negatives, sampling
        if sampling == "popularity":
            self.register_buffer("target_counts", torch.zeros(n_items + 1, dtype=torch.float64))

    def draw(self, device, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(candidate item ids [M], log Q of each [M]); from `generator` (a CPU one) when given,
        else from torch's default generator on `device`."""
        m = self.negatives
        if self.sampling == "uniform":
            if generator is None:
                candidates = torch.randint(1, self.n_items + 1, (m,), device=device)
            else:
                candidates = torch.randint(1, self.n_items + 1, (m,), generator=generator).to(device)
            return candidates, torch.full((m,), math.log(m / self.n_items), device=device)
        weights = self.target_counts[1:] + 1.0
        if generator is None:
            candidates = torch.multinomial(weights, m, replacement=True) + 1
        else:
            candidates = (torch.multinomial(weights.cpu(), m, replacement=True, generator=generator) + 1).to(device)
        q = weights[candidates - 1] / weights.sum()
        return candidates, (m * q).log().float()

    def forward(self, s: torch.Tensor, table: torch.Tensor, targets: torch.Tensor,
                bias: torch.Tensor | None = None, generator: torch.Generator | None = None,
                counted: torch.Tensor | None = None, sparse: bool = False) -> torch.Tensor:
        """Several processes pass the generator they share (the same candidates on every rank)
        and the whole batch's targets as `counted` (the same popularity counts on every rank)."""
        candidates, log_q = self.draw(s.device, generator)
        if self.sampling == "popularity":
            counted = targets if counted is None else counted
            with torch.no_grad():
                self.target_counts.index_add_(0, counted, torch.ones_like(counted, dtype=torch.float64))
        return sampled_softmax_ce(s, table, targets, candidates, log_q.to(s.dtype), bias, sparse)


def sequence_ce(cfg, n_items: int):
    """The sequence CE object a NetConfig asks for (called as loss(s, table, targets, bias)):
    sampled_ce, the chunked exact CE (ce_chunk_items > 0), or the one-buffer exact CE."""
    if cfg.sequence_loss == "sampled_ce":
        return SampledSoftmaxCE(n_items, cfg.sampled_negatives, cfg.sampling)
    if cfg.ce_chunk_items:
        return ChunkedSoftmaxCE(cfg.ce_chunk_items)
    return FullSoftmaxCE(getattr(torch, cfg.ce_dtype))


# -- graph objectives, by config name (NetConfig.graph_loss) -------------------------------------
# Each reads the graph encoder's layers [K + 1, n, d] at the batch's users, items (and negatives),
# with `combine` turning layers into the encoder's final embedding, and returns named terms
# (weights are applied by Recommender.total). A new objective is a function and one entry below.

def directau_terms(layers, combine, batch, tables) -> dict[str, torch.Tensor]:
    """DirectAU on the final embeddings: L_GA = align(u, i), L_GU = unif(u) + unif(i)."""
    eu, ei = (combine(rows) for rows in layers)
    return {"L_GA": alignment(eu, ei), "L_GU": uniformity(eu) + uniformity(ei)}


def graphau_terms(layers, combine, batch, tables) -> dict[str, torch.Tensor]:
    """GraphAU as the authors' code computes it: each layer-0 node aligned with its partner's
    views [layer 1, ..., layer K, final (combined) embedding], both directions, the sum divided
    by 2(K + 1); uniformity on layer 0."""
    lu, li = layers
    views_u, views_i = [*lu[1:], combine(lu)], [*li[1:], combine(li)]
    align = sum(alignment(lu[0], vi) + alignment(li[0], vu) for vu, vi in zip(views_u, views_i))
    return {"L_GA": align / (2 * len(views_u)), "L_GU": uniformity(lu[0]) + uniformity(li[0])}


def bpr_terms(layers, combine, batch, tables) -> dict[str, torch.Tensor]:
    """LightGCN's BPR with one negative per pair; the L2 term acts on the layer-0 (table) rows."""
    eu, ep, en = (combine(rows) for rows in layers)
    users, items = tables
    return {"L_BPR": bpr((eu * ep).sum(-1), (eu * en).sum(-1)),
            "L_reg": l2_regularizer(users[batch["users"]], items[batch["items"]], items[batch["negatives"]])}


class GraphObjective(NamedTuple):
    terms: Callable  # (layers, combine, batch, (user table, item table)) -> {name: term}
    negatives: bool  # the graph stream samples one negative item per pair


GRAPH_OBJECTIVES = {
    "au": GraphObjective(directau_terms, negatives=False),
    "layer_au": GraphObjective(graphau_terms, negatives=False),
    "bpr": GraphObjective(bpr_terms, negatives=True),
}
