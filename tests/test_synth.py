"""`gsau data synth`: exact sizes, power-law shapes, the planted successor pattern, and a dataset
every command takes like an imported one (sasrec learns the pattern from it)."""

import numpy as np
import pytest

from gsau.cli import main
from gsau.config import resolve
from gsau.data import LeaveOneOut, load_dataset
from gsau.data.synth import synthesize, user_lengths
from gsau.trainer import Trainer


def log_slope(x, y) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


@pytest.fixture(scope="module")
def medium():
    return synthesize(20_000, 5_000, 300_000, seed=7)


def test_sizes_are_exact_and_every_item_occurs(medium):
    data = medium.data
    assert (data.n_users, data.n_items, data.n_interactions) == (20_000, 5_000, 300_000)
    assert data.indptr[-1] == 300_000 and data.lengths.min() >= 5
    assert set(np.unique(data.items)) == set(range(1, 5_001))
    assert data.user_ids[:3].tolist() == ["1", "2", "3"] and data.item_ids[-1] == "5000"


def test_item_popularity_follows_zipf(medium):
    counts = np.sort(np.bincount(medium.data.items)[1:])[::-1]
    # Over the head and body (the top ranks are thinned by follow runs, the far tail by sampling).
    ranks = np.arange(1, len(counts) + 1)
    window = slice(20, 1_000)
    assert log_slope(ranks[window], counts[window]) == pytest.approx(-1.0, abs=0.1)
    exponent = synthesize(20_000, 5_000, 300_000, seed=7, popularity_exponent=0.6).data
    flatter = np.sort(np.bincount(exponent.items)[1:])[::-1]
    assert log_slope(ranks[window], flatter[window]) == pytest.approx(-0.6, abs=0.1)


def test_user_activity_follows_a_pareto_law_with_the_requested_mean(medium):
    lengths = medium.data.lengths
    mean = 300_000 / 20_000
    tail = mean / (mean - 5)  # 1.5
    # Share of users with at least L interactions against L: slope -tail.
    at_least = np.array([(lengths >= x).mean() for x in (10, 20, 40, 80, 160)])
    assert log_slope([10, 20, 40, 80, 160], at_least) == pytest.approx(-tail, abs=0.1)
    exact = user_lengths(7, 40)
    assert exact.sum() == 40 and exact.min() == 5 and (np.diff(exact) <= 0).all()
    assert user_lengths(4, 20).tolist() == [5, 5, 5, 5]


def test_the_planted_successor_follows_at_the_requested_rate(medium):
    data, successor = medium
    items = data.items
    within = np.ones(len(items) - 1, dtype=bool)
    within[data.indptr[1:-1] - 1] = False  # pairs that cross from one user to the next
    followed = items[1:][within] == successor[items[:-1][within]]
    assert followed.mean() == pytest.approx(0.6, abs=0.03)
    assert sorted(successor[1:]) == list(range(1, 5_001))  # one successor each: a permutation
    none = synthesize(20_000, 5_000, 300_000, seed=7, follow=0.0)
    chance = none.data.items[1:][within] == none.successor[none.data.items[:-1][within]]
    assert chance.mean() < 0.02


def test_a_catalogue_as_large_as_the_interactions_uses_each_item_once():
    data = synthesize(100, 1_000, 1_000, seed=0).data
    assert sorted(data.items) == list(range(1, 1_001))


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = (synthesize(300, 200, 4_000, seed=s).data for s in (1, 1, 2))
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.indptr, b.indptr)
    assert not np.array_equal(a.items, c.items)


def test_cli_writes_a_dataset_every_command_reads(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["data", "synth", "--users", "300", "--items", "200", "--interactions", "4000",
                 "--out", str(out), "--seed", "1"]) == 0
    assert "300 users, 200 items, 4000 interactions" in capsys.readouterr().out
    loaded = load_dataset(out)
    np.testing.assert_array_equal(loaded.items, synthesize(300, 200, 4_000, seed=1).data.items)
    assert loaded.meta["synthetic"]["seed"] == 1
    assert main(["data", "stats", str(out), "--json"]) == 0
    assert '"interactions": 4000' in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--users", "100", "--items", "50", "--interactions", "300"], "fewer than 5 for each of 100 users"),
    (["--users", "10", "--items", "500", "--interactions", "100"], "cannot use each of 500 items"),
    (["--users", "10", "--items", "50", "--interactions", "100", "--follow", "1"], "follow must be in [0, 1)"),
])
def test_cli_refuses_impossible_sizes_in_one_line(tmp_path, capsys, args, message):
    assert main(["data", "synth", *args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def planted_run(tmp_path, model: str, *sets: str) -> tuple[dict, float, float]:
    """(test metrics, popularity's recall@10, the oracle's hit rate) of `model` trained 4 epochs on a
    small synthetic set with a planted successor pattern."""
    synthetic = synthesize(400, 300, 8_000, seed=3)
    synthetic.data.save(tmp_path / "data")
    split = LeaveOneOut.from_interactions(synthetic.data)
    # Popularity: the 10 most frequent training items for everyone.
    top = np.argsort(-np.bincount(split.train_items, minlength=301)[1:])[:10] + 1
    popularity = np.isin(split.targets("test"), top).mean()
    # The successor of each user's last known item is the test item about 60% of the time.
    oracle = (synthetic.successor[split.targets("valid")] == split.targets("test")).mean()
    cfg = resolve(model, None, ["batch_size=128", "epochs=4", "patience=100", "ks=[10]", "metric=ndcg@10",
                                "n_layers=1", "max_len=10", "hidden_dropout=0.1", "attn_dropout=0.1",
                                "lr=0.005", *sets, f"dataset={tmp_path / 'data'}"])
    return Trainer(cfg, tmp_path / "run", progress=False, echo=lambda line: None).run()["test"], popularity, oracle


@pytest.mark.usefixtures("one_thread")
def test_sasrec_learns_the_planted_pattern(tmp_path):
    test, popularity, oracle = planted_run(tmp_path, "sasrec")
    assert test["recall@10"] >= popularity + 0.2, (test, popularity)
    assert test["mrr@10"] >= 0.85 * oracle, (test, oracle)
