"""Leave-one-out split by time, as in the paper.

Per user: the last interaction is the test target, the one before it the validation target,
the rest is training. The model's input for validation is the training items; for test, the
training items plus the validation item.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gsau.data.interactions import Interactions, drop_short_users
from gsau.errors import DataError

STAGES = ("valid", "test")


@dataclass
class LeaveOneOut:
    data: Interactions
    train_indptr: np.ndarray  # int64 [U + 1]: user u's training items are train_items[p[u-1]:p[u]]
    train_items: np.ndarray
    valid: np.ndarray  # int64 [U + 1], index by user id; entry 0 unused
    test: np.ndarray

    @classmethod
    def from_interactions(cls, data: Interactions, drop_short: bool = False) -> "LeaveOneOut":
        lengths = data.lengths
        short = int((lengths < 3).sum())
        if short:
            if not drop_short:
                # str(): under numpy 2 the repr of a numpy string is "np.str_('2')", not "'2'".
                example = str(data.user_ids[np.flatnonzero(lengths < 3)[0]])
                raise DataError(data.meta.get("source", data.name),
                                f"{short} users have fewer than 3 interactions (e.g. user {example!r}); "
                                "leave-one-out needs train, validation and test items. "
                                "Raise the k-core threshold or pass --drop-short to drop them")
            data = drop_short_users(data, 3)
        ends = data.indptr[1:]
        keep = np.ones(data.n_interactions, dtype=bool)
        keep[ends - 1] = False
        keep[ends - 2] = False
        train_indptr = data.indptr - 2 * np.arange(data.n_users + 1)
        pad = np.zeros(1, dtype=np.int64)
        return cls(data, train_indptr, data.items[keep],
                   np.concatenate([pad, data.items[ends - 2]]), np.concatenate([pad, data.items[ends - 1]]))

    @property
    def n_users(self) -> int:
        return self.data.n_users

    @property
    def n_items(self) -> int:
        return self.data.n_items

    def targets(self, stage: str) -> np.ndarray:
        """Held-out item of every user 1..U for `stage`."""
        return (self.valid if stage == "valid" else self.test)[1:]

    def history(self, stage: str) -> tuple[np.ndarray, np.ndarray]:
        """CSR (indptr, items) of each user's known items before the `stage` target."""
        if stage == "valid":
            return self.train_indptr, self.train_items
        if stage != "test":
            raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
        # Training items plus the validation item: everything but the last interaction.
        keep = np.ones(self.data.n_interactions, dtype=bool)
        keep[self.data.indptr[1:] - 1] = False
        return self.data.indptr - np.arange(self.n_users + 1), self.data.items[keep]

    def train_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(user, item) of every training interaction: the graph's edges and its training stream."""
        users = np.repeat(np.arange(1, self.n_users + 1), np.diff(self.train_indptr))
        return users, self.train_items

    def sizes(self) -> dict:
        return {"train": int(len(self.train_items)), "valid": self.n_users, "test": self.n_users}
