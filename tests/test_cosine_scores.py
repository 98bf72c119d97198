"""cosine_scores=true: ranking by the cosine of the query and the item vectors (the geometry that
alignment and uniformity train), in the model, the serving vectors and the export alike; it
changes nothing that is trained."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import random_sequences_split

from gsau.config import resolve
from gsau.serving import Recommendations
from gsau.trainer import build_model, make_streams

SMALL = ["embedding_dim=8", "inner_size=16", "max_len=6", "batch_size=16", "hidden_dropout=0", "attn_dropout=0"]


def model_pair(preset: str, split):
    """The same weights with and without cosine scoring."""
    models = []
    for flag in ("false", "true"):
        torch.manual_seed(0)
        cfg = resolve(preset, None, SMALL + [f"cosine_scores={flag}"])
        models.append((cfg, build_model(cfg, split)))
    return models


@pytest.mark.parametrize("preset", ["gsau", "bert4rec"])
def test_sequence_scores_are_the_cosine_of_query_and_items(preset):
    split = random_sequences_split(0, 30, 9, 20)
    (_, dot), (_, cos) = model_pair(preset, split)
    with torch.no_grad():
        if cos.output_bias is not None:  # the bias is added after the cosine
            cos.output_bias.copy_(torch.linspace(-1, 1, split.n_items + 1))
    users = np.arange(1, 11)
    got = cos.eval().score_histories(users, *split.history("test"))
    with torch.no_grad():
        from gsau.data.batching import history_windows
        seqs, lengths = history_windows(*split.history("test"), users, cos.history_cap, cos.sequence.needs_free_slot)
        s = cos.sequence(cos.item_table.weight, torch.from_numpy(seqs), torch.from_numpy(lengths))
        want = F.normalize(s, dim=-1) @ F.normalize(cos.item_table.weight, dim=-1).T
        if cos.output_bias is not None:
            want = want + cos.output_bias
    torch.testing.assert_close(got, want)
    plain = dot.eval().score_histories(users, *split.history("test"))
    assert not torch.allclose(got, plain)  # the flag changes the ranking scores


def test_graph_scores_are_the_cosine_of_the_final_embeddings():
    split = random_sequences_split(1, 30, 9, 20)
    (_, dot), (_, cos) = model_pair("lightgcn", split)
    users = np.arange(1, 11)
    user_final, item_final = dot.eval().graph(*dot.graph_tables())
    want = F.normalize(user_final[torch.from_numpy(users)], dim=-1) @ F.normalize(item_final, dim=-1).T
    torch.testing.assert_close(cos.eval().score_histories(users, *split.history("test")), want)


@pytest.mark.parametrize("preset", ["gsau", "lightgcn"])
def test_serving_vectors_and_export_rank_as_the_model(preset):
    split = random_sequences_split(2, 30, 9, 20)
    _, (cfg, model) = model_pair(preset, split)
    recs = Recommendations(cfg, split, model.eval())
    users = np.arange(1, split.n_users + 1)
    direct = model.score_histories(users, split.data.indptr, split.data.items)
    torch.testing.assert_close(recs.scores(users), direct)
    product = recs.user_vectors()[1:] @ recs.item_vectors().T  # what export writes, as an inner product
    torch.testing.assert_close(product, direct, rtol=1e-5, atol=1e-6)
    recs.store_user_vectors()
    torch.testing.assert_close(recs.scores(users), direct, rtol=1e-5, atol=1e-6)


def test_training_is_the_same_with_and_without_cosine_scoring():
    split = random_sequences_split(3, 30, 9, 20)
    (cfg, dot), (_, cos) = model_pair("gsau", split)
    losses = []
    for model in (dot, cos):
        graph, seq = make_streams(cfg, split)
        rng = np.random.default_rng(0)
        torch.manual_seed(1)
        total, _ = model.train().loss(next(graph.batches(rng)), next(seq.batches(rng)))
        losses.append(total.item())
    assert losses[0] == losses[1]
