"""benchmarks/flops.py: the FLOP floor's count of graph propagation."""

import sys
from pathlib import Path

import numpy as np
from conftest import random_sequences_split

from gsau.config import resolve
from gsau.data.batching import GraphStream

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from flops import local_propagation_edges  # noqa: E402


def test_local_propagation_edges_count_the_batch_neighbourhood():
    """The floor's graph count (2 layers): layer 1 multiplies the whole adjacency, layer 2 only the
    rows of the batch's nodes: every row for a batch that holds every
    training pair; for a two-pair batch, its four nodes' degrees, counted here by hand."""
    split = random_sequences_split(0, 20, 12, 30)
    users, items = split.train_pairs()
    edges = {(("u", a), ("i", b)) for a, b in zip(users.tolist(), items.tolist())}
    edges |= {(b, a) for a, b in edges}
    nnz = len(edges)
    whole = resolve("directau", None, [f"batch_size={len(users)}"])
    assert local_propagation_edges(whole, split) == 2 * nnz
    batch = next(GraphStream(split, 2).batches(np.random.default_rng(0)))
    nodes = {("u", int(u)) for u in batch["users"]} | {("i", int(i)) for i in batch["items"]}
    layer2 = sum(1 for a, _ in edges if a in nodes)
    two = resolve("directau", None, ["batch_size=2"])
    assert local_propagation_edges(two, split, batches=1) == nnz + layer2
