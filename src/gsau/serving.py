"""Recommendations from a trained run, in the dataset's own ids."""

from __future__ import annotations

import numpy as np
import torch

from gsau.errors import GsauError


class Recommendations:
    def __init__(self, cfg, split, model):
        self.cfg, self.split, self.model = cfg, split, model
        self.data = split.data

    @classmethod
    def from_run(cls, run_dir) -> "Recommendations":
        from gsau.trainer import load_run
        return cls(*load_run(run_dir))

    def scores(self, users: np.ndarray) -> torch.Tensor:
        """[B, I + 1] scores given each user's whole known history (all their interactions)."""
        return self.model.score_histories(users, self.data.indptr, self.data.items)

    def top_k(self, user_id: str, k: int = 10, exclude_seen: bool = False) -> list[tuple[str, float]]:
        try:
            user = self.data.user_index(user_id)
        except KeyError as e:
            raise GsauError(str(e.args[0])) from None
        scores = self.scores(np.array([user]))[0]
        scores[0] = -torch.inf  # padding
        if exclude_seen:
            scores[torch.from_numpy(self.data.sequence(user))] = -torch.inf
        k = min(k, int(torch.isfinite(scores).sum()))
        values, items = torch.topk(scores, k)
        return [(str(self.data.item_ids[i - 1]), float(v)) for i, v in zip(items.tolist(), values)]
