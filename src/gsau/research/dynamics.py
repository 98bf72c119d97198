"""Training dynamics on a fixed probe set (issue #18, question 3).

Each epoch, with `train.probe = n` > 0, a trainer callback reads the model (eval mode, no
gradients, no random draws: the run trains the same bits as without it) on n users and n items
sampled once with a fixed seed, so every run on a dataset is probed on the same users and items,
and adds to the epoch's record in log.jsonl:

    probe_{enc}_align       align(user view, view of the user's validation item)  (Wang & Isola 2020)
    probe_{enc}_unif_user   unif(user views of the probe users)
    probe_{enc}_unif_item   unif(item views of the probe items)
    probe_user_cos          mean cosine between a user's LightGCN embedding and its SASRec representation
    probe_item_cos          mean cosine between an item's two views
    probe_item_cka          linear CKA between the two encoders' item views (Kornblith et al. 2019)

where enc is `graph` (the graph encoder's final user and item embeddings) or `seq` (the sequence
representation of the user's training history, and the item table the sequential encoder scores
with). The cross-encoder fields need both encoders. The validation item is the pair the encoders
were not trained on; the alignment of training pairs is what the loss itself reports.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from gsau.data.batching import history_windows
from gsau.objectives import alignment, uniformity
from gsau.trainer import Callback

# The probe sample's seed: fixed, not the run's, so runs of every seed see the same users and items.
PROBE_SEED = 18


def random_uniformity(d: int, t: float = 2.0) -> float:
    """unif = log E exp(-t ||x - y||^2) of directions spread at random over the d-dimensional sphere,
    the reference a probe's uniformity is read against (0: every vector in one place). For unit x, y,
    ||x - y||^2 = 2 - 2c with c = x.y, whose density on the sphere is proportional to
    (1 - c^2)^((d - 3) / 2), so unif = -2t + log E exp(2tc), integrated here on a fine grid (about
    -2t + 2t^2 / d, from c ~ N(0, 1/d), while 2t^2 / d is small: -3.875 at d = 64, t = 2)."""
    c = np.linspace(-1.0, 1.0, 200_001)[1:-1]
    log_density = (d - 3) / 2 * np.log1p(-c * c)

    def log_sum_exp(x):
        return float(x.max() + np.log(np.exp(x - x.max()).sum()))
    return -2 * t + log_sum_exp(log_density + 2 * t * c) - log_sum_exp(log_density)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two views [n, d1], [n, d2] of the same n rows (Kornblith et al. 2019, Eq. 5):
    ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on column-centred X, Y. 1 for views equal up to an
    orthogonal transform and isotropic scaling; NaN when a view is constant (CKA is undefined)."""
    x, y = x.double(), y.double()
    x, y = x - x.mean(0), y - y.mean(0)
    denominator = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    if float(denominator) == 0.0:
        return math.nan
    return float(torch.linalg.matrix_norm(y.T @ x) ** 2 / denominator)


def probe_sample(split, size: int, seed: int = PROBE_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(users, items), 1-based, min(size, U) users and min(size, I) items without replacement."""
    rng = np.random.default_rng(seed)
    users = np.sort(rng.choice(split.n_users, size=min(size, split.n_users), replace=False)) + 1
    items = np.sort(rng.choice(split.n_items, size=min(size, split.n_items), replace=False)) + 1
    return users, items


@torch.no_grad()
def encoder_views(model, split, users: np.ndarray, items: np.ndarray) -> dict[str, tuple]:
    """{enc: (user views, views of each user's validation item, views of the probe items)}."""
    device = model.item_table.weight.device
    targets = torch.from_numpy(split.targets("valid")[users - 1]).to(device)
    probe_items = torch.from_numpy(items).to(device)
    views = {}
    if model.graph is not None:
        user_final, item_final = model.graph(*model.graph_tables())
        views["graph"] = (user_final[torch.from_numpy(users).to(device)], item_final[targets], item_final[probe_items])
    if model.sequence is not None:
        # The user's training history, read as the scorer reads it for validation.
        indptr, flat = split.history("valid")
        seqs, lengths = history_windows(indptr, flat, users, model.history_cap, model.sequence.needs_free_slot)
        table = model.item_table.weight
        s = model.sequence(table, torch.from_numpy(seqs).to(device), torch.from_numpy(lengths).to(device))
        views["seq"] = (s.float(), table[targets], table[probe_items])
    return views


def probe_metrics(model, split, users: np.ndarray, items: np.ndarray) -> dict[str, float | None]:
    """The probe fields (module docstring) of `model` now; NaN is written as None (JSON null)."""
    was_training = model.training
    model.eval()  # no dropout: the probe draws no random numbers
    try:
        views = encoder_views(model, split, users, items)
    finally:
        model.train(was_training)
    out = {}
    for enc, (user_view, target_view, item_view) in views.items():
        out[f"probe_{enc}_align"] = float(alignment(user_view, target_view))
        out[f"probe_{enc}_unif_user"] = float(uniformity(user_view))
        out[f"probe_{enc}_unif_item"] = float(uniformity(item_view))
    if len(views) == 2:
        (gu, _, gi), (su, _, si) = views["graph"], views["seq"]
        out["probe_user_cos"] = float(F.cosine_similarity(gu, su, dim=-1).mean())
        out["probe_item_cos"] = float(F.cosine_similarity(gi, si, dim=-1).mean())
        out["probe_item_cka"] = linear_cka(gi, si)
    return {k: (v if math.isfinite(v) else None) for k, v in out.items()}


class Probe(Callback):
    """The trainer callback train.probe adds: the probe fields in every epoch's record."""

    def __init__(self, size: int):
        self.size = size

    def on_train_start(self, trainer) -> None:
        self.model, self.split = trainer.model, trainer.split
        self.users, self.items = probe_sample(trainer.split, self.size)

    def on_epoch_record(self, record: dict) -> None:
        t0 = time.perf_counter()
        record.update(probe_metrics(self.model, self.split, self.users, self.items))
        record["probe_seconds"] = time.perf_counter() - t0
