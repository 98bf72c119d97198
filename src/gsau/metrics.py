"""Full-ranking metrics with one held-out item per user.

A target's rank is a comparison with its own score, not a sort:
    rank = 1 + #{other ranked items j : score_j >= score_target}.
Counting ties against the target (pessimistic) means a model that scores everything equally gets
near-zero metrics instead of lucky ones. A score that is not finite (NaN, +-inf: a diverged model)
counts against the target too, and a target whose own score is not finite ranks last: `NaN >= x`
is False, so without this a diverged model would rank every target first and score a perfect 1.0.
"""

from __future__ import annotations

import torch

from gsau.protocol import DEFAULT_KS, METRICS  # noqa: F401 (re-exported: the metric names live here)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor | None = None,
                 pad_index: int | None = 0) -> torch.Tensor:
    """1-based pessimistic rank of each row's target among the ranked items. Long tensor [B]."""
    if scores.dim() != 2 or targets.dim() != 1 or scores.shape[0] != targets.shape[0]:
        raise ValueError(f"scores must be [B, I] and targets [B]; got {tuple(scores.shape)} and {tuple(targets.shape)}")
    rows = torch.arange(scores.shape[0], device=scores.device)
    target_score = scores[rows, targets].unsqueeze(1)
    beats = scores >= target_score
    # A NaN or infinite score makes the sum non-finite: one reduction, no [B, I] mask, when every
    # score is finite as it should be (a finite overflow only sends it down the exact path).
    if not bool(torch.isfinite(scores.sum())):
        beats |= ~torch.isfinite(scores) | ~torch.isfinite(target_score)
    if exclude is not None:
        beats &= ~exclude
    if pad_index is not None:
        beats[:, pad_index] = False
    # The target never counts against itself, even if the caller's mask would exclude it.
    beats[rows, targets] = False
    return beats.sum(dim=1) + 1


def metrics_from_ranks(ranks: torch.Tensor, ks=DEFAULT_KS) -> dict[str, torch.Tensor]:
    """Per-row metric values {"recall@K", "ndcg@K", "mrr@K"} (float64 [B]) for each K."""
    ranks = ranks.to(torch.float64)
    out = {}
    for k in ks:
        hit = ranks <= k
        out[f"recall@{k}"] = hit.to(torch.float64)
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(ranks + 1.0), 0.0)
        out[f"mrr@{k}"] = torch.where(hit, 1.0 / ranks, 0.0)
    return out


def ranking_metrics(scores: torch.Tensor, targets: torch.Tensor, ks=DEFAULT_KS,
                    exclude: torch.Tensor | None = None, pad_index: int | None = 0) -> dict[str, float]:
    """Recall@K (= Hit@K with one target), NDCG@K and MRR@K averaged over the B rows.

    scores: float [B, I]; targets: long [B] item indices; exclude: optional bool [B, I] of items
    not to rank. Column `pad_index` (default 0, the padding item of gsau's tables) is never ranked;
    pass pad_index=None when the scores have no padding column.
    """
    ranks = target_ranks(scores, targets, exclude, pad_index)
    return {name: float(v.mean()) for name, v in metrics_from_ranks(ranks, ks).items()}

