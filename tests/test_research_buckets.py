"""Test metrics by user history length and target popularity (issue #18, question 2): counts add
up to the test users, a constant metric has a zero-width interval, a small case by hand, and the
per-user record of a real run."""

import numpy as np
import pytest
from conftest import random_interactions

from gsau.config import resolve
from gsau.data import LeaveOneOut
from gsau.errors import GsauError
from gsau.research import buckets
from gsau.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def record(ranks, lengths, target_counts, cuts=(4, 2)):
    return {"stage": "test", "mask_history": False, "rank": list(ranks), "history_length": list(lengths),
            "target_train_count": list(target_counts), "popularity_cuts": {"head": cuts[0], "torso": cuts[1]}}


# Six users, by hand: lengths 5, 6, 7, 9, 30, 13 -> buckets <=5, 6-7, 6-7, 8-12, >25, 13-25;
# target training counts 9, 4, 3, 2, 1, 5 with head >= 4, torso >= 2 -> head, head, torso, torso, tail, head;
# ranks 1, 20, 3, 50, 2, 9 -> recall@10 1, 0, 1, 0, 1, 1.
SMALL = record([1, 20, 3, 50, 2, 9], [5, 6, 7, 9, 30, 13], [9, 4, 3, 2, 1, 5])


def by_bucket(rows):
    return {(r["kind"], r["bucket"]): r for r in rows}


def test_a_small_case_by_hand():
    rows = by_bucket(buckets.bucket_table([SMALL], "recall@10", resamples=200))
    expected = {("length", "<=5"): (1, 1.0), ("length", "6-7"): (2, 0.5), ("length", "8-12"): (1, 0.0),
                ("length", "13-25"): (1, 1.0), ("length", ">25"): (1, 1.0),
                ("popularity", "head"): (3, 2 / 3), ("popularity", "torso"): (2, 0.5), ("popularity", "tail"): (1, 1.0),
                ("all", "all"): (6, 4 / 6)}
    assert {k: (r["users"], pytest.approx(r["mean"])) for k, r in rows.items()} == expected
    # ndcg@10 of the 6-7 bucket: ranks 20 (miss) and 3 -> (0 + 1/log2(4)) / 2
    ndcg = by_bucket(buckets.bucket_table([SMALL], "ndcg@10", resamples=10))
    assert ndcg[("length", "6-7")]["mean"] == pytest.approx(0.25)
    # The interval of a two-user bucket of 0 and 1 lies within [0, 1] and around its mean.
    low, high = rows[("length", "6-7")]["low"], rows[("length", "6-7")]["high"]
    assert 0.0 <= low < 0.5 < high <= 1.0


def test_counts_add_up_to_the_test_users():
    rng = np.random.default_rng(0)
    n = 500
    rec = record(rng.integers(1, 200, n), rng.integers(3, 60, n), rng.integers(0, 40, n), cuts=(20, 8))
    rows = buckets.bucket_table([rec], "recall@10", resamples=50)
    for kind in ("length", "popularity"):
        assert sum(r["users"] for r in rows if r["kind"] == kind) == n
    assert rows[-1] == {**rows[-1], "kind": "all", "users": n}


def test_the_interval_of_a_constant_metric_has_zero_width():
    rec = record([3] * 40, list(range(5, 45)), [7] * 40)  # every user hits at 10
    for row in buckets.bucket_table([rec], "recall@10", resamples=100):
        if row["users"]:
            assert row["low"] == row["high"] == row["mean"] == 1.0
    # A model against itself: every paired difference 0.
    for row in buckets.bucket_table([SMALL], "recall@10", against=[SMALL], resamples=100):
        if row["users"]:
            assert row["low"] == row["high"] == row["difference"] == 0.0


def test_bootstrap_is_seeded():
    values = np.random.default_rng(1).random(300)
    assert buckets.bootstrap_interval(values, (0, 1)) == buckets.bootstrap_interval(values, (0, 1))
    assert buckets.bootstrap_interval(values, (0, 1)) != buckets.bootstrap_interval(values, (0, 2))
    low, high = buckets.bootstrap_interval(values, 0)
    assert low < values.mean() < high and high - low < 0.1


def test_popularity_cuts_follow_the_share_of_training_interactions():
    # counts 6, 3, 2, 1 of 12: 6 reaches 1/2 (head), 3 reaches 3/4 (torso), the rest tail.
    assert buckets.popularity_cuts(np.array([2, 6, 1, 3])) == (6, 3)
    # Equal counts share a bucket: 4, 4, 2, 2 -> the 4s reach 2/3 together: head, an empty torso, tail.
    assert buckets.popularity_cuts(np.array([4, 2, 4, 2])) == (4, 4)


def test_runs_compared_must_share_their_users():
    other = record([1] * 6, [5, 6, 7, 9, 30, 14], [9, 4, 3, 2, 1, 5])
    with pytest.raises(GsauError, match="must share their users"):
        buckets.bucket_table([SMALL], "recall@10", against=[other])
    masked = dict(SMALL, mask_history=True)  # the same users, ranked without their earlier items
    with pytest.raises(GsauError, match="must be ranked alike: mask_history False against True"):
        buckets.bucket_table([SMALL], "recall@10", against=[masked])
    with pytest.raises(GsauError, match="ranked alike: stage test against valid"):
        buckets.bucket_table([SMALL, dict(SMALL, stage="valid")], "recall@10")
    with pytest.raises(GsauError, match="unknown metric 'hits@10'"):
        buckets.bucket_table([SMALL], "hits@10")


def test_a_runs_record_matches_its_test_metrics(dataset_dir, tmp_path):
    data = random_interactions(0, 40, 30, 14, min_length=4, distinct=True, name="bk")
    cfg = resolve("sasrec", None, ["batch_size=32", "epochs=1", "embedding_dim=8", "inner_size=16", "max_len=8",
                                   "n_layers=1", f"dataset={dataset_dir(data)}"])
    report = Trainer(cfg, tmp_path / "run", progress=False, echo=lambda line: None).run()
    assert buckets.read_record(tmp_path / "run") is None
    rec = buckets.write_record(tmp_path / "run")
    assert buckets.read_record(tmp_path / "run") == rec
    split = LeaveOneOut.from_interactions(data)
    assert len(rec["rank"]) == split.n_users
    assert rec["history_length"] == data.lengths.tolist()
    counts = np.bincount(split.train_items, minlength=split.n_items + 1)
    assert rec["target_train_count"] == counts[split.targets("test")].tolist()
    rows = buckets.bucket_table([rec], "recall@10", resamples=20)
    assert rows[-1]["mean"] == pytest.approx(report["test"]["recall@10"])
    assert sum(r["users"] for r in rows if r["kind"] == "length") == split.n_users


def test_the_record_holds_the_masked_rank_and_which_targets_repeat(dataset_dir, tmp_path):
    """Items drawn with repeats: the repeat flag equals a loop over each user's earlier items, the
    masked rank equals the masked protocol's metrics and never falls behind the unmasked one."""
    from gsau.evaluation import evaluate
    from gsau.trainer import load_run
    data = random_interactions(1, 40, 12, 14, min_length=4, name="rp")
    cfg = resolve("sasrec", None, ["batch_size=32", "epochs=1", "embedding_dim=8", "inner_size=16", "max_len=8",
                                   "n_layers=1", f"dataset={dataset_dir(data)}"])
    Trainer(cfg, tmp_path / "run", progress=False, echo=lambda line: None).run()
    rec = buckets.write_record(tmp_path / "run")
    split = LeaveOneOut.from_interactions(data)
    by_hand = [bool(data.items[data.indptr[u + 1] - 1] in data.items[data.indptr[u]: data.indptr[u + 1] - 1])
               for u in range(split.n_users)]
    assert rec["target_repeats"] == by_hand and 0 < sum(by_hand) < split.n_users
    assert all(m <= r for m, r in zip(rec["masked_rank"], rec["rank"]))
    assert any(m < r for m, r in zip(rec["masked_rank"], rec["rank"]))
    _, split, model = load_run(tmp_path / "run")
    masked = evaluate(model, split, "test", [10], mask_history=True)
    assert buckets.per_user({"rank": rec["masked_rank"]}, "recall@10").mean() == pytest.approx(masked["recall@10"])


def test_the_record_counts_head_and_tail_items_in_each_users_top_10(dataset_dir, tmp_path):
    """The top-10 counts are the popularity buckets of the items the run ranks first (user_top_items,
    tested against each user's plain ranking), cut where the targets' are; and a record written
    before they existed gets them from the best weights with every other field untouched."""
    from gsau.evaluation import user_top_items
    from gsau.trainer import load_run
    data = random_interactions(2, 40, 30, 14, min_length=4, distinct=True, name="tp")
    cfg = resolve("sasrec", None, ["batch_size=32", "epochs=1", "embedding_dim=8", "inner_size=16", "max_len=8",
                                   "n_layers=1", f"dataset={dataset_dir(data)}"])
    Trainer(cfg, tmp_path / "run", progress=False, echo=lambda line: None).run()
    rec = buckets.write_record(tmp_path / "run")
    _, split, model = load_run(tmp_path / "run")
    counts = np.bincount(split.train_items, minlength=split.n_items + 1)
    top = user_top_items(model, split, "test", 10)
    cuts = rec["popularity_cuts"]
    top_counts = [[int(counts[i]) for i in row] for row in top]
    assert rec["top_popularity"]["k"] == 10
    assert rec["top_popularity"]["head"] == [sum(c >= cuts["head"] for c in row) for row in top_counts]
    assert rec["top_popularity"]["tail"] == [sum(c < cuts["torso"] for c in row) for row in top_counts]
    assert 0 < sum(rec["top_popularity"]["head"]) and all(h + t <= 10 for h, t in zip(
        rec["top_popularity"]["head"], rec["top_popularity"]["tail"]))
    # An older record: the field is added from the weights, nothing else moves; a second call does nothing.
    old = {k: v for k, v in rec.items() if k != "top_popularity"}
    buckets._save(tmp_path / "run", old)
    assert buckets.add_top_popularity(tmp_path / "run") is True
    assert buckets.read_record(tmp_path / "run") == rec
    assert buckets.add_top_popularity(tmp_path / "run") is False


def test_the_overall_row_alone_is_the_tables_last_row():
    rng = np.random.default_rng(2)
    a = record(rng.integers(1, 30, 80), rng.integers(5, 40, 80), rng.integers(0, 9, 80))
    b = {**a, "rank": rng.integers(1, 30, 80).tolist()}
    assert buckets.bucket_table([a], against=[b], overall_only=True, resamples=200) == \
        buckets.bucket_table([a], against=[b], resamples=200)[-1:]


def test_a_report_can_leave_the_overall_rows_star_to_its_seed_level_test():
    """Every user a hit against every user a miss: each interval excludes 0. The plain table stars
    every row; the research report's (star_all=False) stars the buckets but not "all", whose
    verdict question 1 gives with the seeds' spread."""
    hits = record([1] * 6, SMALL["history_length"], SMALL["target_train_count"])
    misses = {**hits, "rank": [50] * 6}
    rows = buckets.bucket_table([hits], against=[misses], resamples=50)
    plain, report = buckets.markdown(rows, "R@10", ("a", "b")), buckets.markdown(rows, "R@10", ("a", "b"), star_all=False)
    assert "| all | all | 6 | 1.0000 | 0.0000 | +1.0000 [+1.0000, +1.0000] * |" in plain
    assert "| all | all | 6 | 1.0000 | 0.0000 | +1.0000 [+1.0000, +1.0000] |" in report
    assert "| popularity | head | 3 | 1.0000 | 0.0000 | +1.0000 [+1.0000, +1.0000] * |" in report
