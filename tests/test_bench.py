"""`gsau bench`: rows measured in interleaved rounds merge into one row per configuration, and one
configuration's measurement takes the trainer's own training step, as many times as it reports."""

import statistics

import numpy as np
import pytest

from gsau import trainer
from gsau.bench import measure_one, merge_rounds
from gsau.config import resolve


def _row(model, step, users_s, rss, **extra):
    return {"model": model, "variant": "gsau", "seconds_per_step": step, "steps_per_epoch": 100,
            "seconds_per_epoch": step * 100, "eval_users_per_second": users_s, "peak_rss_mib": rss, **extra}


def test_rounds_merge_to_medians_per_configuration():
    rounds = [
        [_row("sasrec", 0.10, 900, 800, valid_ndcg=0.015), _row("lightgcn", 0.030, 1500, 600)],
        [_row("sasrec", 0.30, 1000, 850), _row("lightgcn", 0.020, 1200, 650)],  # a slow spell on sasrec
        [_row("sasrec", 0.12, 1100, 820), _row("lightgcn", 0.025, 1300, 640)],
    ]
    sasrec, lightgcn = merge_rounds(rounds)
    assert sasrec["seconds_per_step"] == 0.12 and sasrec["seconds_per_step_all"] == [0.10, 0.30, 0.12]
    assert abs(sasrec["seconds_per_epoch"] - 12.0) < 1e-9
    assert sasrec["eval_users_per_second"] == 1000 and sasrec["peak_rss_mib"] == 850
    assert sasrec["valid_ndcg"] == 0.015 and sasrec["rounds"] == 3  # first round's accuracy kept
    assert lightgcn["seconds_per_step"] == 0.025 and lightgcn["peak_rss_mib"] == 650


def test_rounds_out_of_step_are_refused():
    with pytest.raises(ValueError, match="out of step"):
        merge_rounds([[_row("sasrec", 0.1, 1, 1)], [_row("lightgcn", 0.1, 1, 1)]])
    with pytest.raises(ValueError, match="different numbers"):
        merge_rounds([[_row("sasrec", 0.1, 1, 1)], []])


@pytest.fixture
def tiny_dataset(tmp_path):
    """40 users of 10 random items out of 30, as a sequence file `load_dataset` reads (every user
    and item passes the presets' 5-interaction filter)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.txt"
    path.write_text("".join(f"{u} " + " ".join(map(str, rng.integers(1, 31, 10))) + "\n" for u in range(40)))
    return str(path)


@pytest.fixture
def train_steps(monkeypatch):
    """A list that gains an entry at every call of the trainer's `train_step`, which still runs."""
    calls, step = [], trainer.train_step

    def counted(*args):
        calls.append(1)
        return step(*args)

    monkeypatch.setattr(trainer, "train_step", counted)
    return calls


def test_one_configuration_times_the_trainers_step(tiny_dataset, train_steps, one_thread):
    small = ["batch_size=64", "embedding_dim=8", "inner_size=16"]
    row = measure_one("gsau-rec", tiny_dataset, "packed", steps=2, repeats=3, epochs=1, threads=0, overrides=small)
    # An epoch is as many steps as the longer of the two streams has batches.
    cfg = resolve("gsau-rec", None, small, dataset=tiny_dataset)
    graph, seq = trainer.make_streams(cfg, trainer.prepare(cfg)[0])
    assert row["steps_per_epoch"] == max(len(graph), len(seq)) > 1
    # warm-up 3, then 3 repeats of 2, then one epoch from a fresh model
    assert len(train_steps) == 3 + 3 * 2 + row["steps_per_epoch"]
    assert row["steps_timed"] == 6 and len(row["seconds_per_step_all"]) == 3
    assert row["seconds_per_step"] == statistics.median(row["seconds_per_step_all"])
    assert row["seconds_per_epoch"] == row["seconds_per_step"] * row["steps_per_epoch"]
    assert row["accuracy_epochs"] == 1 and 0 <= row["valid_ndcg@20"] <= 1
