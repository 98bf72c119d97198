"""The exact shortcuts (final layer at read positions, fused all-item cross-entropy, LightGCN's
last layer at the batch's nodes only) give the same losses and gradients as the straightforward
computation, for every preset that uses one of them."""

import numpy as np
import pytest
import torch

from conftest import random_sequences_split
from gsau.config import resolve
from gsau.trainer import build_model, make_streams


@pytest.fixture(scope="module")
def split():
    return random_sequences_split(3, 30, 25, 40)


@pytest.mark.parametrize("name", ["gsau", "gsau-rec", "gsau-bert4rec", "sasrec", "bert4rec", "lightgcn", "directau", "graphau"])
def test_shortcuts_change_no_loss_and_no_gradient(split, name):
    results = []
    for shortcuts in ("true", "false"):
        cfg = resolve(name, None, ["max_len=10", "batch_size=48", f"shortcuts={shortcuts}",
                                   "hidden_dropout=0", "attn_dropout=0"])
        model = build_model(cfg, split).train()
        graph, seq = make_streams(cfg, split)
        rng = np.random.default_rng(0)
        torch.manual_seed(5)  # the uniformity negatives (derangement) draw from torch's generator
        total, terms = model.loss(next(graph.batches(rng)) if graph else None,
                                  next(seq.batches(rng)) if seq else None)
        terms = {k: float(v) for k, v in terms.items()}  # detached 0-dim tensors
        total.backward()
        results.append((terms, {k: p.grad for k, p in model.named_parameters() if p.grad is not None}))
    (terms_a, grads_a), (terms_b, grads_b) = results
    assert terms_a.keys() == terms_b.keys()
    for k in terms_a:
        assert terms_a[k] == pytest.approx(terms_b[k], rel=1e-5, abs=1e-6), k
    assert grads_a.keys() == grads_b.keys()
    for k in grads_a:
        torch.testing.assert_close(grads_a[k], grads_b[k], atol=1e-6, rtol=1e-4, msg=k)
