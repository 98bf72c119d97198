"""Where a model wins: test metrics by user history length and by target-item popularity, with
counts and seeded bootstrap confidence intervals (issue #18, question 2).

A run's per-user record, RUN/ranks.json.gz, holds what the buckets need and nothing that needs
the model again: each test user's pessimistic rank under the run's own protocol and under history
masking, whether their test item repeats one of their earlier items, their number of
interactions, how often their test item occurs in the training data, and how many of the 10
items the run ranks first for them are head and tail items (records written before the masked
rank, the repeat flag or the top 10 existed lack those). The report reads only
these records, so it can be rebuilt on any machine.

Buckets:
    history length  the user's interactions in the data: <=5, 6-7, 8-12, 13-25, >25
    popularity      the target's training count: head, torso, tail, cut where the items sorted by
                    training count (most first) pass 1/3 and 2/3 of all training interactions;
                    items of equal count always share a bucket

Intervals: 95% percentile bootstrap over the bucket's users (1000 resamples, seeded per bucket),
of the mean, or of the mean paired difference when two models are compared on the same users.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import torch

from gsau.atomic import write_atomic
from gsau.errors import GsauError
from gsau.evaluation import user_ranks, user_top_items
from gsau.metrics import metrics_from_ranks
from gsau.reproduce.report import markdown_table
from gsau.trainer import load_run

RECORD = "ranks.json.gz"
LENGTH_BUCKETS = (("<=5", 0, 5), ("6-7", 6, 7), ("8-12", 8, 12), ("13-25", 13, 25), (">25", 26, None))
POPULARITY_BUCKETS = ("head", "torso", "tail")
# Every row of a bucket table, in order; a row's place seeds its bootstrap, so a row has the same
# interval whether or not the others are computed.
GROUPS = ([("length", label) for label, _, _ in LENGTH_BUCKETS] + [("popularity", b) for b in POPULARITY_BUCKETS]
          + [("all", "all")])
RESAMPLES = 1000
TOP_K = 10  # the recommendation list whose popularity the record keeps
LEVEL = 0.95


def popularity_cuts(train_counts: np.ndarray) -> tuple[int, int]:
    """(head_min, torso_min): training counts from which an item is head, torso (else tail)."""
    counts = np.sort(np.asarray(train_counts))[::-1]
    share = np.cumsum(counts) / max(int(counts.sum()), 1)
    head_min, torso_min = (int(counts[min(np.searchsorted(share, q), len(counts) - 1)]) for q in (1 / 3, 2 / 3))
    return head_min, torso_min


def target_repeats(split, stage: str = "test") -> np.ndarray:
    """Per user (1..U): whether the `stage` target is an item the user had before it (a repeat visit)."""
    indptr, flat = split.history(stage)
    lengths = np.diff(indptr)
    same = flat == np.repeat(split.targets(stage), lengths)
    return np.bincount(np.repeat(np.arange(split.n_users), lengths), weights=same, minlength=split.n_users) > 0


def top_popularity(model, split, stage: str = "test", k: int = TOP_K) -> dict:
    """How popular what the run recommends is: per user, how many of the k items it ranks first
    (under its own protocol) are head and tail items, cut as the targets are (popularity_cuts)."""
    train_counts = np.bincount(split.train_items, minlength=split.n_items + 1)[1:]
    head_min, torso_min = popularity_cuts(train_counts)
    counts = train_counts[user_top_items(model, split, stage, k) - 1]
    return {"k": k, "head": (counts >= head_min).sum(1).tolist(), "tail": (counts < torso_min).sum(1).tolist()}


def user_record(model, split, stage: str = "test") -> dict:
    """The per-user record of a loaded model (users 1..U in order): the rank under the run's own
    protocol and under history masking (earlier items removed from the ranking, the target kept),
    and whether the target repeats an earlier item."""
    train_counts = np.bincount(split.train_items, minlength=split.n_items + 1)[1:]
    targets = split.targets(stage)
    head_min, torso_min = popularity_cuts(train_counts)
    rank = user_ranks(model, split, stage).tolist()
    return {"stage": stage, "mask_history": bool(model.cfg.mask_history), "rank": rank,
            "masked_rank": rank if model.cfg.mask_history else user_ranks(model, split, stage, mask_history=True).tolist(),
            "target_repeats": target_repeats(split, stage).tolist(),
            "history_length": split.data.lengths.tolist(),
            "target_train_count": train_counts[targets - 1].tolist(),
            "popularity_cuts": {"head": head_min, "torso": torso_min},
            "top_popularity": top_popularity(model, split, stage)}


def compute_record(run_dir: str | Path) -> dict:
    """A finished run's per-user record, from its best weights."""
    _, split, model = load_run(run_dir)
    return user_record(model, split)


def write_record(run_dir: str | Path) -> dict:
    """Compute a finished run's record and write it as RUN/ranks.json.gz (`gsau study` does, as
    `gsau reproduce` writes masked.json)."""
    record = compute_record(run_dir)
    _save(run_dir, record)
    return record


def _save(run_dir: str | Path, record: dict) -> None:
    path = Path(run_dir) / RECORD
    try:
        write_atomic(path, lambda f: f.write(gzip.compress(json.dumps(record).encode(), mtime=0)))
    except OSError as e:
        raise GsauError(f"{path}: cannot write ({e.strerror or e})") from None


def add_top_popularity(run_dir: str | Path) -> bool:
    """Give a saved record written before the top 10 was kept its top_popularity, from the run's best
    weights, leaving every other field as it is; False when it has one already (or no record)."""
    record = read_record(run_dir)
    if record is None or "top_popularity" in record:
        return False
    _, split, model = load_run(run_dir)
    record["top_popularity"] = top_popularity(model, split, record["stage"])
    _save(run_dir, record)
    return True


def read_record(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / RECORD
    if not path.exists():
        return None
    try:
        return json.loads(gzip.decompress(path.read_bytes()))
    except (OSError, ValueError) as e:
        raise GsauError(f"{path}: unreadable ({e})") from None


def record_of(run_dir: str | Path) -> dict:
    """A run's per-user record: the saved one, else computed from its weights (not saved: a run
    directory is written only by training and the study)."""
    return read_record(run_dir) or compute_record(run_dir)


def per_user(record: dict, metric: str) -> np.ndarray:
    """Each user's value of `metric` (e.g. "recall@10") from their rank."""
    k = metric.partition("@")[2]
    values = metrics_from_ranks(torch.tensor(record["rank"]), [int(k)]) if k.isdigit() else {}
    if metric not in values:
        raise GsauError(f"unknown metric {metric!r}; use recall@K, ndcg@K or mrr@K")
    return values[metric].numpy()


def bucket_labels(record: dict) -> dict[str, np.ndarray]:
    """{"length": label per user, "popularity": label per user}."""
    lengths = np.asarray(record["history_length"])
    length = np.empty(len(lengths), dtype=object)
    for label, low, high in LENGTH_BUCKETS:
        length[(lengths >= low) & (lengths <= (high if high is not None else np.inf))] = label
    counts = np.asarray(record["target_train_count"])
    cuts = record["popularity_cuts"]
    popularity = np.where(counts >= cuts["head"], "head", np.where(counts >= cuts["torso"], "torso", "tail"))
    return {"length": length, "popularity": popularity.astype(object)}


def bootstrap_interval(values: np.ndarray, seed, resamples: int = RESAMPLES, level: float = LEVEL):
    """Percentile bootstrap interval (low, high) of the mean of `values`; (nan, nan) when empty."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    step = max(1, 2_000_000 // n)  # resamples per draw, so one draw holds ~2M indices
    for start in range(0, resamples, step):
        rows = min(step, resamples - start)
        means[start: start + rows] = values[rng.integers(0, n, size=(rows, n))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _same_users(records: list[dict]) -> None:
    first = records[0]
    for r in records[1:]:
        if r["history_length"] != first["history_length"] or r["target_train_count"] != first["target_train_count"]:
            raise GsauError("runs compared by bucket must share their users and test items (same dataset and split)")
        for key in ("stage", "mask_history"):  # the same users ranked under another protocol
            if r.get(key) != first.get(key):
                raise GsauError(f"runs compared by bucket must be ranked alike: {key} {first.get(key)} against {r.get(key)}")


def mean_over_runs(records: list[dict], metric: str) -> np.ndarray:
    """Per-user metric averaged over runs (seeds) of one model on one dataset."""
    _same_users(records)
    return np.mean([per_user(r, metric) for r in records], axis=0)


def bucket_table(records: list[dict], metric: str = "recall@10", against: list[dict] | None = None,
                 seed: int = 0, resamples: int = RESAMPLES, overall_only: bool = False) -> list[dict]:
    """One row per bucket (both kinds, then "all"; only "all" with `overall_only`): {"kind",
    "bucket", "users", "mean", "low", "high"}; with `against` (the other model's runs on the same
    users) also "other" and "difference" = mean - other, the interval that of the paired difference."""
    mine = mean_over_runs(records, metric)
    other = None
    if against:
        _same_users([records[0], *against])
        other = mean_over_runs(against, metric)
    labels = bucket_labels(records[0])
    rows = []
    for kind, bucket in GROUPS[-1:] if overall_only else GROUPS:
        where = np.ones(len(mine), dtype=bool) if kind == "all" else labels[kind] == bucket
        values = mine[where] if other is None else mine[where] - other[where]
        low, high = bootstrap_interval(values, (seed, GROUPS.index((kind, bucket))), resamples)
        row = {"kind": kind, "bucket": bucket, "users": int(where.sum()),
               "mean": float(mine[where].mean()) if where.any() else float("nan"), "low": low, "high": high}
        if other is not None:
            row["other"] = float(other[where].mean()) if where.any() else float("nan")
            row["difference"] = float(values.mean()) if where.any() else float("nan")
        rows.append(row)
    return rows


def excludes_zero(row: dict) -> bool:
    """Whether a row's interval excludes 0 (for a paired row: the difference is significant)."""
    return not math.isnan(row["low"]) and (row["low"] > 0 or row["high"] < 0)


def markdown(rows: list[dict], metric: str, names: tuple[str, ...] = ("mean",), star_all: bool = True) -> str:
    """A bucket table as markdown: one model's means and interval, or with two names the paired
    difference and its interval (* where it excludes 0; not on the "all" row with `star_all`
    False, for a report that judges the overall difference elsewhere with the seeds' spread)."""
    paired = "difference" in rows[0]
    header = ["kind", "bucket", "users", f"{names[0]} {metric}"]
    header += [f"{names[1]} {metric}", "difference [95% CI]"] if paired else ["95% CI"]
    lines = []
    for row in rows:
        cells = [row["kind"], row["bucket"], str(row["users"])]
        if row["users"] == 0:
            lines.append(cells + ["—"] * (len(header) - 3))
            continue
        interval = f"[{row['low']:+.4f}, {row['high']:+.4f}]" if paired else f"[{row['low']:.4f}, {row['high']:.4f}]"
        if paired:
            cells += [f"{row['mean']:.4f}", f"{row['other']:.4f}",
                      f"{row['difference']:+.4f} {interval}"
                      + (" *" if excludes_zero(row) and (star_all or row["kind"] != "all") else "")]
        else:
            cells += [f"{row['mean']:.4f}", interval]
        lines.append(cells)
    return markdown_table(header, lines)
