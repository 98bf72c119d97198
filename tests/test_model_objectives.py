"""Objectives against their formulas: explicit hand-checked numbers and naive references.

    align(x, y)  = mean_b ||x_b/|x_b| - y_b/|y_b|||^2
    unif(x)      = log mean_{i<j} exp(-2 ||x_i - x_j||^2)        (rows L2-normalised)
    unif(x, y)   = log mean_b exp(-2 ||x_b - y_b||^2)            (rows L2-normalised)
"""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from gsau import objectives as obj


def naive_alignment(x, y):
    total = 0.0
    for a, b in zip(x, y):
        total += ((a / a.norm() - b / b.norm()) ** 2).sum()
    return total / len(x)


def naive_uniformity(x):
    """Double loop over i < j, in float64."""
    x = x.double()
    terms = []
    for i, j in itertools.combinations(range(len(x)), 2):
        d = x[i] / x[i].norm() - x[j] / x[j].norm()
        terms.append(torch.exp(-2 * (d ** 2).sum()))
    return torch.log(torch.stack(terms).mean())


def pdist_uniformity(x):
    return torch.pdist(F.normalize(x, dim=-1)).pow(2).mul(-2).exp().mean().log()


def naive_pair_uniformity(x, y):
    x, y = x.double(), y.double()
    terms = [torch.exp(-2 * ((a / a.norm() - b / b.norm()) ** 2).sum()) for a, b in zip(x, y)]
    return torch.log(torch.stack(terms).mean())


# -- alignment -------------------------------------------------------------------------------

def test_alignment_explicit_numbers():
    # Row 0: (3,4)/5 = (.6,.8) vs (1,0): diff (-.4,.8), squared norm .16 + .64 = .8.
    # Row 1: (0,2) and (0,5) normalise to the same vector: 0.  Mean = .4.
    x = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 5.0]])
    assert obj.alignment(x, y).item() == pytest.approx(0.4, abs=1e-6)


def test_alignment_opposite_unit_vectors_is_four():
    x = torch.tensor([[1.0, 0.0, 0.0]])
    assert obj.alignment(x, -x).item() == pytest.approx(4.0, abs=1e-6)


def test_alignment_matches_naive_reference_and_is_scale_invariant():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(9, 6, generator=g, dtype=torch.float64), torch.randn(9, 6, generator=g, dtype=torch.float64)
    expected = naive_alignment(x, y)
    assert obj.alignment(x, y).item() == pytest.approx(expected.item(), rel=1e-10)
    scales = torch.rand(9, 1, generator=g, dtype=torch.float64) * 10 + 0.1
    assert obj.alignment(x * scales, y).item() == pytest.approx(expected.item(), rel=1e-10)


def test_alignment_gradient_matches_reference():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    got = torch.autograd.grad(obj.alignment(x, y), (x, y))
    want = torch.autograd.grad(naive_alignment(x, y), (x, y))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


# -- uniformity ------------------------------------------------------------------------------

def test_uniformity_two_orthogonal_unit_vectors_is_minus_four():
    # ||e1 - e2||^2 = 2, so log exp(-2 * 2) = -4.
    assert obj.uniformity(torch.eye(2)).item() == pytest.approx(-4.0, abs=1e-5)


def test_uniformity_three_vectors_at_120_degrees_is_minus_six():
    # Unit vectors 120 degrees apart: ||x_i - x_j||^2 = 2 - 2 cos 120 = 3 for every pair.
    angles = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3], dtype=torch.float64)
    x = torch.stack([angles.cos(), angles.sin()], dim=1) * torch.tensor([[1.0], [3.0], [0.5]], dtype=torch.float64)
    assert obj.uniformity(x).item() == pytest.approx(-6.0, abs=1e-9)


def test_uniformity_mixed_pairs_explicit():
    # e1, e2, -e1: pair distances^2 are 2, 4, 2 -> log((2 e^-4 + e^-8) / 3).
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    expected = math.log((2 * math.exp(-4) + math.exp(-8)) / 3)
    assert obj.uniformity(x).item() == pytest.approx(expected, abs=1e-9)


def test_uniformity_of_identical_directions_is_zero():
    x = torch.tensor([[1.0, 2.0], [2.0, 4.0], [0.5, 1.0]])
    assert obj.uniformity(x).item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("n, d", [(2, 3), (7, 5), (16, 8), (33, 4)])
def test_uniformity_matches_double_loop_and_pdist(n, d):
    g = torch.Generator().manual_seed(n * 100 + d)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * 3
    got = obj.uniformity(x).item()
    assert got == pytest.approx(naive_uniformity(x).item(), abs=1e-9)
    assert got == pytest.approx(pdist_uniformity(x).item(), abs=1e-9)


def test_uniformity_float32_close_to_float64_reference():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 32, generator=g)
    assert obj.uniformity(x).item() == pytest.approx(pdist_uniformity(x.double()).item(), abs=1e-4)


def test_uniformity_gradient_matches_pdist_reference():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(10, 6, generator=g, dtype=torch.float64, requires_grad=True)
    (got,) = torch.autograd.grad(obj.uniformity(x), x)
    (want,) = torch.autograd.grad(pdist_uniformity(x), x)
    torch.testing.assert_close(got, want)


def test_uniformity_prefers_spread_out_points():
    clustered = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, -0.1]])
    spread = torch.tensor([[1.0, 0.0], [-0.5, 0.87], [-0.5, -0.87]])
    assert obj.uniformity(spread) < obj.uniformity(clustered)


# -- paired uniformity -------------------------------------------------------------------------

def test_pair_uniformity_explicit_numbers():
    # Pair 0: e1 vs e2 -> ||.||^2 = 2; pair 1: e2 vs 3 e2 -> 0.  log((e^-4 + 1) / 2).
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
    assert obj.pair_uniformity(x, y).item() == pytest.approx(math.log((math.exp(-4) + 1) / 2), abs=1e-6)


def test_pair_uniformity_only_pairs_rows_not_all_combinations():
    # x_0 == y_1 but the pair (0, 1) is not one of the terms: only (0,0) and (1,1) are.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
    # distances^2: (e1, -e1) = 4, (e2, e1) = 2 -> log((e^-8 + e^-4) / 2)
    assert obj.pair_uniformity(x, y).item() == pytest.approx(math.log((math.exp(-8) + math.exp(-4)) / 2), abs=1e-6)


def test_pair_uniformity_keeps_only_the_marked_pairs_and_is_zero_without_any():
    # The three pairs at squared distances 2, 0, 4; leaving out the second: log((e^-4 + e^-8) / 2).
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], requires_grad=True)
    y = torch.tensor([[0.0, 1.0], [0.0, 3.0], [-1.0, 0.0]])
    keep = torch.tensor([True, False, True])
    assert obj.pair_uniformity(x, y, 2.0, keep).item() == pytest.approx(math.log((math.exp(-4) + math.exp(-8)) / 2), abs=1e-6)
    assert obj.pair_uniformity(x, y, 2.0, torch.ones(3, dtype=torch.bool)).item() == pytest.approx(
        obj.pair_uniformity(x, y).item(), abs=1e-7)
    none = obj.pair_uniformity(x, y, 2.0, torch.zeros(3, dtype=torch.bool))
    none.backward()
    assert none.item() == 0.0 and torch.isfinite(x.grad).all()


def test_catalogue_uniformity_by_hand_and_against_a_loop():
    # Items (row 0 padding): e1, e2, -e1. The row e1 with target 1 (e1) meets e2 (distance^2 2)
    # and -e1 (4): log((e^-4 + e^-8) / 2) at t 2.
    items = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    got = obj.catalogue_uniformity(torch.tensor([[5.0, 0.0]]), items, torch.tensor([1]), 2.0)
    assert got.item() == pytest.approx(math.log((math.exp(-4) + math.exp(-8)) / 2), abs=1e-6)
    g = torch.Generator().manual_seed(3)
    x, items = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(9, 5, generator=g, dtype=torch.float64)
    targets = torch.tensor([1, 8, 3, 3, 5, 2])
    want = torch.stack([naive_pair_uniformity(x[[i] * 7], items[[j for j in range(1, 9) if j != targets[i]]]) for i in range(6)])
    assert obj.catalogue_uniformity(x, items, targets).item() == pytest.approx(want.mean().item(), abs=1e-9)


def test_alignment_plus_catalogue_uniformity_at_gamma_t_one_is_a_softmax_over_items_on_cosines():
    """L_SA + (1/t) L_cat = (1/t) * (cross-entropy of the cosines / tau over the items, the target
    left out of the denominator), tau = 1/(2t), up to the constant -log(I - 1)/t."""
    g = torch.Generator().manual_seed(5)
    x, items = torch.randn(7, 4, generator=g, dtype=torch.float64), torch.randn(11, 4, generator=g, dtype=torch.float64)
    targets = torch.tensor([1, 2, 10, 4, 4, 7, 9])
    for t in (2.0, 5.0):
        au = obj.alignment(x, items[targets]) + obj.catalogue_uniformity(x, items, targets, t) / t
        cos = F.normalize(x, dim=-1) @ F.normalize(items[1:], dim=-1).T / (1 / (2 * t))
        own = cos.gather(1, (targets - 1)[:, None]).squeeze(1)
        others = torch.logsumexp(cos.scatter(1, (targets - 1)[:, None], float("-inf")), dim=1)
        dcl = (others - own).mean()
        assert au.item() == pytest.approx((dcl / t - math.log(10 - 1) / t).item(), abs=1e-9)  # 10 items


@pytest.mark.parametrize("n", [1, 5, 40])
def test_pair_uniformity_matches_reference(n):
    g = torch.Generator().manual_seed(n)
    x, y = torch.randn(n, 7, generator=g, dtype=torch.float64), torch.randn(n, 7, generator=g, dtype=torch.float64)
    assert obj.pair_uniformity(x, y).item() == pytest.approx(naive_pair_uniformity(x, y).item(), abs=1e-9)


def test_the_kernel_t_scales_every_uniformity_term_by_hand():
    # One pair at squared distance 2 (e1, e2) and one at 0: log((e^{-2t} + 1) / 2) for each form.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
    for t in (2.0, 5.0):
        assert obj.pair_uniformity(x, y, t).item() == pytest.approx(math.log((math.exp(-2 * t) + 1) / 2), abs=1e-6)
    assert obj.uniformity(x, 5.0).item() == pytest.approx(-10.0, abs=1e-6)  # the one pair, at distance 2
    # Off-diagonal cross pairs: (e1, 3 e2) at 2 and (e2, e2) at 0.
    assert obj.cross_uniformity(x, y, 5.0).item() == pytest.approx(math.log((math.exp(-10) + 1) / 2), abs=1e-6)


def test_cross_uniformity_explicit_numbers():
    # Off-diagonal pairs only: (x0, y1) = (e1, e1) -> 0; (x1, y0) = (e2, -e1) -> 2. The diagonal
    # (x0, y0) = (e1, -e1) at distance 4 is each row's own target and is left out.
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([[-1.0, 0.0], [3.0, 0.0]])
    assert obj.cross_uniformity(x, y).item() == pytest.approx(math.log((1 + math.exp(-4)) / 2), abs=1e-6)
    assert obj.cross_uniformity(x[:1], y[:1]).item() == 0.0


def test_accidental_hits_are_left_out_of_the_cross_terms():
    # Three rows; hits mark (0, 1) and (1, 0): row 1's target is row 0's item. Left: (0, 2), (1, 2),
    # (2, 0), (2, 1) at squared distances 2, 0, 2, 2 (unit vectors e1, e2, e2 against e1, e1, e2).
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    y = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    hits = torch.tensor([[False, True, False], [True, False, False], [False, False, False]])
    t = 2.0
    want = math.log((3 * math.exp(-2 * t) + 1) / 4)
    assert obj.cross_uniformity(x, y, t, hits).item() == pytest.approx(want, abs=1e-6)
    # Per row: row 0 keeps (0, 2) at 2; row 1 keeps (1, 2) at 0; row 2 keeps (2, 0) and (2, 1), both at 2.
    rows = [-2 * t, 0.0, -2 * t]
    assert obj.row_uniformity(x, y, t, hits).item() == pytest.approx(sum(rows) / 3, abs=1e-6)
    # Without a mask, the pair (0, 1), which is row 0's own item, counts: a different value.
    assert obj.cross_uniformity(x, y, t).item() != pytest.approx(want, abs=1e-3)
    # A row with nothing left does not count in the mean: row 0 loses both its pairs.
    alone = hits.clone()
    alone[0] = True
    assert obj.row_uniformity(x, y, t, alone).item() == pytest.approx((0.0 - 2 * t) / 2, abs=1e-6)
    everything = torch.ones(3, 3, dtype=torch.bool)
    assert obj.cross_uniformity(x, y, t, everything).item() == 0.0 == obj.row_uniformity(x, y, t, everything).item()
    # Nothing left to push from: no gradient, and no NaN either.
    xs = x.clone().requires_grad_()
    (obj.cross_uniformity(xs, y, t, everything) + obj.row_uniformity(xs, y, t, everything)).backward()
    assert torch.equal(xs.grad, torch.zeros_like(xs))


def test_unique_item_weights_count_each_item_once():
    # y1 and y2 are one item (weights 1/2 each); y0 another (weight 1). Pairs i != j:
    # (0, 1), (0, 2): e1 against e2 -> 2, each w 1/2; (1, 0): e2 against e1 -> 2, w 1; (1, 2): e2, e2 -> 0, w 1/2;
    # (2, 0): 2, w 1; (2, 1): 0, w 1/2.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    w = torch.tensor([1.0, 0.5, 0.5])
    t, e = 2.0, math.exp(-4.0)
    want = math.log((0.5 * e + 0.5 * e + e + 0.5 + e + 0.5) / 4.0)
    assert obj.cross_uniformity(x, y, t, weights=w).item() == pytest.approx(want, abs=1e-6)
    rows = [math.log((0.5 * e + 0.5 * e) / 1.0), math.log((e + 0.5) / 1.5), math.log((e + 0.5) / 1.5)]
    assert obj.row_uniformity(x, y, t, weights=w).item() == pytest.approx(sum(rows) / 3, abs=1e-6)
    # Equal weights change nothing.
    ones = torch.ones(3)
    assert obj.cross_uniformity(x, y, t, weights=ones).item() == pytest.approx(obj.cross_uniformity(x, y, t).item())


def test_row_uniformity_by_hand():
    # Row 0's only other target: (e1, 3 e1) at 0 -> log 1 = 0; row 1's: (e2, -e1) at 2 -> -2t.
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([[-1.0, 0.0], [3.0, 0.0]])
    assert obj.row_uniformity(x, y, 2.0).item() == pytest.approx((0.0 - 4.0) / 2, abs=1e-6)
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
    per_row = [naive_pair_uniformity(a[[i] * 5], b[[j for j in range(6) if j != i]]) for i in range(6)]
    assert obj.row_uniformity(a, b).item() == pytest.approx(torch.stack(per_row).mean().item(), abs=1e-9)


@pytest.mark.parametrize("n", [2, 5, 17])
def test_cross_uniformity_is_the_pair_term_over_every_pair(n):
    g = torch.Generator().manual_seed(n)
    x, y = torch.randn(n, 7, generator=g, dtype=torch.float64), torch.randn(n, 7, generator=g, dtype=torch.float64)
    rows, cols = zip(*[(i, j) for i in range(n) for j in range(n) if i != j])
    want = naive_pair_uniformity(x[list(rows)], y[list(cols)])
    assert obj.cross_uniformity(x, y).item() == pytest.approx(want.item(), abs=1e-9)


# -- derangement -----------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 3, 4, 5, 7, 16, 31, 64, 257])
def test_derangement_is_a_permutation_without_fixed_points(n):
    for seed in range(25):
        out = obj.derangement(n, torch.Generator().manual_seed(seed))
        assert out.dtype == torch.int64 and out.shape == (n,)
        assert torch.equal(torch.sort(out).values, torch.arange(n)), (n, seed)
        assert not (out == torch.arange(n)).any(), (n, seed, out)


def test_derangement_with_global_rng_has_no_fixed_points():
    torch.manual_seed(0)
    for n in range(2, 60):
        out = obj.derangement(n)
        assert torch.equal(torch.sort(out).values, torch.arange(n))
        assert not (out == torch.arange(n)).any()


def test_derangement_is_seeded_and_random():
    a = obj.derangement(20, torch.Generator().manual_seed(5))
    b = obj.derangement(20, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    seen = {tuple(obj.derangement(20, torch.Generator().manual_seed(s)).tolist()) for s in range(20)}
    assert len(seen) > 15
    # Row 0's partner is not always the same row: every other row is reachable.
    partners = {int(obj.derangement(4, torch.Generator().manual_seed(s))[0]) for s in range(200)}
    assert partners == {1, 2, 3}


@pytest.mark.parametrize("n", [0, 1])
def test_derangement_refuses_fewer_than_two_rows(n):
    with pytest.raises(ValueError):
        obj.derangement(n)


# -- BPR and L2 ----------------------------------------------------------------------------------

def test_bpr_explicit_numbers():
    pos = torch.tensor([2.0, 0.0, -1.0])
    neg = torch.tensor([0.0, 0.0, 1.0])
    # -log sigmoid(d) = log(1 + e^-d) for d = 2, 0, -2
    expected = (math.log1p(math.exp(-2)) + math.log(2) + math.log1p(math.exp(2))) / 3
    assert obj.bpr(pos, neg).item() == pytest.approx(expected, abs=1e-6)


def test_bpr_decreases_as_positive_outscores_negative():
    pos = torch.tensor([0.5, 1.0], requires_grad=True)
    neg = torch.tensor([0.2, 0.3], requires_grad=True)
    obj.bpr(pos, neg).backward()
    assert (pos.grad < 0).all() and (neg.grad > 0).all()
    assert obj.bpr(torch.tensor([10.0]), torch.tensor([0.0])) < obj.bpr(torch.tensor([0.0]), torch.tensor([10.0]))


def test_bpr_is_stable_for_large_margins():
    v = obj.bpr(torch.tensor([-200.0]), torch.tensor([200.0]))
    assert torch.isfinite(v) and v.item() == pytest.approx(400.0, rel=1e-6)


def test_l2_regularizer_explicit_numbers():
    a = torch.tensor([[1.0, 2.0], [0.0, 3.0]])  # squared sum 14
    b = torch.tensor([[1.0, 1.0], [2.0, 0.0]])  # squared sum 6
    assert obj.l2_regularizer(a, b).item() == pytest.approx((14 + 6) / 2)
    assert obj.l2_regularizer(a).item() == pytest.approx(7.0)


def test_l2_regularizer_gradient_is_two_x_over_batch():
    a = torch.tensor([[1.0, -2.0], [0.5, 3.0], [0.0, 1.0]], requires_grad=True)
    obj.l2_regularizer(a).backward()
    torch.testing.assert_close(a.grad, 2 * a.detach() / 3)


@pytest.mark.parametrize("with_bias", [False, True])
def test_full_softmax_ce_matches_torch_cross_entropy_value_and_gradients(with_bias):
    torch.manual_seed(0)
    s = (torch.randn(37, 8) * 3).requires_grad_()
    table = torch.randn(21, 8).requires_grad_()  # row 0 is padding
    bias = torch.randn(21).requires_grad_() if with_bias else None
    targets = torch.randint(1, 21, (37,))
    logits = s @ table[1:].T + (bias[1:] if with_bias else 0)
    expected = torch.nn.functional.cross_entropy(logits, targets - 1)
    want = torch.autograd.grad(expected, [s, table] + ([bias] if with_bias else []))
    ce = obj.FullSoftmaxCE()
    for _ in range(3):  # the reused buffer gives the same answer every step
        got_loss = ce(s, table, targets, bias)
        got = torch.autograd.grad(got_loss, [s, table] + ([bias] if with_bias else []))
        torch.testing.assert_close(got_loss, expected)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)
        assert got[1][0].abs().sum() == 0  # the padding row is never a candidate
    assert ce._buffer is not None and not ce._busy


@pytest.mark.parametrize("with_bias", [False, True])
def test_full_softmax_ce_in_bfloat16_is_close_to_float32(with_bias):
    torch.manual_seed(0)
    s = (torch.randn(64, 16) * 2).requires_grad_()
    table = torch.randn(301, 16).requires_grad_()
    targets = torch.randint(1, 301, (64,))
    bias = torch.randn(301).requires_grad_() if with_bias else None
    params = [s, table] + ([bias] if with_bias else [])
    exact, rounded = obj.FullSoftmaxCE(), obj.FullSoftmaxCE(torch.bfloat16)
    want_loss = exact(s, table, targets, bias)
    want = torch.autograd.grad(want_loss, params)
    for _ in range(2):  # and again on the reused buffer
        got_loss = rounded(s, table, targets, bias)
        got = torch.autograd.grad(got_loss, params)
        assert got_loss.dtype == torch.float32
        assert got_loss.item() != want_loss.item()  # rounded, so the option does something
        assert got_loss.item() == pytest.approx(want_loss.item(), rel=1e-2)
        for g, w in zip(got, want):
            assert g.dtype == torch.float32 and g.shape == w.shape
            assert (g - w).norm() / w.norm() < 2e-2  # about bfloat16's 2^-8 per entry
        assert got[1][0].abs().sum() == 0


def test_full_softmax_ce_keeps_float64_inputs_in_float64():
    torch.manual_seed(0)
    s = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    table = torch.randn(7, 4, dtype=torch.float64)
    targets = torch.randint(1, 7, (9,))
    got = obj.FullSoftmaxCE()(s, table, targets)
    want = torch.nn.functional.cross_entropy(s @ table[1:].T, targets - 1)
    assert got.dtype == torch.float64 and abs(got.item() - want.item()) < 1e-12


def test_full_softmax_ce_never_overwrites_a_buffer_awaiting_backward():
    torch.manual_seed(0)
    table = torch.randn(11, 4).requires_grad_()
    s1, s2 = torch.randn(5, 4).requires_grad_(), torch.randn(5, 4).requires_grad_()
    targets = torch.randint(1, 11, (5,))
    ce = obj.FullSoftmaxCE()
    first, second = ce(s1, table, targets), ce(s2, table, targets)  # two graphs alive at once
    (g1,) = torch.autograd.grad(first, [s1])
    (g2,) = torch.autograd.grad(second, [s2])
    for s, g in ((s1, g1), (s2, g2)):
        (want,) = torch.autograd.grad(torch.nn.functional.cross_entropy(s @ table[1:].T, targets - 1), [s])
        torch.testing.assert_close(g, want)


def test_full_softmax_ce_is_stable_for_huge_scores():
    s = torch.tensor([[1000.0, 0.0], [-1000.0, 0.0]], requires_grad=True)
    table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    loss = obj.FullSoftmaxCE()(s, table, torch.tensor([2, 2]))
    assert torch.isfinite(loss) and abs(loss.item() - 1000.0 / 2) < 1e-3


def test_full_softmax_ce_reuses_one_buffer_as_the_batch_size_varies():
    """BERT4Rec's masked positions vary per step: a smaller step uses the first rows of the buffer
    a larger one allocated, with the right values, and only a larger step allocates again."""
    torch.manual_seed(0)
    table = torch.randn(31, 6).requires_grad_()
    ce = obj.FullSoftmaxCE()
    storages, capacity = [], 0
    for rows in (40, 17, 40, 3, 55, 20):
        capacity = max(capacity, rows)
        s = torch.randn(rows, 6).requires_grad_()
        targets = torch.randint(1, 31, (rows,))
        got = torch.autograd.grad(ce(s, table, targets), [s, table])
        want = torch.autograd.grad(torch.nn.functional.cross_entropy(s @ table[1:].T, targets - 1), [s, table])
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)
        storages.append(ce._buffer.untyped_storage().data_ptr())
        assert ce._buffer.shape == (capacity, 30) and not ce._busy
    assert len(set(storages[:4])) == 1 and storages[4] == storages[5] != storages[0]
