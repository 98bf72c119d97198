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


def _scored_chunks(model, split: LeaveOneOut, stage: str, mask_history: bool, batch_size: int,
                   users: np.ndarray | None, progress: bool):
    """(by_length, chunks): the asked users (0-based rows) in order of history length, and an iterator
    of (start, rows, scores [rows x items], exclude or None) over chunks of them, exclude marking each
    user's earlier items when the history is masked. Chunks of similar window length pad little."""
    indptr, flat = split.history(stage)
    full_lengths = np.diff(indptr)
    asked = np.arange(split.n_users) if users is None else np.asarray(users) - 1
    by_length = np.argsort(np.minimum(full_lengths, model.history_cap)[asked], kind="stable")
    rows = asked[by_length]

    def chunks():
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
            yield start, chunk, scores, exclude
            del scores, exclude  # before the next chunk is scored: one [chunk x items] buffer alive, not two
    return by_length, chunks()


@torch.no_grad()
def user_ranks(model, split: LeaveOneOut, stage: str, mask_history: bool | None = None,
               batch_size: int = 1024, users: np.ndarray | None = None, progress: bool = False) -> np.ndarray:
    """Pessimistic rank of each user's `stage` target (users 1..U, or the given subset)."""
    model.eval()
    mask_history = model.cfg.mask_history if mask_history is None else mask_history
    targets = split.targets(stage)
    by_length, chunks = _scored_chunks(model, split, stage, mask_history, batch_size, users, progress)
    ranks = np.empty(len(by_length), dtype=np.int64)
    for start, chunk, scores, exclude in chunks:
        chunk_targets = torch.from_numpy(targets[chunk]).to(scores.device)
        ranks[start: start + len(chunk)] = target_ranks(scores, chunk_targets, exclude).cpu().numpy()
    out = np.empty_like(ranks)
    out[by_length] = ranks  # back to the caller's user order
    return out


@torch.no_grad()
def user_top_items(model, split: LeaveOneOut, stage: str, k: int = 10, mask_history: bool | None = None,
                   batch_size: int = 1024, users: np.ndarray | None = None) -> np.ndarray:
    """Each user's k highest-scored items (1-based item ids, [users, k], best first) as the ranking
    of user_ranks sees them: the padding item and, when the history is masked, the user's earlier
    items are never among them; a non-finite score ranks last."""
    model.eval()
    mask_history = model.cfg.mask_history if mask_history is None else mask_history
    by_length, chunks = _scored_chunks(model, split, stage, mask_history, batch_size, users, False)
    top = np.empty((len(by_length), k), dtype=np.int64)
    for start, chunk, scores, exclude in chunks:
        scores = torch.nan_to_num(scores.float(), nan=-torch.inf, posinf=-torch.inf)
        scores[:, 0] = -torch.inf
        if exclude is not None:
            scores[exclude] = -torch.inf
        top[start: start + len(chunk)] = scores.topk(k, dim=1).indices.cpu().numpy()
    out = np.empty_like(top)
    out[by_length] = top
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
