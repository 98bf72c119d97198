"""benchmarks/components.py: a step's parts are the parts its model has, timed over the trainer's
own step and the model's own weighted sum; the profile lists the ops of whole steps."""

import sys
from pathlib import Path

import pytest
from test_bench import tiny_dataset, train_steps  # noqa: F401  (fixtures)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import components  # noqa: E402

SMALL = ["batch_size=64", "embedding_dim=8", "inner_size=16"]
WHOLE, OPTIMISER, NEXT = "whole step (batches pre-built)", "optimiser step", "next batches"
GRAPH = "graph objectives (forward + backward)"
ENCODER = "sequential encoder (forward + backward)"
SEQUENCE = "sequential encoder and objectives (forward + backward)"


@pytest.mark.parametrize("model, parts", [
    ("gsau-rec", [WHOLE, OPTIMISER, GRAPH, ENCODER, SEQUENCE, NEXT]),
    ("sasrec", [WHOLE, OPTIMISER, ENCODER, SEQUENCE, NEXT]),
    ("lightgcn", [WHOLE, OPTIMISER, GRAPH, NEXT]),
])
def test_parts_follow_the_model(model, parts, tiny_dataset, train_steps, one_thread):  # noqa: F811
    rows = components.components(model, tiny_dataset, steps=2, repeats=2, overrides=SMALL)
    assert [r["part"] for r in rows] == parts
    assert len(train_steps) == 2 + 2 * 2  # warm-up on the first two batches (of at most 3), then 2 rounds of 2
    for r in rows:
        assert len(r["ms_all"]) == 2 and r["ms_per_step"] > 0
        assert r["share_of_step"] == pytest.approx(r["ms_per_step"] / rows[0]["ms_per_step"])


def test_profile_lists_the_top_ops_of_whole_steps(tiny_dataset, one_thread):  # noqa: F811
    ops = components.top_ops("sasrec", tiny_dataset, steps=2, overrides=SMALL, n=5)
    assert len(ops) == 5
    assert all(0 < o["share"] <= 1 for o in ops) and sum(o["share"] for o in ops) <= 1 + 1e-9
    assert [o["share"] for o in ops] == sorted((o["share"] for o in ops), reverse=True)
    assert all(o["calls_per_step"] > 0 for o in ops)
