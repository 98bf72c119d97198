"""Big-catalogue sequence losses: the sampled softmax with logQ correction and the chunked exact
CE, each against a plain reference (the one-buffer CE, a hand computation)."""

import math

import numpy as np
import pytest
import torch

from gsau import objectives as obj
from gsau.config import resolve
from gsau.data.synth import synthesize
from gsau.errors import ConfigError
from gsau.trainer import Trainer, make_streams, prepare


def problem(rows=23, items=40, d=6, bias=False, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(rows, d, generator=g, dtype=dtype) * 2).requires_grad_()
    table = torch.randn(items + 1, d, generator=g, dtype=dtype).requires_grad_()
    b = torch.randn(items + 1, generator=g, dtype=dtype).requires_grad_() if bias else None
    targets = torch.randint(1, items + 1, (rows,), generator=g)
    return s, table, targets, b


def grads(loss, s, table, bias):
    return torch.autograd.grad(loss, [s, table] + ([bias] if bias is not None else []))


# -- sampled softmax ------------------------------------------------------------------------------

@pytest.mark.parametrize("with_bias", [False, True])
def test_every_item_sampled_without_correction_is_the_exact_ce(with_bias):
    s, table, targets, bias = problem(bias=with_bias)
    every = torch.randperm(40) + 1  # each item once, in any order; the target among them is masked
    got = obj.sampled_softmax_ce(s, table, targets, every, None, bias)
    want = obj.FullSoftmaxCE()(s, table, targets, bias)
    torch.testing.assert_close(got, want)
    for g, w in zip(grads(got, s, table, bias), grads(obj.FullSoftmaxCE()(s, table, targets, bias), s, table, bias)):
        torch.testing.assert_close(g, w)


def test_log_q_correction_equals_a_hand_computation():
    s, table, targets, _ = problem(rows=4, items=9, d=3, dtype=torch.float64)
    candidates = torch.tensor([3, 7, 7, 1, 9])
    q = torch.tensor([0.0, 0.30, 0.05, 0.10, 0.05, 0.10, 0.10, 0.15, 0.05, 0.10], dtype=torch.float64)
    log_q = (len(candidates) * q[candidates]).log()
    got = obj.sampled_softmax_ce(s, table, targets, candidates, log_q).item()
    S, T = s.detach().tolist(), table.detach().tolist()
    total = 0.0
    for b, y in enumerate(targets.tolist()):
        score = lambda i: sum(x * w for x, w in zip(S[b], T[i]))  # noqa: E731
        z = math.exp(score(y))  # the target: in the set for sure, not corrected
        for c in candidates.tolist():
            if c != y:
                z += math.exp(score(c)) / (len(candidates) * q[c].item())
        total += math.log(z) - score(y)
    assert got == pytest.approx(total / 4, rel=1e-12)


def test_accidental_hits_are_masked():
    s, table, _, _ = problem(rows=3, items=9, d=4)
    targets = torch.tensor([2, 5, 5])
    candidates = torch.tensor([5, 2, 8, 5])
    got = obj.sampled_softmax_ce(s, table, targets, candidates)
    # Row 0 keeps candidates 5, 8, 5; rows 1 and 2 keep 2, 8 (both copies of 5 go).
    rows = []
    for b, keep in enumerate(([5, 8, 5], [2, 8], [2, 8])):
        logits = torch.cat([(s[b] * table[targets[b]]).sum().view(1), s[b] @ table[keep].T])
        rows.append(torch.logsumexp(logits, 0) - logits[0])
    torch.testing.assert_close(got, torch.stack(rows).mean())
    # The target's row of the table gets no push-down from its own copies among the candidates.
    (g_table,) = torch.autograd.grad(obj.sampled_softmax_ce(s[1:2], table, targets[1:2], candidates), [table])
    (g_alone,) = torch.autograd.grad(obj.sampled_softmax_ce(s[1:2], table, targets[1:2], candidates[[1, 2]]), [table])
    torch.testing.assert_close(g_table, g_alone)


def test_uniform_candidates_estimate_the_exact_ce_as_they_grow():
    s, table, targets, _ = problem(rows=8, items=30, d=4, dtype=torch.float64)
    exact = obj.FullSoftmaxCE()(s, table, targets).item()
    torch.manual_seed(0)
    loss = obj.SampledSoftmaxCE(30, 60_000, "uniform")
    assert loss(s, table, targets).item() == pytest.approx(exact, rel=2e-3)
    few = obj.SampledSoftmaxCE(30, 5, "uniform")
    assert abs(few(s, table, targets).item() - exact) > 1e-3  # a handful of candidates is only an estimate


def test_uniform_draws_cover_the_items_with_the_right_log_q():
    torch.manual_seed(0)
    candidates, log_q = obj.SampledSoftmaxCE(50, 20_000, "uniform").draw("cpu")
    assert candidates.min() == 1 and candidates.max() == 50
    assert torch.bincount(candidates, minlength=51)[1:].min() > 300  # about 400 each
    torch.testing.assert_close(log_q, torch.full((20_000,), math.log(20_000 / 50)))


def test_popularity_draws_follow_the_targets_seen_so_far():
    torch.manual_seed(0)
    loss = obj.SampledSoftmaxCE(4, 40_000, "popularity")
    s, table, _, _ = problem(rows=10, items=4, d=3)
    loss(s, table, torch.tensor([1] * 7 + [2] * 3))  # draws from 1 + counts = uniform, then counts
    assert loss.target_counts.tolist() == [0, 7, 3, 0, 0]
    candidates, log_q = loss.draw("cpu")
    weights = torch.tensor([8.0, 4.0, 1.0, 1.0]) / 14  # 1 + counts, normalised
    share = torch.bincount(candidates, minlength=5)[1:] / 40_000
    torch.testing.assert_close(share, weights, atol=0.01, rtol=0)
    torch.testing.assert_close(log_q, (40_000 * weights[candidates - 1]).log())
    assert "target_counts" in dict(loss.named_buffers())  # saved with the model's weights


# -- chunked exact CE -----------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [1, 7, 40, 1000])
@pytest.mark.parametrize("with_bias", [False, True])
def test_chunked_ce_equals_the_one_buffer_ce(chunk, with_bias):
    s, table, targets, bias = problem(bias=with_bias, dtype=torch.float64)
    got = obj.ChunkedSoftmaxCE(chunk)(s, table, targets, bias)
    want = obj.FullSoftmaxCE()(s, table, targets, bias)
    assert abs(got.item() - want.item()) < 1e-12
    for g, w in zip(grads(got, s, table, bias), grads(obj.FullSoftmaxCE()(s, table, targets, bias), s, table, bias)):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-14)
    # float32 too, to float32 rounding
    s32, t32, b32 = s.detach().float().requires_grad_(), table.detach().float().requires_grad_(), \
        None if bias is None else bias.detach().float().requires_grad_()
    got32 = obj.ChunkedSoftmaxCE(chunk)(s32, t32, targets, b32)
    torch.testing.assert_close(got32, want.float())
    for g, w in zip(grads(got32, s32, t32, b32), grads(obj.FullSoftmaxCE()(s32, t32, targets, b32), s32, t32, b32)):
        torch.testing.assert_close(g, w)


def test_chunked_ce_is_stable_for_huge_scores_across_chunks():
    s = torch.tensor([[1000.0, 0.0], [-1000.0, 0.0]], requires_grad=True)
    table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.0]])
    targets = torch.tensor([2, 2])
    got = obj.ChunkedSoftmaxCE(1)(s, table, targets)
    torch.testing.assert_close(got, obj.FullSoftmaxCE()(s, table, targets))
    assert torch.isfinite(torch.autograd.grad(got, [s])[0]).all()


# -- in the model and the config ----------------------------------------------------------------------

SETS = ["batch_size=64", "eval_batch_size=256", "patience=100", "ks=[10]", "metric=ndcg@10", "n_layers=1",
        "max_len=8", "inner_size=32", "embedding_dim=16", "hidden_dropout=0.1", "attn_dropout=0.1"]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    directory = tmp_path_factory.mktemp("synth")
    synthesize(120, 80, 2_000, seed=0).data.save(directory)
    return directory


def first_gradients(dataset, *sets):
    """The first batch's loss terms and gradients of a model (same seed, same batch)."""
    cfg = resolve("gsau-rec", None, SETS + [f"dataset={dataset}", *sets])
    split, model = prepare(cfg)
    graph, seq = make_streams(cfg, split)
    rng = np.random.default_rng(0)
    torch.manual_seed(1)
    total, terms = model.loss(next(graph.batches(rng)), next(seq.batches(rng)))
    total.backward()
    return terms, model


@pytest.mark.usefixtures("one_thread")
def test_chunked_ce_in_the_model_gives_the_one_buffer_ce_gradients(small):
    one, model_one = first_gradients(small)
    chunked, model_chunked = first_gradients(small, "ce_chunk_items=13")
    assert isinstance(model_chunked._softmax_ce, obj.ChunkedSoftmaxCE)
    torch.testing.assert_close(chunked["L_CE"], one["L_CE"])
    for (name, a), (_, b) in zip(model_one.named_parameters(), model_chunked.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name, rtol=1e-4, atol=1e-7)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("sampling", ["uniform", "popularity"])
def test_sampled_ce_trains_and_resumes_bit_exact(small, tmp_path, sampling):
    sets = SETS + [f"dataset={small}", "sequence_loss=sampled_ce", f"sampling={sampling}",
                   "sampled_negatives=20"]
    whole = Trainer(resolve("gsau-rec", None, sets + ["epochs=2"]), tmp_path / "whole", progress=False,
                    echo=lambda line: None)
    report = whole.run()
    assert np.isfinite(report["test"]["ndcg@10"])
    Trainer(resolve("gsau-rec", None, sets + ["epochs=1"]), tmp_path / "split", progress=False,
            echo=lambda line: None).run()
    resumed = Trainer(resolve("gsau-rec", None, sets + ["epochs=2"]), tmp_path / "split", progress=False,
                      echo=lambda line: None)
    resumed.run(resume=True)
    a, b = torch.load(tmp_path / "whole" / "last.pt"), torch.load(tmp_path / "split" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    assert ("_softmax_ce.target_counts" in a["model"]) == (sampling == "popularity")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


@pytest.mark.parametrize("sets, message", [
    (["sequence_loss=sampled_ce", "sampled_negatives=0"], "sampled_negatives must be at least 1"),
    (["ce_chunk_items=-1"], "ce_chunk_items must be >= 0"),
    (["sequence_loss=sampled_ce", "ce_dtype=bfloat16"], "ce_dtype=bfloat16 is for the one-buffer"),
    (["ce_chunk_items=100", "ce_dtype=bfloat16"], "ce_dtype=bfloat16 is for the one-buffer"),
    (["sampling=often"], "sampling must be uniform or popularity"),
])
def test_config_refuses_bad_settings(sets, message):
    with pytest.raises(ConfigError, match=message):
        resolve("gsau-rec", None, sets)


def test_sampled_ce_presets_build_the_sampled_loss():
    cfg = resolve("sasrec", None, ["sequence_loss=sampled_ce", "sampling=popularity", "sampled_negatives=7"])
    loss = obj.sequence_ce(cfg.net, 100)
    assert isinstance(loss, obj.SampledSoftmaxCE) and (loss.negatives, loss.sampling) == (7, "popularity")
    assert isinstance(obj.sequence_ce(resolve("sasrec").net, 100), obj.FullSoftmaxCE)


@pytest.mark.usefixtures("one_thread")
def test_bert4rec_keeps_its_output_bias_under_the_sampled_softmax(small):
    """BERT4Rec's output layer has a bias per item; with sampled_ce it is trained at the targets and
    the drawn candidates alone, and ranking reads it as under the exact CE."""
    cfg = resolve("bert4rec", None, SETS + [f"dataset={small}", "sequence_loss=sampled_ce", "sampled_negatives=5"])
    split, model = prepare(cfg)
    assert model.output_bias is not None
    graph, seq = make_streams(cfg, split)
    torch.manual_seed(0)
    chunks = next(seq.batches(np.random.default_rng(0)))
    total, _ = model.loss(None, chunks)
    total.backward()
    touched = torch.nonzero(model.output_bias.grad).flatten()
    _, targets = model.encode_sequences(chunks)
    assert set(targets.tolist()) <= set(touched.tolist()) and len(touched) <= len(set(targets.tolist())) + 5
    with torch.no_grad():
        model.output_bias.copy_(torch.arange(split.n_items + 1, dtype=torch.float32))
        model.eval()
        users = np.arange(1, 4)
        biased = model.score_histories(users, *split.history("test"))
        model.output_bias.zero_()
        plain = model.score_histories(users, *split.history("test"))
    torch.testing.assert_close(biased - plain, torch.arange(split.n_items + 1, dtype=torch.float32).expand_as(plain))
