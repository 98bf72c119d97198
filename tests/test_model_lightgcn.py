"""LightGCN propagation against a dense reference built by hand.

Graph: users 1..3, items 1..5. Pairs (u, i): (1,1) (1,2) (1,2) (2,2) (2,3) (3,1) (3,3) (3,4); the
repeated (1,2) counts once and item 5 has no edges. Node order: users then items.
"""

import math

import numpy as np
import pytest
import torch

from gsau.config import resolve
from gsau.encoders import LightGCN, normalized_adjacency
from gsau.model import Recommender

USERS = np.array([1, 1, 1, 2, 2, 3, 3, 3])
ITEMS = np.array([1, 2, 2, 2, 3, 1, 3, 4])
N_USERS, N_ITEMS = 3, 5


def dense_adjacency(users, items, n_users, n_items):
    """D^-1/2 A D^-1/2 with an explicit loop; isolated nodes get zero rows."""
    n = n_users + n_items
    a = torch.zeros(n, n, dtype=torch.float64)
    for u, i in zip(users, items):
        a[u - 1, n_users + i - 1] = 1.0
        a[n_users + i - 1, u - 1] = 1.0
    degree = a.sum(1)
    inv = torch.where(degree > 0, degree.pow(-0.5), torch.zeros_like(degree))
    return inv[:, None] * a * inv[None, :]


def dense_lightgcn(a, user_table, item_table, n_layers):
    x = torch.cat([user_table[1:], item_table[1:]])
    layers = [x]
    for _ in range(n_layers):
        x = a.to(x.dtype) @ x
        layers.append(x)
    final = torch.stack(layers).mean(0)
    return final[:N_USERS], final[N_USERS:]


def tables(d=4, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(N_USERS + 1, d, generator=g)
    i = torch.randn(N_ITEMS + 1, d, generator=g)
    return u.requires_grad_(requires_grad), i.requires_grad_(requires_grad)


def test_normalized_adjacency_explicit_entries():
    a = normalized_adjacency(USERS, ITEMS, N_USERS, N_ITEMS).to_dense()
    assert a.shape == (8, 8)
    # degrees: users 1:2 (items 1,2), 2:2, 3:3; items 1:2, 2:2, 3:2, 4:1, 5:0
    u = lambda k: k - 1
    i = lambda k: N_USERS + k - 1
    assert a[u(1), i(2)].item() == pytest.approx(1 / math.sqrt(2 * 2))  # repeated pair counts once
    assert a[u(3), i(4)].item() == pytest.approx(1 / math.sqrt(3 * 1))
    assert a[i(1), u(3)].item() == pytest.approx(1 / math.sqrt(2 * 3))
    assert a[u(1), i(3)].item() == 0.0
    assert torch.count_nonzero(torch.diagonal(a)) == 0  # no self loops
    assert torch.count_nonzero(a[: N_USERS, : N_USERS]) == 0  # no user-user edges
    assert torch.count_nonzero(a[N_USERS:, N_USERS:]) == 0  # no item-item edges
    assert torch.count_nonzero(a[i(5)]) == 0  # isolated item
    torch.testing.assert_close(a, a.T)


def test_normalized_adjacency_equals_dense_reference():
    got = normalized_adjacency(USERS, ITEMS, N_USERS, N_ITEMS).to_dense().double()
    torch.testing.assert_close(got, dense_adjacency(USERS, ITEMS, N_USERS, N_ITEMS), atol=1e-7, rtol=1e-6)


def test_adjacency_ignores_pair_order_and_repetition():
    perm = np.random.default_rng(0).permutation(len(USERS))
    users = np.concatenate([USERS[perm], USERS[:3]])
    items = np.concatenate([ITEMS[perm], ITEMS[:3]])
    torch.testing.assert_close(normalized_adjacency(users, items, N_USERS, N_ITEMS).to_dense(),
                               normalized_adjacency(USERS, ITEMS, N_USERS, N_ITEMS).to_dense())


@pytest.mark.parametrize("n_layers", [0, 1, 2, 3])
def test_lightgcn_forward_equals_dense_mean_of_layers(n_layers):
    gcn = LightGCN(normalized_adjacency(USERS, ITEMS, N_USERS, N_ITEMS), N_USERS, n_layers)
    user_table, item_table = tables()
    users_out, items_out = gcn(user_table, item_table)
    assert users_out.shape == (N_USERS + 1, 4) and items_out.shape == (N_ITEMS + 1, 4)
    assert torch.all(users_out[0] == 0) and torch.all(items_out[0] == 0)  # padding rows
    ref_u, ref_i = dense_lightgcn(dense_adjacency(USERS, ITEMS, N_USERS, N_ITEMS),
                                  user_table.double(), item_table.double(), n_layers)
    torch.testing.assert_close(users_out[1:].double(), ref_u, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(items_out[1:].double(), ref_i, atol=1e-6, rtol=1e-5)


def test_lightgcn_layers_are_powers_of_the_adjacency():
    a = dense_adjacency(USERS, ITEMS, N_USERS, N_ITEMS).float()
    gcn = LightGCN(normalized_adjacency(USERS, ITEMS, N_USERS, N_ITEMS), N_USERS, 3)
    user_table, item_table = tables(seed=2)
    layers = gcn.layers(user_table, item_table)
    assert len(layers) == 4
    x0 = torch.cat([user_table[1:], item_table[1:]])
    for k, layer in enumerate(layers):
        torch.testing.assert_close(layer, torch.linalg.matrix_power(a, k) @ x0, atol=1e-6, rtol=1e-5)


def test_lightgcn_ignores_padding_rows_of_the_tables():
    gcn = LightGCN(normalized_adjacency(USERS, ITEMS, N_USERS, N_ITEMS), N_USERS, 2)
    user_table, item_table = tables(seed=3)
    base = gcn(user_table, item_table)
    u2, i2 = user_table.clone(), item_table.clone()
    u2[0] += 100.0
    i2[0] -= 100.0
    for a, b in zip(base, gcn(u2, i2)):
        torch.testing.assert_close(a, b)


def test_isolated_item_keeps_only_its_own_layer0_share():
    gcn = LightGCN(normalized_adjacency(USERS, ITEMS, N_USERS, N_ITEMS), N_USERS, 2)
    user_table, item_table = tables(seed=4)
    _, items_out = gcn(user_table, item_table)
    torch.testing.assert_close(items_out[5], item_table[5] / 3)


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_lightgcn_gradients_equal_dense_autograd(n_layers):
    """The custom backward (A @ grad, relying on symmetry) against autograd through dense A."""
    gcn = LightGCN(normalized_adjacency(USERS, ITEMS, N_USERS, N_ITEMS), N_USERS, n_layers)
    a = dense_adjacency(USERS, ITEMS, N_USERS, N_ITEMS).float()
    g = torch.Generator().manual_seed(10 + n_layers)
    w_u, w_i = torch.randn(N_USERS + 1, 4, generator=g), torch.randn(N_ITEMS + 1, 4, generator=g)

    def loss(u_out, i_out):  # a non-linear read-out so the upstream gradient is not constant
        return (w_u * u_out).sum() + (w_i * i_out).pow(2).sum() + (u_out[1:] @ i_out[1:].T).tanh().sum()

    user_table, item_table = tables(seed=5, requires_grad=True)
    got = torch.autograd.grad(loss(*gcn(user_table, item_table)), (user_table, item_table))
    ref_u, ref_i = dense_lightgcn(a, user_table, item_table, n_layers)
    zero = user_table.new_zeros(1, 4)
    want = torch.autograd.grad(loss(torch.cat([zero, ref_u]), torch.cat([zero, ref_i])), (user_table, item_table))
    for got_g, want_g in zip(got, want):
        torch.testing.assert_close(got_g, want_g, atol=1e-5, rtol=1e-4)
    assert torch.all(got[0][0] == 0) and torch.all(got[1][0] == 0)  # padding rows get no gradient
    assert got[1][5].abs().sum() > 0  # the isolated item still learns through layer 0


def test_recommender_graph_scores_use_propagated_embeddings():
    cfg = resolve("directau", None, ["embedding_dim=4"]).net
    adjacency = normalized_adjacency(USERS, ITEMS, N_USERS, N_ITEMS)
    model = Recommender(cfg, N_USERS, N_ITEMS, adjacency).eval()
    a = dense_adjacency(USERS, ITEMS, N_USERS, N_ITEMS).float()
    ref_u, ref_i = dense_lightgcn(a, model.user_table.weight.detach(), model.item_table.weight.detach(), cfg.graph_layers)
    scores = model.score(torch.tensor([1, 2, 3]))
    assert scores.shape == (3, N_ITEMS + 1)
    torch.testing.assert_close(scores[:, 1:], ref_u @ ref_i.T, atol=1e-5, rtol=1e-4)


def _dense_layers_at(a, user_table, item_table, n_layers, nodes):
    x = torch.cat([user_table[1:], item_table[1:]])
    layers = [x]
    for _ in range(n_layers):
        layers.append(a @ layers[-1])
    return torch.stack([layer[nodes] for layer in layers])


@pytest.mark.parametrize("n_layers", [0, 1, 2, 3])
def test_layers_at_equals_dense_layers_with_their_gradients(n_layers):
    """Propagation read at a batch's nodes (the last layer computed at those rows only) against
    dense powers of A, nodes in any order with repeats, the isolated item among them."""
    gcn = LightGCN(normalized_adjacency(USERS, ITEMS, N_USERS, N_ITEMS), N_USERS, n_layers)
    a = dense_adjacency(USERS, ITEMS, N_USERS, N_ITEMS).float()
    nodes = torch.tensor([N_USERS + 4, 0, 0, N_USERS + 1, 2, N_USERS + 1])  # item 5, user 1 twice, item 2 ...
    weights = torch.randn(n_layers + 1, len(nodes), 4, generator=torch.Generator().manual_seed(n_layers))
    user_table, item_table = tables(seed=6, requires_grad=True)
    got = gcn.layers_at(user_table, item_table, nodes)
    want = _dense_layers_at(a, user_table, item_table, n_layers, nodes)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    grads = [torch.autograd.grad((weights * out).tanh().sum(), (user_table, item_table)) for out in (got, want)]
    for got_g, want_g in zip(*grads):
        torch.testing.assert_close(got_g, want_g, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_layers_at_equals_full_propagation_on_a_random_graph(n_layers):
    """A graph where K hops from a few nodes reach part of it, not all: each layer's rows and the
    tables' gradients match the full propagation's."""
    rng = np.random.default_rng(n_layers)
    n_users, n_items = 60, 45
    users = rng.integers(1, n_users + 1, 150)
    items = np.minimum(rng.geometric(0.08, 150), n_items)  # a few popular items, a long tail
    gcn = LightGCN(normalized_adjacency(users, items, n_users, n_items), n_users, n_layers)
    g = torch.Generator().manual_seed(7)
    user_table = torch.randn(n_users + 1, 8, generator=g, requires_grad=True)
    item_table = torch.randn(n_items + 1, 8, generator=g, requires_grad=True)
    nodes = torch.from_numpy(np.concatenate([rng.integers(0, n_users, 6), n_users + rng.integers(0, n_items, 6)]))
    got = gcn.layers_at(user_table, item_table, nodes)
    want = torch.stack([layer[nodes] for layer in gcn.layers(user_table, item_table)])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    weights = torch.randn(got.shape, generator=g)
    grads = [torch.autograd.grad((weights * out).sin().sum(), (user_table, item_table)) for out in (got, want)]
    for got_g, want_g in zip(*grads):
        torch.testing.assert_close(got_g, want_g, atol=1e-5, rtol=1e-4)
    assert (grads[0][0][1:].abs().sum(1) == 0).any()  # users beyond K hops of the nodes get no gradient
