"""Synthetic interaction data of any size, for scaling measurements and tests.

Item popularity follows Zipf's law over popularity ranks, P(rank r) proportional to r^-s, and user
activity a Pareto law: the share of users with at least L interactions is (L / min_length)^-a, with
the tail index a = m / (m - min_length) that gives the requested mean m = interactions / users.
Both are the shapes real logs have (a few blockbuster items and heavy users, long tails of both).

The planted sequential pattern: every item has one successor, the item one popularity rank below it
(the least popular wraps to the most popular). Each interaction after a user's first repeats the
successor of the previous one with probability `follow`, else it is a fresh draw from the popularity
law. Ranking by popularity knows nothing of which item came last; a sequential model can learn the
successor map and predict the next item with probability about `follow`. Successors one rank apart
keep the realised popularity a power law: an item's count mixes its own and its near neighbours'.

Everything is drawn with whole-array numpy operations (no per-interaction Python), so 10M
interactions take seconds. Every item of the catalogue occurs at least once, as after any k-core
filter: the items the draws miss replace interactions of items that occur more than once, those at
the ends of follow runs first (their successor chains do not break).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from gsau.data.interactions import Interactions
from gsau.errors import ConfigError

MIN_LENGTH = 5  # as after the 5-core filter of the paper's data sets: leave-one-out needs 3


class Synthetic(NamedTuple):
    data: Interactions
    successor: np.ndarray  # int64 [I + 1]: successor[i] is item i's planted next item (entry 0 unused)


def synthesize(n_users: int, n_items: int, n_interactions: int, seed: int = 0, *,
               popularity_exponent: float = 1.0, follow: float = 0.6, min_length: int = MIN_LENGTH,
               name: str = "synth") -> Synthetic:
    """Exactly `n_users` users, `n_items` items (each used) and `n_interactions` interactions."""
    _check(n_users, n_items, n_interactions, popularity_exponent, follow, min_length)
    rng = np.random.default_rng(seed)
    lengths = user_lengths(n_users, n_interactions, min_length)[rng.permutation(n_users)]
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = n_interactions
    # Runs: a fresh popularity draw, then `follow`-continued successors. A user's first item is fresh.
    fresh = rng.random(n) >= follow
    fresh[indptr[:-1]] = True
    starts = np.flatnonzero(fresh)
    zipf = np.cumsum(np.arange(1, n_items + 1, dtype=np.float64) ** -popularity_exponent)
    first_rank = np.searchsorted(zipf, rng.random(len(starts)) * zipf[-1], side="right")
    first_rank = np.minimum(first_rank, n_items - 1)  # guards a draw that rounds onto the total
    run = np.cumsum(fresh) - 1  # which run each interaction belongs to
    rank = first_rank[run] + np.arange(n) - starts[run]
    del run
    np.remainder(rank, n_items, out=rank)
    _cover_every_item(rank, fresh, n_items, rng)
    # Ranks to item ids by a random permutation, so an id says nothing of popularity.
    item_of_rank = rng.permutation(n_items).astype(np.int64) + 1
    successor = np.zeros(n_items + 1, dtype=np.int64)
    successor[item_of_rank] = np.roll(item_of_rank, -1)
    meta = {"source": "synthetic", "min_user_count": min_length, "min_item_count": 1, "dedup": False,
            "raw_interactions": int(n), "has_timestamps": False,
            "synthetic": {"users": n_users, "items": n_items, "interactions": n, "seed": seed,
                          "popularity_exponent": popularity_exponent, "follow": follow,
                          "min_length": min_length}}
    data = Interactions(name, _ids(n_users), _ids(n_items), indptr, item_of_rank[rank], meta)
    return Synthetic(data, successor)


def user_lengths(n_users: int, n_interactions: int, min_length: int = MIN_LENGTH) -> np.ndarray:
    """Sequence lengths from the Pareto law with mean n_interactions / n_users, largest first,
    summing to n_interactions exactly: the law's quantiles at (r + 0.5) / U, with the part above
    min_length scaled to the exact total and rounded by largest remainders."""
    extra_total = n_interactions - min_length * n_users
    if extra_total == 0:
        return np.full(n_users, min_length, dtype=np.int64)
    mean = n_interactions / n_users
    tail = mean / (mean - min_length)
    quantile = (np.arange(n_users) + 0.5) / n_users
    extra = min_length * quantile ** (-1.0 / tail) - min_length
    extra *= extra_total / extra.sum()
    whole = np.floor(extra).astype(np.int64)
    short = extra_total - int(whole.sum())
    whole[np.argsort(whole - extra, kind="stable")[:short]] += 1  # largest remainders get the rest
    return min_length + whole


def _cover_every_item(rank: np.ndarray, fresh: np.ndarray, n_items: int, rng: np.random.Generator) -> None:
    """Give each rank no draw reached one interaction, in place (see the module docstring). An
    interaction may go if its item keeps at least one; those that end a follow run go first (no
    successor chain breaks), others only when those run out (a catalogue nearly as large as the
    interactions). With at least as many interactions as items there are always enough."""
    counts = np.bincount(rank, minlength=n_items)
    missing = np.flatnonzero(counts == 0)
    if not missing.size:
        return
    spare = np.flatnonzero(counts[rank] >= 2)
    follows = ~np.append(fresh[1:], True)[spare]  # a successor follows it: taking it breaks a chain
    tie = rng.random(len(spare))
    order = np.lexsort((tie, follows, rank[spare]))  # by item; run ends first, at random
    spare, follows, tie = spare[order], follows[order], tie[order]
    item = rank[spare]
    keep = np.arange(len(spare)) - np.searchsorted(item, item) < counts[item] - 1  # each item keeps one
    spare, follows, tie = spare[keep], follows[keep], tie[keep]
    rank[spare[np.lexsort((tie, follows))[:len(missing)]]] = rng.permutation(missing)


def _ids(n: int) -> np.ndarray:
    return np.arange(1, n + 1).astype(str)


def _check(n_users, n_items, n_interactions, exponent, follow, min_length) -> None:
    checks = [
        (n_users >= 1 and n_items >= 2, f"need at least 1 user and 2 items, not {n_users} and {n_items}"),
        (min_length >= 3, f"min_length must be at least 3 (leave-one-out needs 3 items a user), not {min_length}"),
        (n_interactions >= min_length * n_users,
         f"{n_interactions} interactions are fewer than {min_length} for each of {n_users} users"),
        (n_interactions >= n_items, f"{n_interactions} interactions cannot use each of {n_items} items"),
        (exponent >= 0, f"popularity exponent must be >= 0, not {exponent}"),
        (0 <= follow < 1, f"follow must be in [0, 1), not {follow}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"synthetic data: {message}")
