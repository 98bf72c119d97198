"""Attention masking of the sequence encoders (eval mode, so dropout is off).

SASRec is causal: position t sees items 0..t only. BERT4Rec is bidirectional over real items and
mask tokens, and never attends to padding.
"""

import pytest
import torch
import torch.nn.functional as F

from gsau.config import NetConfig, resolve
from gsau.data.batching import SequenceChunk
from gsau.encoders import BERT4Rec, SASRec
from gsau.model import Recommender

D, MAX_LEN, N_ITEMS = 16, 12, 30
ATOL = 1e-5


def make(cls, seed=0):
    torch.manual_seed(seed)
    cfg = NetConfig(embedding_dim=D, max_len=MAX_LEN, n_layers=2, n_heads=2, inner_size=32, hidden_dropout=0.5,
                    attn_dropout=0.5, layer_norm_eps=1e-12)
    enc = cls(cfg).eval()
    table = torch.randn(N_ITEMS + 1, D)
    table[0] = 0
    return enc, table


def all_positions(enc, table, seqs):
    """[B, L, d] SASRec outputs: position t encodes the prefix seqs[:, :t + 1]."""
    return enc.encode(F.embedding(seqs, table))


def hidden(enc, table, seqs, masked):
    """[B, L, d] BERT4Rec head outputs with `masked` positions replaced by the mask token."""
    chunk = SequenceChunk(seqs, (seqs > 0).sum(1), seqs[:, 0], masked=masked)
    return enc.encode(F.embedding(seqs, table), chunk)


def random_seqs(b, length, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, N_ITEMS + 1, (b, length), generator=g)


def changed(a, b):
    return (a - b).abs().max().item() > 1e-3


# -- SASRec ------------------------------------------------------------------------------------

@pytest.mark.parametrize("t", [0, 3, 7, 9])
def test_sasrec_later_item_never_changes_earlier_positions(t):
    enc, table = make(SASRec)
    seqs = random_seqs(4, 10)
    base = all_positions(enc, table, seqs)
    other = seqs.clone()
    other[:, t] = other[:, t] % N_ITEMS + 1  # a different real item at position t
    out = all_positions(enc, table, other)
    torch.testing.assert_close(out[:, :t], base[:, :t], atol=ATOL, rtol=0)
    assert changed(out[:, t], base[:, t])  # the position itself does see it
    if t + 1 < seqs.shape[1]:
        assert changed(out[:, t + 1:], base[:, t + 1:])  # and so do later positions


def test_sasrec_position_t_encodes_exactly_the_prefix():
    enc, table = make(SASRec, seed=2)
    seqs = random_seqs(3, 9, seed=3)
    full = all_positions(enc, table, seqs)
    for t in range(9):
        prefix = all_positions(enc, table, seqs[:, : t + 1])
        torch.testing.assert_close(full[:, t], prefix[:, -1], atol=ATOL, rtol=0)


def test_sasrec_padding_after_length_does_not_change_the_representation():
    enc, table = make(SASRec, seed=4)
    lengths = torch.tensor([1, 4, 6, 9])
    seqs = random_seqs(4, 9, seed=5)
    seqs[torch.arange(9)[None, :] >= lengths[:, None]] = 0
    base = enc(table, seqs, lengths)
    assert base.shape == (4, D)
    # Wider padding, and garbage items after the length, leave every representation unchanged.
    wider = torch.cat([seqs, torch.zeros(4, 3, dtype=seqs.dtype)], dim=1)
    torch.testing.assert_close(enc(table, wider, lengths), base, atol=ATOL, rtol=0)
    garbage = torch.where(seqs == 0, random_seqs(4, 9, seed=6), seqs)
    torch.testing.assert_close(enc(table, garbage, lengths), base, atol=ATOL, rtol=0)
    for b in range(4):  # ... and equal the unpadded sequence on its own
        alone = enc(table, seqs[b: b + 1, : lengths[b]], lengths[b: b + 1])
        torch.testing.assert_close(alone[0], base[b], atol=ATOL, rtol=0)


def test_sasrec_representation_depends_on_the_last_item():
    enc, table = make(SASRec, seed=7)
    seqs = random_seqs(2, 6, seed=8)
    lengths = torch.tensor([6, 6])
    other = seqs.clone()
    other[:, -1] = other[:, -1] % N_ITEMS + 1
    assert changed(enc(table, seqs, lengths), enc(table, other, lengths))


# -- BERT4Rec -----------------------------------------------------------------------------------

@pytest.mark.parametrize("t", [1, 5, 8])
def test_bert4rec_is_bidirectional(t):
    enc, table = make(BERT4Rec)
    seqs = random_seqs(3, 9, seed=9)
    masked = torch.zeros_like(seqs, dtype=torch.bool)
    masked[:, 4] = True
    base = hidden(enc, table, seqs, masked)
    other = seqs.clone()
    other[:, t] = other[:, t] % N_ITEMS + 1
    out = hidden(enc, table, other, masked)
    assert changed(out[:, 0], base[:, 0])  # an earlier position sees a later change
    assert changed(out[:, 4], base[:, 4])  # the masked position sees its context
    assert changed(out[:, -1], base[:, -1])


def test_bert4rec_padding_does_not_affect_real_positions():
    enc, table = make(BERT4Rec, seed=10)
    lengths = torch.tensor([3, 5, 8])
    seqs = random_seqs(3, 8, seed=11)
    real = torch.arange(8)[None, :] < lengths[:, None]
    seqs[~real] = 0
    masked = torch.zeros_like(seqs, dtype=torch.bool)
    masked[torch.arange(3), lengths - 1] = True
    base = hidden(enc, table, seqs, masked)
    # More padding columns.
    wider = torch.cat([seqs, torch.zeros(3, 4, dtype=seqs.dtype)], dim=1)
    wider_mask = torch.cat([masked, torch.zeros(3, 4, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(hidden(enc, table, wider, wider_mask)[:, :8][real], base[real], atol=ATOL, rtol=0)
    # Whatever the padding row of the table holds.
    table2 = table.clone()
    table2[0] = torch.randn(D) * 5
    torch.testing.assert_close(hidden(enc, table2, seqs, masked)[real], base[real], atol=ATOL, rtol=0)
    # Each row equals its unpadded self.
    for b in range(3):
        n = int(lengths[b])
        alone = hidden(enc, table, seqs[b: b + 1, :n], masked[b: b + 1, :n])
        torch.testing.assert_close(alone[0], base[b, :n], atol=ATOL, rtol=0)


def test_bert4rec_masked_position_ignores_the_hidden_item():
    enc, table = make(BERT4Rec, seed=12)
    seqs = random_seqs(2, 7, seed=13)
    masked = torch.zeros_like(seqs, dtype=torch.bool)
    masked[:, 2] = True
    other = seqs.clone()
    other[:, 2] = other[:, 2] % N_ITEMS + 1
    torch.testing.assert_close(hidden(enc, table, other, masked), hidden(enc, table, seqs, masked), atol=ATOL, rtol=0)


def test_bert4rec_forward_reads_a_mask_appended_after_the_history():
    enc, table = make(BERT4Rec, seed=14)
    lengths = torch.tensor([2, 5, 6])
    seqs = random_seqs(3, 7, seed=15)
    seqs[torch.arange(7)[None, :] >= lengths[:, None]] = 0
    out = enc(table, seqs, lengths)
    masked = torch.zeros_like(seqs, dtype=torch.bool)
    masked[torch.arange(3), lengths] = True
    torch.testing.assert_close(out, hidden(enc, table, seqs, masked)[torch.arange(3), lengths], atol=ATOL, rtol=0)
    # Garbage after the mask slot is padding only if it is 0: with zeros it cannot matter.
    wider = torch.cat([seqs, torch.zeros(3, 2, dtype=seqs.dtype)], dim=1)
    torch.testing.assert_close(enc(table, wider, lengths), out, atol=ATOL, rtol=0)


# -- through the Recommender ------------------------------------------------------------------------

@pytest.mark.parametrize("preset", ["sasrec", "bert4rec"])
def test_recommender_scores_are_independent_of_batch_padding(preset):
    cfg = resolve(preset, None, ["embedding_dim=16", "inner_size=32", f"max_len={MAX_LEN}"]).net
    torch.manual_seed(0)
    model = Recommender(cfg, 5, N_ITEMS).eval()
    slot = int(preset == "bert4rec")
    lengths = torch.tensor([2, 7])
    seqs = random_seqs(2, 7 + slot, seed=16)
    seqs[torch.arange(7 + slot)[None, :] >= lengths[:, None]] = 0
    both = model.score(torch.tensor([1, 2]), seqs, lengths)
    assert both.shape == (2, N_ITEMS + 1)
    alone = model.score(torch.tensor([1]), seqs[:1, : 2 + slot], lengths[:1])
    torch.testing.assert_close(both[0], alone[0], atol=1e-4, rtol=1e-4)



# -- training mode: the dropout paths keep the same masking ------------------------------------------

def make_train(cls, fast, seed=0):
    torch.manual_seed(seed)
    enc = cls(NetConfig(embedding_dim=D, max_len=MAX_LEN, n_layers=2, n_heads=2, inner_size=32, hidden_dropout=0.3,
                        attn_dropout=0.3, layer_norm_eps=1e-12, fast_dropout=fast)).train()
    table = torch.randn(N_ITEMS + 1, D)
    table[0] = 0
    return enc, table


def seeded(fn, *args, seed=99):
    torch.manual_seed(seed)  # the same dropout draws for inputs of the same shape
    return fn(*args)


@pytest.mark.parametrize("fast", [True, False])
def test_sasrec_stays_causal_with_dropout(fast):
    enc, table = make_train(SASRec, fast)
    seqs = random_seqs(4, 10, seed=20)
    base = seeded(all_positions, enc, table, seqs)
    assert changed(base, seeded(all_positions, enc, table, seqs, seed=100))  # dropout is active
    other = seqs.clone()
    other[:, 6] = other[:, 6] % N_ITEMS + 1
    out = seeded(all_positions, enc, table, other)
    torch.testing.assert_close(out[:, :6], base[:, :6], atol=ATOL, rtol=0)
    assert changed(out[:, 6:], base[:, 6:])


@pytest.mark.parametrize("fast", [True, False])
def test_bert4rec_ignores_padding_with_dropout(fast):
    enc, table = make_train(BERT4Rec, fast)
    lengths = torch.tensor([3, 6])
    seqs = random_seqs(2, 8, seed=21)
    real = torch.arange(8)[None, :] < lengths[:, None]
    seqs[~real] = 0
    masked = torch.zeros_like(seqs, dtype=torch.bool)
    masked[:, 1] = True
    base = seeded(hidden, enc, table, seqs, masked)
    table2 = table.clone()
    table2[0] = torch.randn(D) * 5  # what a padding key would carry if it were attended
    torch.testing.assert_close(seeded(hidden, enc, table2, seqs, masked)[real], base[real], atol=ATOL, rtol=0)
    other = seqs.clone()
    other[1, 5] = other[1, 5] % N_ITEMS + 1
    assert changed(seeded(hidden, enc, table, other, masked)[1, 0], base[1, 0])  # still bidirectional


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_fast_dropout_drops_about_p_and_keeps_the_expectation(p):
    from gsau.encoders.transformer import dropout
    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = dropout(x, p, True)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(1 - p, abs=0.01)
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    assert y.mean().item() == pytest.approx(1.0, abs=0.02)
    assert torch.equal(dropout(x, p, False), x)
