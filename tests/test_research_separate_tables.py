"""shared_table=false (issue #18, question 1): the graph encoder gets its own item table (users are
the graph's alone), the sequential encoder and the ranker keep item_table, the joint loss is
unchanged; so the encoders meet only in the loss and no gradient crosses between their tables."""

import numpy as np
import pytest
import torch
from conftest import block_cycles, random_interactions

from gsau.config import resolve
from gsau.data import LeaveOneOut
from gsau.data.batching import GraphStream, SequenceStream
from gsau.encoders import normalized_adjacency
from gsau.errors import ConfigError
from gsau.evaluation import evaluate
from gsau.metrics import ranking_metrics
from gsau.model import Recommender
from gsau.trainer import Trainer, load_run

SMALL = ["embedding_dim=8", "inner_size=16", "max_len=6", "n_heads=2", "n_layers=1"]
GRAPH_TABLES = ("user_table", "graph_item_table")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def split():
    return LeaveOneOut.from_interactions(random_interactions(0, 12, 20, 9, distinct=True))


def build(split, *overrides):
    cfg = resolve("gsau-rec", None, SMALL + list(overrides))
    torch.manual_seed(0)
    adjacency = normalized_adjacency(*split.train_pairs(), split.n_users, split.n_items)
    return Recommender(cfg.net, split.n_users, split.n_items, adjacency)


def batches(split):
    rng = np.random.default_rng(0)
    return (next(GraphStream(split, 16).batches(rng)),
            next(SequenceStream(split, 6, 16, "prefix").batches(rng)))


def touched(model, terms) -> set[str]:
    """The tables a sum of loss terms sends a non-zero gradient to."""
    model.zero_grad(set_to_none=True)
    sum(terms.values()).backward()
    names = ("item_table",) + GRAPH_TABLES
    return {n for n in names if getattr(model, n, None) is not None
            and getattr(model, n).weight.grad is not None and getattr(model, n).weight.grad.abs().sum() > 0}


def test_no_gradient_crosses_between_the_encoders_tables(split):
    graph, seq = batches(split)
    model = build(split, "shared_table=false")
    assert touched(model, model.graph_terms(graph)) == set(GRAPH_TABLES)
    assert touched(model, model.sequence_terms(seq)) == {"item_table"}
    # The shared table, by contrast, is where both encoders' gradients meet.
    shared = build(split)
    assert shared.graph_item_table is None
    assert touched(shared, shared.graph_terms(graph)) == {"user_table", "item_table"}


def test_the_joint_loss_keeps_its_terms_and_weights(split):
    graph, seq = batches(split)
    model = build(split, "shared_table=false", "gamma=0.3")
    model.eval()
    total, terms = model.loss(graph, seq)
    assert set(terms) == {"L_GA", "L_GU", "L_CE", "L_SU"}
    t = {name: float(v) for name, v in terms.items()}
    expected = t["L_GA"] + t["L_CE"] + 0.3 * (t["L_GU"] + t["L_SU"])
    # The terms nearly cancel (L_SU and L_GU are negative), so float32's rounding of the running sum
    # is relative to the terms' size, not to the small total: a few ulps of their absolute sum.
    size = t["L_GA"] + t["L_CE"] + 0.3 * (abs(t["L_GU"]) + abs(t["L_SU"]))
    assert total.item() == pytest.approx(expected, abs=4 * 2.0 ** -23 * size)
    # Both item tables start from the same init scheme but are distinct parameters.
    assert model.graph_item_table.weight.shape == model.item_table.weight.shape
    assert not torch.equal(model.graph_item_table.weight, model.item_table.weight)


@pytest.mark.parametrize("overrides, says", [
    (["graph_encoder=null", "graph_loss=null"], "shared_table=false needs a graph and a sequence encoder"),
    (["scorer=graph", "mask_history=true"], "scorer=sequence"),
])
def test_separate_tables_need_both_encoders_and_the_sequential_ranker(overrides, says):
    with pytest.raises(ConfigError, match=says):
        resolve("gsau-rec", None, ["shared_table=false"] + overrides)


def test_separate_tables_still_learn_a_planted_successor_pattern(dataset_dir, tmp_path):
    data = block_cycles(300, 4, 15, (0.4, 0.3, 0.2, 0.1), name="planted-separate")
    split = LeaveOneOut.from_interactions(data)
    cfg = resolve("gsau-rec", None, ["batch_size=64", "epochs=8", "patience=100", "ks=[10]", "metric=ndcg@10",
                                     "embedding_dim=64", "inner_size=64", "n_layers=1", "max_len=8",
                                     "hidden_dropout=0.1", "attn_dropout=0.1", "lr=0.005", "shared_table=false",
                                     f"dataset={dataset_dir(data)}"])
    report = Trainer(cfg, tmp_path / "run", progress=False, echo=lambda line: None).run()
    freq = torch.from_numpy(np.bincount(split.train_items, minlength=split.n_items + 1).astype(np.float64))
    popularity = ranking_metrics(freq.repeat(split.n_users, 1), torch.from_numpy(split.targets("test")), (10,))
    assert report["test"]["recall@10"] >= popularity["recall@10"] + 0.35, report["test"]
    # The record loads with its own graph table and scores as it was reported.
    cfg, split, model = load_run(tmp_path / "run")
    assert model.graph_item_table is not None
    assert evaluate(model, split, "test", (10,)) == pytest.approx(report["test"])
