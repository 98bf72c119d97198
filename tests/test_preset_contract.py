"""The contract every preset keeps, whatever its encoders and objectives (in the manner of
benfred/implicit's shared behaviour tests): one module, parametrised over the preset registry, so a
new preset is held to all of it without being named here.

1. A run resumed from its checkpoint ends bit for bit where the uninterrupted run ends.
2. A saved run, loaded and evaluated, reproduces the metrics it reported.
3. A user's scores do not depend on which users share the batch (nor do its ranks on the
   evaluation batch size).
4. Scores are finite for every user, including one with a single known item.
5. The fast paths equal the reference paths: shortcuts=true and false give the same losses and
   gradients, and the sequence layouts (packed, prefix, padded) the same loss.
"""

import json
import warnings
from typing import NamedTuple

import numpy as np
import pytest
import torch
from conftest import interactions, random_interactions, random_sequences_split, threads

from gsau import checkpoint
from gsau.config import preset_names, resolve
from gsau.errors import CollapseWarning
from gsau.evaluation import evaluate, user_ranks
from gsau.model import Recommender
from gsau.runs import resumed_config
from gsau.trainer import Trainer, build_model, load_run, make_streams

PRESETS = preset_names()
SEQUENTIAL = [p for p in PRESETS if resolve(p).net.sequence_encoder]

# Tiny models; each preset keeps its own dropout, so resuming must also restore the RNG states.
# patience above the run's length: early stopping must not cut either run short.
SMALL = ["embedding_dim=16", "inner_size=16", "n_layers=2", "n_heads=2", "max_len=8", "batch_size=16",
         "eval_batch_size=64", "patience=100", "seed=7"]
TIMING = {"seconds", "train_seconds"}  # wall-clock fields of a log line (and of a checkpoint's history)
REPORT_TIMING = {"train_seconds", "seconds_per_epoch"}  # and of metrics.json
N_ITEMS = 30


@pytest.fixture(scope="module")
def data(dataset_dir):
    """40 users of 3 to 10 items: a 3-item user has one training item, the shortest history there
    is. The last item is a cold one, only ever a test target: a node without edges in the graph."""
    base = random_interactions(0, 40, N_ITEMS - 1, 11, min_length=3)
    seqs = [base.sequence(u).copy() for u in range(1, base.n_users + 1)]
    seqs[0][-1] = N_ITEMS
    return dataset_dir(interactions(seqs, N_ITEMS, name="contract"))


@pytest.fixture(scope="module", params=PRESETS)
def trained(request, data, tmp_path_factory):
    """Per preset: run A trains 2 epochs in one go; run B trains 1 epoch, then is resumed to 2."""
    preset = request.param
    root = tmp_path_factory.mktemp(preset)

    def train(epochs, out, resume=False):
        cfg = resumed_config(out, {"epochs": epochs}) if resume else resolve(preset, None, SMALL, dataset=str(data),
                                                                              epochs=epochs)
        Trainer(cfg, out, progress=False, echo=lambda line: None).run(resume=resume)

    # One thread: bit-for-bit comparisons need the same reduction order in every run.
    with threads(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseWarning)  # 2 epochs of a tiny model: not the point here
        train(2, root / "A")
        train(1, root / "B")
        train(2, root / "B", resume=True)
    return root / "A", root / "B"


def read_log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def untimed(record: dict, timing=TIMING) -> dict:
    return {k: v for k, v in record.items() if k not in timing}


def assert_identical(a, b, where="") -> None:
    """Nested dicts, lists and tensors equal bit for bit (tensors: same dtype, shape and values)."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_identical(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{k}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, where


# -- 1. resume ----------------------------------------------------------------------------------

def test_resumed_run_equals_the_uninterrupted_one(trained):
    a, b = trained
    log_a, log_b = read_log(a), read_log(b)
    assert [h["epoch"] for h in log_a] == [h["epoch"] for h in log_b] == [1, 2]
    for ha, hb in zip(log_a, log_b):
        assert ha.keys() == hb.keys()
        assert untimed(ha) == untimed(hb)
    report_a, report_b = (json.loads((run / "metrics.json").read_text()) for run in (a, b))
    assert untimed(report_a, REPORT_TIMING) == untimed(report_b, REPORT_TIMING)
    assert_identical(checkpoint.load(a / "best.pt"), checkpoint.load(b / "best.pt"), "best.pt")
    last_a, last_b = checkpoint.load(a / "last.pt"), checkpoint.load(b / "last.pt")
    for last in (last_a, last_b):
        last["history"] = [untimed(h) for h in last["history"]]
    # Everything a further resume would continue from: weights, optimiser moments and step
    # counts, both RNG states, best epoch, history and config.
    assert {"model", "optimizer", "torch_rng", "numpy_rng"} <= last_a.keys()
    assert_identical(last_a, last_b, "last.pt")


# -- 2. load + evaluate --------------------------------------------------------------------------

def test_loaded_run_reproduces_its_reported_metrics(trained):
    a, _ = trained
    report = json.loads((a / "metrics.json").read_text())
    cfg, split, model = load_run(a)
    for stage in ("test", "valid"):  # best.pt holds the best epoch's weights, so valid agrees too
        assert evaluate(model, split, stage, cfg.train.ks, batch_size=cfg.train.eval_batch_size) == report[stage]


# -- 3 and 4. scoring ------------------------------------------------------------------------------

@pytest.mark.parametrize("stage", ["valid", "test"])
def test_scores_are_finite_and_independent_of_the_batch(trained, stage):
    a, _ = trained
    _, split, model = load_run(a)
    indptr, flat = split.history(stage)
    # The edges are there: users with the shortest history, an item no training pair touches.
    assert np.diff(indptr).min() == (1 if stage == "valid" else 2) and N_ITEMS not in split.train_items
    users = np.arange(1, split.n_users + 1)
    together = model.score_histories(users, indptr, flat)
    assert together.shape == (split.n_users, split.n_items + 1)
    assert torch.isfinite(together).all()
    for u in users:
        alone = model.score_histories(np.array([u]), indptr, flat)
        torch.testing.assert_close(alone[0], together[u - 1], atol=1e-5, rtol=1e-5, msg=f"user {u}")
    reverse = model.score_histories(users[::-1].copy(), indptr, flat)
    torch.testing.assert_close(reverse.flip(0), together, atol=1e-5, rtol=1e-5)
    one_by_one = user_ranks(model, split, stage, batch_size=1)
    assert np.array_equal(one_by_one, user_ranks(model, split, stage, batch_size=len(users)))


# -- 5. fast paths equal reference paths -----------------------------------------------------------

@pytest.fixture(scope="module")
def split():
    return random_sequences_split(3, 30, 25, 40)


class Step(NamedTuple):
    terms: dict  # loss term -> float
    grads: dict  # parameter name -> gradient
    model: Recommender
    chunks: list | None  # the step's sequence chunks


def one_step(cfg, split, sequence_batch=None) -> Step:
    """One training step's loss and gradients (no optimiser step); the stream's draws, dropout and
    the uniformity negatives (a derangement from torch's generator) seeded the same for every
    configuration. `sequence_batch(stream, rng)`: the sequence chunks to use instead of the
    streams' first batches (then without a graph batch)."""
    model = build_model(cfg, split).train()
    graph, seq = make_streams(cfg, split)
    rng = np.random.default_rng(0)
    if sequence_batch is None:
        batches = (next(graph.batches(rng)) if graph else None, next(seq.batches(rng)) if seq else None)
    else:
        batches = (None, sequence_batch(seq, rng))
    torch.manual_seed(5)
    total, terms = model.loss(*batches)
    total.backward()
    grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    return Step({k: float(v) for k, v in terms.items()}, grads, model, batches[1])


def assert_same_step(a: Step, b: Step) -> None:
    assert a.terms.keys() == b.terms.keys()
    for k in a.terms:
        assert a.terms[k] == pytest.approx(b.terms[k], rel=1e-5, abs=1e-6), k
    assert a.grads.keys() == b.grads.keys()
    for k in a.grads:
        torch.testing.assert_close(a.grads[k], b.grads[k], atol=1e-6, rtol=1e-4, msg=k)


@pytest.mark.parametrize("name", PRESETS)
def test_shortcuts_change_no_loss_and_no_gradient(split, name):
    """The exact shortcuts (final layer at read positions, fused all-item cross-entropy, LightGCN's
    last layer at the batch's nodes only) against the straightforward computation."""
    fast, plain = (one_step(resolve(name, None, ["max_len=10", "batch_size=48", f"shortcuts={s}",
                                                  "hidden_dropout=0", "attn_dropout=0"]), split)
                   for s in ("true", "false"))
    assert_same_step(fast, plain)


@pytest.mark.parametrize("name", SEQUENTIAL)
def test_sequence_layouts_give_the_same_loss(split, name):
    """packed, prefix and padded lay out the same samples; the model and loss must not notice.

    A layout may order a batch's samples its own way and draws BERT4Rec's masks at its own
    width, and the uniformity negatives pair samples by their order. So the batch is sorted by
    window length, and max_len (4) lies within one length bucket and one packed row width:
    every layout then lists the samples in the same order and draws the same masks, and any
    difference left is the layout's own. Short windows still share packed rows."""
    def sorted_batch(seq, rng):
        g = seq.targets_at[np.argsort(seq.position[seq.targets_at], kind="stable")][::7]
        return seq.chunks(g, rng)

    steps = {mode: one_step(resolve(name, None, ["max_len=4", f"seq_batching={mode}", "hidden_dropout=0",
                                                  "attn_dropout=0"]), split, sorted_batch)
             for mode in ("packed", "prefix", "padded")}
    packed = steps["packed"].chunks
    assert sum(len(c.seqs) for c in packed) < sum(len(c.lengths) for c in packed)  # rows shared: really packed
    with torch.no_grad():
        targets = {mode: step.model.encode_sequences(step.chunks)[1] for mode, step in steps.items()}
    for mode in ("prefix", "padded"):
        assert torch.equal(targets[mode], targets["packed"]), f"{mode}: samples or masks differ, not comparable"
        assert_same_step(steps[mode], steps["packed"])
