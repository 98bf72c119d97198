"""GraphAU as the authors' code computes it (issue #18, item 8), by hand: each layer-0 node aligned
with its partner's layers 1..K and final (combined) embedding, both directions, / 2(K + 1)."""

import math

import pytest
import torch

from gsau.objectives import graphau_terms, uniformity


def unit(degrees):
    a = math.radians(degrees)
    return [math.cos(a), math.sin(a)]


def test_graphau_alignment_by_hand():
    # One user and one item, K = 2 layers of 2-d vectors at chosen angles. For unit vectors
    # ||x - y||^2 = 2 - 2 cos(angle between them).
    users = torch.tensor([[unit(0)], [unit(90)], [unit(180)]])   # layers 0, 1, 2 of the user  [3, 1, 2]
    items = torch.tensor([[unit(60)], [unit(0)], [unit(120)]])   # layers 0, 1, 2 of the item
    # combine = the mean of the layers (LightGCN). The user's mean: (1, 0) + (0, 1) + (-1, 0) = (0, 1) / 3
    # -> direction 90 degrees; the item's: (0.5 + 1 - 0.5, 0.866 + 0 + 0.866) / 3 -> atan(1.732) = 60 degrees.
    terms = graphau_terms([users, items], lambda layers: layers.mean(0), {}, None)

    def d(a, b):  # squared distance of unit vectors at angles a and b
        return 2 - 2 * math.cos(math.radians(a - b))
    # user layer 0 (0 deg) vs the item's layer 1 (0), layer 2 (120), final (60);
    # item layer 0 (60 deg) vs the user's layer 1 (90), layer 2 (180), final (90).
    expected = (d(0, 0) + d(0, 120) + d(0, 60) + d(60, 90) + d(60, 180) + d(60, 90)) / (2 * 3)
    # = (0 + 3 + 1 + (2 - sqrt 3) + 3 + (2 - sqrt 3)) / 6
    assert expected == pytest.approx((11 - 2 * math.sqrt(3)) / 6)
    assert terms["L_GA"].item() == pytest.approx(expected, rel=1e-6)
    # Uniformity stays on layer 0 (a lone row has no pair: 0).
    assert terms["L_GU"].item() == pytest.approx((uniformity(users[0]) + uniformity(items[0])).item())
