"""Full-ranking metrics: pessimistic ties, padding column, exclusion mask."""

import math

import pytest
import torch

from gsau.metrics import metrics_from_ranks, ranking_metrics, target_ranks


def approx(x):
    return pytest.approx(x, abs=1e-9)


# Row 0: target 2 scores 0.5; items 1 (0.9), 3 (0.7) and 4 (0.5, a tie) are >= it -> rank 4.
#        Column 0 (padding) holds 100 and must not count.
# Row 1: target 2 scores 0.8, the best real item -> rank 1 (column 0's 50 ignored).
SCORES = torch.tensor([[100.0, 0.9, 0.5, 0.7, 0.5, 0.1],
                       [50.0, 0.2, 0.8, 0.3, 0.1, 0.4]])
TARGETS = torch.tensor([2, 2])


def test_hand_computed_ranks_and_metrics():
    assert target_ranks(SCORES, TARGETS).tolist() == [4, 1]
    m = ranking_metrics(SCORES, TARGETS, ks=[1, 3, 5])
    # recall: rank 4 is a hit only at K=5; rank 1 everywhere.
    assert m["recall@1"] == approx(0.5)  # (0 + 1) / 2
    assert m["recall@3"] == approx(0.5)  # (0 + 1) / 2
    assert m["recall@5"] == approx(1.0)  # (1 + 1) / 2
    # ndcg = 1 / log2(rank + 1): rank 1 -> 1, rank 4 -> 1 / log2(5) = 0.4306765581
    assert m["ndcg@1"] == approx(0.5)
    assert m["ndcg@3"] == approx(0.5)
    assert m["ndcg@5"] == approx((1 + 0.4306765580733931) / 2)  # 0.7153382790
    # mrr = 1 / rank: rank 4 -> 0.25
    assert m["mrr@3"] == approx(0.5)
    assert m["mrr@5"] == approx(0.625)  # (1 + 0.25) / 2
    assert set(m) == {f"{n}@{k}" for n in ("recall", "ndcg", "mrr") for k in (1, 3, 5)}
    assert all(isinstance(v, float) for v in m.values())


def test_ties_count_against_the_target():
    scores = torch.tensor([[0.0, 0.5, 0.5, 0.5, 0.2]])
    # Two other items tie with target 1 -> rank 3, whichever of the tied items is the target.
    for t in (1, 2, 3):
        assert target_ranks(scores, torch.tensor([t])).tolist() == [3]


def test_all_equal_scores_give_near_zero_metrics():
    n_items = 100
    scores = torch.ones(4, n_items + 1)
    targets = torch.tensor([1, 17, 50, 100])
    # Every other real item ties: rank = 1 + 99 = 100 for every row.
    assert target_ranks(scores, targets).tolist() == [100] * 4
    m = ranking_metrics(scores, targets, ks=[10, 50, 100])
    for k in (10, 50):
        assert m[f"recall@{k}"] == 0 and m[f"ndcg@{k}"] == 0 and m[f"mrr@{k}"] == 0
    assert m["recall@100"] == approx(1.0)
    assert m["mrr@100"] == approx(0.01)
    assert m["ndcg@100"] == approx(1 / math.log2(101))  # 0.1501929...


def test_padding_column_is_never_ranked():
    scores = torch.tensor([[0.0, 0.3, 0.6, 0.1]])
    target = torch.tensor([2])
    assert target_ranks(scores, target).tolist() == [1]
    scores[0, 0] = 1e9
    assert target_ranks(scores, target).tolist() == [1]
    # Without a padding column, column 0 is an ordinary item and beats the target.
    assert target_ranks(scores, target, pad_index=None).tolist() == [2]
    # Another padding index.
    scores = torch.tensor([[0.1, 0.3, 0.6, 9.0]])
    assert target_ranks(scores, target, pad_index=3).tolist() == [1]


def test_exclusion_removes_items_but_never_the_target():
    scores = torch.tensor([[0.0, 0.9, 0.8, 0.5, 0.3]])
    target = torch.tensor([3])
    assert target_ranks(scores, target).tolist() == [3]  # items 1, 2 beat it

    def mask(*items):
        m = torch.zeros(1, 5, dtype=torch.bool)
        m[0, list(items)] = True
        return m

    assert target_ranks(scores, target, mask(1)).tolist() == [2]
    assert target_ranks(scores, target, mask(4)).tolist() == [3]  # a lower item: no change
    # The target in the mask is still ranked: it is where the hit is counted.
    assert target_ranks(scores, target, mask(1, 2, 3)).tolist() == [1]
    m = ranking_metrics(scores, target, ks=[1], exclude=mask(1, 2, 3))
    assert m == {"recall@1": 1.0, "ndcg@1": 1.0, "mrr@1": 1.0}
    # The mask only applies to its own row.
    two = torch.cat([scores, scores])
    ex = torch.cat([mask(1, 2), mask()])
    assert target_ranks(two, torch.tensor([3, 3]), ex).tolist() == [1, 3]


def test_caller_tensors_are_not_modified():
    scores = SCORES.clone()
    ex = torch.zeros_like(scores, dtype=torch.bool)
    ex[0, 1] = True
    target_ranks(scores, TARGETS, ex)
    assert torch.equal(scores, SCORES)
    assert ex.sum() == 1


def test_metrics_from_ranks_per_row():
    m = metrics_from_ranks(torch.tensor([1, 2, 3, 11]), ks=[10])
    assert m["recall@10"].tolist() == [1.0, 1.0, 1.0, 0.0]
    # 1/log2(2) = 1, 1/log2(3) = 0.6309297536, 1/log2(4) = 0.5, miss -> 0
    assert m["ndcg@10"].tolist() == pytest.approx([1.0, 0.6309297535714575, 0.5, 0.0])
    assert m["mrr@10"].tolist() == pytest.approx([1.0, 0.5, 1 / 3, 0.0])


def test_shape_errors():
    with pytest.raises(ValueError, match="scores must be"):
        target_ranks(torch.zeros(3), torch.tensor([1]))
    with pytest.raises(ValueError, match="scores must be"):
        target_ranks(torch.zeros(2, 4), torch.tensor([1, 2, 3]))
