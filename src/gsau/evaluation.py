"""Chunked full-ranking evaluation over all items (no sampled negatives).

Users are processed in chunks sorted by history length, so each chunk pads only to its own longest
history and memory stays bounded by chunk x items whatever the catalogue size.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from gsau.data.split import LeaveOneOut
from gsau.metrics import DEFAULT_KS, metrics_from_ranks, target_ranks


@torch.no_grad()
def user_ranks(model, split: LeaveOneOut, stage: str, mask_history: bool | None = None,
               batch_size: int = 1024, users: np.ndarray | None = None, progress: bool = False) -> np.ndarray:
    """Pessimistic rank of each user's `stage` target (users 1..U, or the given subset)."""
    model.eval()
    mask_history = model.cfg.mask_history if mask_history is None else mask_history
    indptr, flat = split.history(stage)
    targets = split.targets(stage)
    full_lengths = np.diff(indptr)
    asked = np.arange(split.n_users) if users is None else np.asarray(users) - 1
    # Chunks of similar window length pad little.
    by_length = np.argsort(np.minimum(full_lengths, model.history_cap)[asked], kind="stable")
    rows = asked[by_length]
    ranks = np.empty(len(rows), dtype=np.int64)
    starts = range(0, len(rows), batch_size)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc=f"ranking {stage}", unit="chunk", leave=False, file=sys.stderr)
    for start in starts:
        chunk = rows[start: start + batch_size]
        scores = model.score_histories(chunk + 1, indptr, flat)
        exclude = None
        if mask_history:
            exclude = torch.zeros_like(scores, dtype=torch.bool)
            counts = full_lengths[chunk]
            r = np.repeat(np.arange(len(chunk)), counts)
            firsts = np.repeat(indptr[chunk], counts)
            cols = flat[firsts + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))]
            exclude[torch.from_numpy(r).to(scores.device), torch.from_numpy(cols).to(scores.device)] = True
        chunk_targets = torch.from_numpy(targets[chunk]).to(scores.device)
        ranks[start: start + len(chunk)] = target_ranks(scores, chunk_targets, exclude).cpu().numpy()
        del scores, exclude  # before the next chunk is scored: one [chunk x items] buffer alive, not two
    out = np.empty_like(ranks)
    out[by_length] = ranks  # back to the caller's user order
    return out


def evaluate(model, split: LeaveOneOut, stage: str, ks=DEFAULT_KS, mask_history: bool | None = None,
             batch_size: int = 1024, progress: bool = False, dist=None) -> dict[str, float]:
    """Metrics averaged over every user. With several processes (`dist`) each ranks its share of
    the users and the sums are added up, so every rank gets the same figures."""
    if dist is None or not dist.active:
        ranks = user_ranks(model, split, stage, mask_history, batch_size, progress=progress)
        return {k: float(v.mean()) for k, v in metrics_from_ranks(torch.from_numpy(ranks), ks).items()}
    users = np.arange(1, split.n_users + 1)[dist.share(split.n_users)]
    ranks = user_ranks(model, split, stage, mask_history, batch_size, users=users)
    per_user = metrics_from_ranks(torch.from_numpy(ranks), ks)
    names = list(per_user)
    device = model.item_table.weight.device
    sums = dist.sum_(torch.stack([per_user[k].sum() for k in names]).to(device))
    return {k: float(v) / split.n_users for k, v in zip(names, sums.cpu())}
