"""Learning-rate schedules: values at hand-computed steps, and a run that cannot silently change
its schedule on resume."""

import math
import re

import pytest

from gsau.config import ConfigError, resolve
from gsau.runs import check_same_run
from gsau.trainer import learning_rate


def train(**values):
    return resolve("sasrec", overrides=[f"{k}={v}" for k, v in values.items()]).train


def test_constant_rate_is_the_paper_default():
    t = train(lr=0.002, epochs=10)
    assert t.lr_schedule == "constant"
    assert {learning_rate(t, s, 7) for s in range(70)} == {0.002}


def test_warmup_rises_linearly_then_holds():
    t = train(lr=0.004, epochs=10, warmup_epochs=2)  # 2 epochs of 5 steps = 10 warm-up steps
    assert [learning_rate(t, s, 5) for s in range(10)] == pytest.approx([0.0004 * (s + 1) for s in range(10)])
    assert learning_rate(t, 10, 5) == learning_rate(t, 49, 5) == 0.004


def test_cosine_and_linear_decay_to_zero_at_the_last_step():
    steps, epochs = 8, 5  # 40 steps, no warm-up: the schedule runs over steps 0..39
    cos, lin = train(lr=0.01, epochs=epochs, lr_schedule="cosine"), train(lr=0.01, epochs=epochs, lr_schedule="linear")
    assert learning_rate(cos, 0, steps) == learning_rate(lin, 0, steps) == 0.01
    mid = 20  # done = 20/40
    assert learning_rate(cos, mid, steps) == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert learning_rate(lin, mid, steps) == pytest.approx(0.005)
    assert learning_rate(cos, 39, steps) == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 39 / 40)))
    assert learning_rate(lin, 39, steps) == pytest.approx(0.01 / 40)
    rates = [learning_rate(cos, s, steps) for s in range(40)]
    assert all(a > b for a, b in zip(rates, rates[1:]))


def test_cosine_after_warmup_starts_at_the_peak():
    t = train(lr=0.003, epochs=4, lr_schedule="cosine", warmup_epochs=1)
    assert learning_rate(t, 9, 10) == pytest.approx(0.003)   # last warm-up step
    assert learning_rate(t, 10, 10) == pytest.approx(0.003)  # first decay step: done = 0
    assert learning_rate(t, 25, 10) == pytest.approx(0.0015)  # half way through the 30 decay steps


def test_decay_epochs_hold_the_rate_then_decay_over_the_last_epochs_only():
    t = train(lr=0.01, epochs=10, lr_schedule="linear", decay_epochs=2)  # 50 steps; decay over 40..49
    assert {learning_rate(t, s, 5) for s in range(41)} == {0.01}
    assert learning_rate(t, 45, 5) == pytest.approx(0.005)
    assert learning_rate(t, 49, 5) == pytest.approx(0.001)
    cos = train(lr=0.01, epochs=10, lr_schedule="cosine", decay_epochs=2.5, warmup_epochs=1)
    assert [learning_rate(cos, s, 4) for s in range(4)] == pytest.approx([0.0025, 0.005, 0.0075, 0.01])
    assert {learning_rate(cos, s, 4) for s in range(4, 31)} == {0.01}  # decay starts at step 40 - 10 = 30
    assert learning_rate(cos, 35, 4) == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 0.5)))


@pytest.mark.parametrize("values, message", [
    ({"lr_schedule": "step"}, "lr_schedule must be constant, cosine or linear"),
    ({"decay_epochs": 5}, "decay_epochs needs lr_schedule=cosine or linear"),
    ({"lr_schedule": "linear", "decay_epochs": 8, "warmup_epochs": 3, "epochs": 10},
     "warmup_epochs + decay_epochs must fit within epochs"),
    ({"lr_schedule": "linear", "decay_epochs": -1}, "decay_epochs must be >= 0"),
    ({"warmup_epochs": 10, "epochs": 10}, "warmup_epochs must be in [0, epochs)"),
    ({"warmup_epochs": -1}, "warmup_epochs must be in [0, epochs)"),
])
def test_bad_schedule_settings_are_refused(values, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        train(**values)


def test_resume_may_extend_a_constant_run_but_not_a_decaying_one(tmp_path):
    const = resolve("sasrec").to_dict()
    longer = resolve("sasrec", overrides=["epochs=400"])
    check_same_run(const, longer, tmp_path)  # more epochs at a constant rate: fine
    cos = resolve("sasrec", overrides=["lr_schedule=cosine", "epochs=40"]).to_dict()
    cos_longer = resolve("sasrec", overrides=["lr_schedule=cosine", "epochs=60"])
    with pytest.raises(Exception, match="train.epochs: 40 -> 60"):
        check_same_run(cos, cos_longer, tmp_path)


def test_resume_of_a_checkpoint_older_than_an_option_compares_it_with_the_default(tmp_path):
    older = resolve("sasrec").to_dict()
    del older["train"]["lr_schedule"], older["train"]["warmup_epochs"]  # saved before these existed
    check_same_run(older, resolve("sasrec"), tmp_path)
    with pytest.raises(Exception, match="train.lr_schedule: 'constant' -> 'cosine'"):
        check_same_run(older, resolve("sasrec", overrides=["lr_schedule=cosine"]), tmp_path)
