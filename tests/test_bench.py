"""The benchmark's aggregation: rows measured in interleaved rounds merge into one row per configuration."""

from gsau.bench import merge_rounds


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


def test_local_propagation_edges_count_the_batch_neighbourhood():
    """The floor's graph count (2 layers): layer 1 multiplies the whole adjacency, layer 2 only the
    rows of the batch's nodes: every row for a batch that holds every
    training pair; for a two-pair batch, its four nodes' degrees, counted here by hand."""
    import numpy as np
    from conftest import random_sequences_split
    from gsau.bench import _local_propagation_edges
    from gsau.config import resolve
    from gsau.data.batching import GraphStream
    split = random_sequences_split(0, 20, 12, 30)
    users, items = split.train_pairs()
    edges = {(("u", a), ("i", b)) for a, b in zip(users.tolist(), items.tolist())}
    edges |= {(b, a) for a, b in edges}
    nnz = len(edges)
    whole = resolve("directau", None, [f"batch_size={len(users)}"])
    assert _local_propagation_edges(whole, split) == 2 * nnz
    batch = next(GraphStream(split, 2).batches(np.random.default_rng(0)))
    nodes = {("u", int(u)) for u in batch["users"]} | {("i", int(i)) for i in batch["items"]}
    layer2 = sum(1 for a, _ in edges if a in nodes)
    two = resolve("directau", None, ["batch_size=2"])
    assert _local_propagation_edges(two, split, batches=1) == nnz + layer2
