"""How each preset wires the shared parts into its loss, and its initialisation.

    L = L_GA + L_SA + gamma (L_GU + L_SU)          (GSAU; other presets drop or swap terms)

The terms are recomputed here from the encoders' outputs with gsau.objectives, in eval mode so
dropout draws nothing and the derangement of negatives can be replayed from the same seed.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import random_interactions

from gsau import objectives as obj
from gsau.config import preset_names, resolve
from gsau.errors import ConfigError
from gsau.data import LeaveOneOut
from gsau.data.batching import GraphStream, SequenceStream
from gsau.encoders import normalized_adjacency
from gsau.model import Recommender

SMALL = ["embedding_dim=8", "inner_size=16", "max_len=6", "n_heads=2", "n_layers=1"]

EXPECTED_TERMS = {
    "gsau": {"L_GA", "L_GU", "L_SA", "L_SU"},
    "gsau-rec": {"L_GA", "L_GU", "L_CE", "L_SU"},
    "gsau-bert4rec": {"L_GA", "L_GU", "L_SA", "L_SU"},
    "sasrec-u": {"L_SA", "L_SU"},
    "bert4rec-u": {"L_SA", "L_SU"},
    "directau": {"L_GA", "L_GU"},
    "graphau": {"L_GA", "L_GU"},
    "lightgcn": {"L_BPR", "L_reg"},
    "sasrec": {"L_CE"},
    "bert4rec": {"L_CE"},
    "gsau-batch": {"L_GA", "L_GU", "L_SA", "L_SU"},
    "gsau-items": {"L_GA", "L_GU", "L_SA", "L_SU"},
}


@pytest.fixture(scope="module")
def split():
    return LeaveOneOut.from_interactions(random_interactions(0, 12, 20, 9, distinct=True))


def build(preset, split, *overrides):
    cfg = resolve(preset, None, SMALL + list(overrides))
    adjacency = None
    if cfg.net.graph_encoder:
        adjacency = normalized_adjacency(*split.train_pairs(), split.n_users, split.n_items)
    torch.manual_seed(0)
    return cfg, Recommender(cfg.net, split.n_users, split.n_items, adjacency)


def batches(cfg, split, seed=0):
    rng = np.random.default_rng(seed)
    n = cfg.net
    graph = seq = None
    if n.graph_loss:
        graph = next(GraphStream(split, 16, negatives=n.graph_loss == "bpr").batches(rng))
    if n.sequence_loss:
        # Bucketed layout: the references below re-encode each chunk row by row (packing is tested apart).
        stream = SequenceStream(split, n.max_len, 16, "prefix", masked_lm=n.sequence_encoder == "bert4rec",
                                mask_ratio=n.mask_ratio)
        seq = next(stream.batches(rng))
    return graph, seq


def test_every_preset_builds_and_its_loss_has_the_expected_terms(split):
    assert set(preset_names()) == set(EXPECTED_TERMS)
    for preset in preset_names():
        cfg, model = build(preset, split)
        graph, seq = batches(cfg, split)
        total, terms = model.loss(graph, seq)
        terms = {k: float(v) for k, v in terms.items()}  # detached 0-dim tensors
        assert set(terms) == EXPECTED_TERMS[preset], preset
        assert total.dim() == 0 and torch.isfinite(total), preset
        total.backward()
        grad = model.item_table.weight.grad
        assert grad is not None and grad[1:].abs().sum() > 0, preset


@pytest.mark.parametrize("preset", ["gsau", "gsau-rec", "gsau-bert4rec", "sasrec-u", "directau", "graphau"])
def test_total_is_alignment_plus_gamma_times_uniformity(split, preset):
    cfg, model = build(preset, split, "gamma=0.37")
    model.eval()
    total, terms = model.loss(*batches(cfg, split))
    terms = {k: float(v) for k, v in terms.items()}  # detached 0-dim tensors
    align = sum(v for k, v in terms.items() if k in ("L_GA", "L_SA", "L_CE"))
    unif = sum(v for k, v in terms.items() if k in ("L_GU", "L_SU"))
    assert total.item() == pytest.approx(align + 0.37 * unif, rel=1e-5, abs=1e-6)


def test_lightgcn_total_is_bpr_plus_reg_weight_times_l2(split):
    cfg, model = build("lightgcn", split, "bpr_reg=0.25")
    total, terms = model.loss(*batches(cfg, split))
    terms = {k: float(v) for k, v in terms.items()}  # detached 0-dim tensors
    assert total.item() == pytest.approx(terms["L_BPR"] + 0.25 * terms["L_reg"], rel=1e-6)


def test_directau_terms_follow_the_formulas(split):
    cfg, model = build("directau", split)
    graph, _ = batches(cfg, split)
    _, terms = model.loss(graph, None)
    terms = {k: float(v) for k, v in terms.items()}  # detached 0-dim tensors
    user_final, item_final = model.graph(model.user_table.weight, model.item_table.weight)
    eu, ei = user_final[graph["users"]], item_final[graph["items"]]
    assert terms["L_GA"] == pytest.approx(obj.alignment(eu, ei).item(), rel=1e-5)
    assert terms["L_GU"] == pytest.approx((obj.uniformity(eu) + obj.uniformity(ei)).item(), rel=1e-5)


def test_graphau_aligns_layer0_with_the_partners_propagated_layers_and_final_embedding(split):
    cfg, model = build("graphau", split, "graph_layers=3")
    graph, _ = batches(cfg, split)
    _, terms = model.loss(graph, None)
    terms = {k: float(v) for k, v in terms.items()}  # detached 0-dim tensors
    layers = model.graph.layers(model.user_table.weight, model.item_table.weight)
    u, i = graph["users"] - 1, split.n_users + graph["items"] - 1
    e0 = layers[0]
    views = layers[1:] + [torch.stack(layers).mean(0)]  # the authors' code: layers 1..K and their mean
    expected = sum(obj.alignment(e0[u], ek[i]) + obj.alignment(e0[i], ek[u]) for ek in views) / (2 * 4)
    assert terms["L_GA"] == pytest.approx(expected.item(), rel=1e-5)
    assert terms["L_GU"] == pytest.approx((obj.uniformity(e0[u]) + obj.uniformity(e0[i])).item(), rel=1e-5)


def test_lightgcn_bpr_terms_follow_the_formulas(split):
    cfg, model = build("lightgcn", split)
    graph, _ = batches(cfg, split)
    for u, neg in zip(graph["users"].tolist(), graph["negatives"].tolist()):  # true negatives
        assert neg not in split.train_items[split.train_indptr[u - 1]: split.train_indptr[u]]
    _, terms = model.loss(graph, None)
    terms = {k: float(v) for k, v in terms.items()}  # detached 0-dim tensors
    user_final, item_final = model.graph(model.user_table.weight, model.item_table.weight)
    eu, ep, en = user_final[graph["users"]], item_final[graph["items"]], item_final[graph["negatives"]]
    expected = obj.bpr((eu * ep).sum(-1), (eu * en).sum(-1))
    assert terms["L_BPR"] == pytest.approx(expected.item(), rel=1e-5)
    reg = obj.l2_regularizer(model.user_table.weight[graph["users"]], model.item_table.weight[graph["items"]],
                             model.item_table.weight[graph["negatives"]])
    assert terms["L_reg"] == pytest.approx(reg.item(), rel=1e-5)


def test_sequential_uniformity_uses_sequence_vs_deranged_target_pairs(split):
    cfg, model = build("sasrec-u", split)
    model.eval()
    _, chunks = batches(cfg, split)
    torch.manual_seed(123)
    _, terms = model.loss(None, chunks)
    terms = {k: float(v) for k, v in terms.items()}  # detached 0-dim tensors
    table = model.item_table.weight
    s = torch.cat([model.sequence(table, c.seqs, c.lengths) for c in chunks])
    p = table[torch.cat([c.targets for c in chunks])]
    torch.manual_seed(123)
    n = p[obj.derangement(len(p))]
    assert terms["L_SA"] == pytest.approx(obj.alignment(s, p).item(), rel=1e-5)
    expected = obj.uniformity(s) + obj.uniformity(p) + obj.pair_uniformity(s, n)
    assert terms["L_SU"] == pytest.approx(expected.item(), rel=1e-5)


def su_of(split, *sets):
    """sasrec-u's L_SU under `sets`, and the batch's sequence representations s and targets p."""
    cfg, model = build("sasrec-u", split, *sets)
    model.eval()
    _, chunks = batches(cfg, split)
    _, terms = model.loss(None, chunks)
    table = model.item_table.weight
    s = torch.cat([model.sequence(table, c.seqs, c.lengths) for c in chunks])
    return float(terms["L_SU"]), s, table[torch.cat([c.targets for c in chunks])]


def test_su_negatives_batch_pairs_each_sample_with_every_other_target(split):
    su, s, p = su_of(split, "su_negatives=batch")
    assert su == pytest.approx((obj.uniformity(s) + obj.uniformity(p) + obj.cross_uniformity(s, p)).item(), rel=1e-5)


def test_su_negatives_rows_takes_the_log_mean_exp_per_sample(split):
    su, s, p = su_of(split, "su_negatives=rows")
    assert su == pytest.approx((obj.uniformity(s) + obj.uniformity(p) + obj.row_uniformity(s, p)).item(), rel=1e-5)


def test_su_negatives_items_pairs_each_sample_with_every_item_but_its_target(split):
    su, s, p = su_of(split, "su_negatives=items", "su_t=5")
    cfg, model = build("sasrec-u", split)
    _, chunks = batches(cfg, split)
    targets = torch.cat([c.targets for c in chunks])
    want = obj.uniformity(s, 5.0) + obj.uniformity(p, 5.0) + obj.catalogue_uniformity(s, model.item_table.weight, targets, 5.0)
    assert su == pytest.approx(want.item(), rel=1e-5)
    assert su != pytest.approx(su_of(split, "su_negatives=rows", "su_t=5")[0], rel=1e-4)


@pytest.mark.parametrize("negatives", ["batch", "rows", "shuffled"])
def test_su_mask_hits_leaves_out_pairs_of_the_same_item(split, negatives):
    torch.manual_seed(7)
    su, s, p = su_of(split, f"su_negatives={negatives}", "su_mask_hits=true")
    cfg, model = build("sasrec-u", split)
    _, chunks = batches(cfg, split)
    targets = torch.cat([c.targets for c in chunks])
    hits = targets[:, None] == targets[None, :]
    assert hits.fill_diagonal_(False).any()  # the batch repeats items: the mask has work to do
    base = obj.uniformity(s) + obj.uniformity(p)
    if negatives == "batch":
        want = base + obj.cross_uniformity(s, p, 2.0, hits)
    elif negatives == "rows":
        want = base + obj.row_uniformity(s, p, 2.0, hits)
    else:  # a seed whose shuffled partners include a hit, then the loss under that seed
        cfg, model = build("sasrec-u", split, "su_mask_hits=true")
        model.eval()
        seed = next(k for k in range(1000) if (targets[obj.derangement(len(targets), torch.Generator().manual_seed(k))]
                                               == targets).any())
        pairs = obj.derangement(len(targets), torch.Generator().manual_seed(seed))
        torch.manual_seed(seed)
        assert torch.equal(obj.derangement(len(targets)), pairs)  # the model draws from the default generator
        torch.manual_seed(seed)
        su = float(model.loss(None, chunks)[1]["L_SU"])
        keep = targets[pairs] != targets
        want = base + obj.pair_uniformity(s[keep], p[pairs][keep])
    assert su == pytest.approx(want.item(), rel=1e-5)
    unmasked, _, _ = su_of(split, f"su_negatives={negatives}")
    assert su != pytest.approx(unmasked, rel=1e-6)


@pytest.mark.parametrize("negatives", ["batch", "rows"])
def test_su_unique_items_weighs_each_distinct_item_once(split, negatives):
    su, s, p = su_of(split, f"su_negatives={negatives}", "su_unique_items=true")
    cfg, _ = build("sasrec-u", split)
    _, chunks = batches(cfg, split)
    targets = torch.cat([c.targets for c in chunks])
    weights = 1.0 / (targets[:, None] == targets[None, :]).sum(dim=1).float()
    assert (weights < 1).any()  # repeated items: the weights have work to do
    term = obj.cross_uniformity if negatives == "batch" else obj.row_uniformity
    want = obj.uniformity(s) + obj.uniformity(p) + term(s, p, 2.0, None, weights)
    assert su == pytest.approx(want.item(), rel=1e-5)
    assert su != pytest.approx(su_of(split, f"su_negatives={negatives}")[0], rel=1e-6)


@pytest.mark.parametrize("preset, sets, message", [
    ("gsau-rec", ["su_unique_items=true"], "su_unique_items needs su_negatives=batch or rows"),
    ("gsau-rec", ["su_mask_hits=true", "sequence_uniformity=false"], "su_mask_hits and su_unique_items shape L_SU"),
    ("lightgcn", ["su_mask_hits=true"], "su_mask_hits and su_unique_items shape L_SU"),
    ("sasrec", ["su_negatives=batch", "su_unique_items=true"], "su_mask_hits and su_unique_items shape L_SU"),
    ("gsau", ["su_negatives=items", "su_mask_hits=true"], "su_negatives=items already leaves out"),
    ("gsau", ["su_negatives=items", "optimizer=lazy_adam", "graph_refresh=10"], "lazy_adam does not support su_negatives=items"),
])
def test_l_su_options_are_refused_where_they_would_change_nothing(preset, sets, message):
    with pytest.raises(ConfigError, match=message):
        resolve(preset, None, sets)


def test_su_t_is_the_kernel_of_every_l_su_term(split):
    su, s, p = su_of(split, "su_negatives=batch", "su_t=5")
    expected = obj.uniformity(s, 5.0) + obj.uniformity(p, 5.0) + obj.cross_uniformity(s, p, 5.0)
    assert su == pytest.approx(expected.item(), rel=1e-5)
    assert expected.item() != pytest.approx((obj.uniformity(s) + obj.uniformity(p) + obj.cross_uniformity(s, p)).item())


def test_gsau_rec_cross_entropy_uses_normalised_sequence_representation(split):
    cfg, model = build("gsau-rec", split)
    model.eval()
    _, chunks = batches(cfg, split)
    _, terms = model.loss(None, chunks)
    terms = {k: float(v) for k, v in terms.items()}  # detached 0-dim tensors
    table = model.item_table.weight
    s = torch.nn.functional.normalize(torch.cat([model.sequence(table, c.seqs, c.lengths) for c in chunks]), dim=-1)
    targets = torch.cat([c.targets for c in chunks])
    expected = torch.nn.functional.cross_entropy(s @ table[1:].T, targets - 1)
    assert terms["L_CE"] == pytest.approx(expected.item(), rel=1e-5)


def test_bert4rec_cross_entropy_predicts_the_masked_items(split):
    cfg, model = build("bert4rec", split)
    model.eval()
    with torch.no_grad():
        model.output_bias.normal_()
    _, chunks = batches(cfg, split)
    _, terms = model.loss(None, chunks)
    terms = {k: float(v) for k, v in terms.items()}  # detached 0-dim tensors
    table = model.item_table.weight
    reps = torch.cat([model.sequence.encode(F.embedding(c.seqs, table), c)[c.masked] for c in chunks])
    targets = torch.cat([c.seqs[c.masked] for c in chunks])
    assert (targets > 0).all()
    logits = reps @ table.T + model.output_bias
    expected = torch.nn.functional.cross_entropy(logits[:, 1:], targets - 1)
    assert terms["L_CE"] == pytest.approx(expected.item(), rel=1e-5)


# -- initialisation ------------------------------------------------------------------------------

def test_xavier_normal_init_for_the_gsau_family():
    cfg = resolve("gsau", None, ["embedding_dim=64"]).net
    adjacency = normalized_adjacency(np.array([1]), np.array([1]), 500, 2000)
    torch.manual_seed(0)
    model = Recommender(cfg, 500, 2000, adjacency)
    for table, n in ((model.item_table.weight, 2001), (model.user_table.weight, 501)):
        assert torch.all(table[0] == 0)
        std = math.sqrt(2.0 / (n + 64))
        assert table[1:].std().item() == pytest.approx(std, rel=0.05)
    linear = model.sequence.layers[0].ffn_in
    assert linear.weight.std().item() == pytest.approx(math.sqrt(2.0 / (64 + cfg.inner_size)), rel=0.1)
    assert torch.all(linear.bias == 0)


def test_encoder_default_init_is_bert_style_for_transformer_baselines():
    for preset in ("sasrec", "bert4rec"):
        cfg = resolve(preset, None, ["embedding_dim=64"]).net
        torch.manual_seed(0)
        model = Recommender(cfg, 10, 2000)
        assert model.item_table.weight[1:].std().item() == pytest.approx(0.02, rel=0.05), preset
        assert torch.all(model.item_table.weight[0] == 0)


def test_encoder_default_init_is_xavier_uniform_for_lightgcn():
    cfg = resolve("lightgcn", None, ["embedding_dim=64"]).net
    adjacency = normalized_adjacency(np.array([1]), np.array([1]), 500, 2000)
    torch.manual_seed(0)
    model = Recommender(cfg, 500, 2000, adjacency)
    w = model.item_table.weight
    bound = math.sqrt(6.0 / (2001 + 64))
    assert w.abs().max().item() <= bound
    assert w[1:].abs().max().item() > 0.9 * bound  # uniform: fills its range
    assert w[1:].std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)


# -- scoring cache ---------------------------------------------------------------------------------

def test_graph_scores_follow_loaded_weights(split):
    cfg, model = build("directau", split)
    _, other = build("directau", split)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-2.0)
    model.eval()
    users = torch.arange(1, split.n_users + 1)
    model.score(users)
    model.load_state_dict(other.state_dict())
    other.eval()
    torch.testing.assert_close(model.score(users), other.score(users))
