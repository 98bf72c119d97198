"""Packed rows (several prefixes per row, a per-prefix attention mask) encode each prefix exactly as
if it were alone in its own padded row."""

import numpy as np
import pytest
import torch

from conftest import random_sequences_split
from gsau.config import resolve
from gsau.data.batching import SequenceStream
from gsau.trainer import build_model


@pytest.fixture(scope="module")
def split():
    return random_sequences_split(0, 40, 30, 50)


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
def test_packed_equals_padded_in_eval_mode(split, name):
    cfg = resolve(name, None, ["max_len=12"])
    torch.manual_seed(0)
    model = build_model(cfg, split).eval()
    masked_lm = name == "bert4rec"
    packed = SequenceStream(split, 12, 64, "packed", masked_lm=masked_lm, row_widths=(4,))
    padded = SequenceStream(split, 12, 64, "padded", masked_lm=masked_lm)
    g = packed.targets_at[:60]
    chunks = packed.chunks(g, np.random.default_rng(1))
    assert len(chunks) == 2 and max(c.seqs.shape[0] for c in chunks) < len(g)  # really packed
    ref = padded.chunks(g, np.random.default_rng(1))[0]
    with torch.no_grad():
        if not masked_lm:
            a, ta = model.encode_sequences(chunks)
            b, tb = model.encode_sequences([ref])
            # Packed chunks list samples tier by tier; map each back to its sample index.
            tiers = np.searchsorted(packed.row_widths, np.minimum(packed.position[g], 12))
            sample_order = np.concatenate([np.flatnonzero(tiers == k) for k in range(len(packed.row_widths))])
            assert torch.equal(ta, tb[sample_order])
            torch.testing.assert_close(a, b[sample_order], atol=1e-5, rtol=1e-5)
        else:
            # Give the padded layout exactly the packed masks, then compare masked-position outputs.
            tiers = np.searchsorted(packed.row_widths, np.minimum(packed.position[g] + 1, 12))
            sample_order = np.concatenate([np.flatnonzero(tiers == k) for k in range(len(packed.row_widths))])
            ref.masked = torch.zeros_like(ref.masked)
            outs, keys, offset = [], [], 0
            for c in chunks:  # segment ids count from 0 within each chunk (tier)
                h, _ = model.encode_sequences([c])
                seg, pos = c.segments[c.masked], c.positions[c.masked]
                sample = torch.from_numpy(sample_order)[offset + seg]
                offset += len(c.lengths)
                ref.masked[sample, pos] = True
                outs.append(h)
                keys.append(sample * 100 + pos)
            a = torch.cat(outs)[torch.cat(keys).argsort()]
            b, _ = model.encode_sequences([ref])
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
@pytest.mark.parametrize("mode", ["packed", "padded", "prefix"])
def test_final_layer_at_reads_equals_full_final_layer(split, name, mode):
    """Computing the last layer only where samples are read gives the same representations and the
    same gradients as computing it everywhere and indexing (dropout off, so draws do not differ)."""
    results = []
    for at_reads in (True, False):
        cfg = resolve(name, None, ["max_len=12", f"shortcuts={str(at_reads).lower()}",
                                   "hidden_dropout=0", "attn_dropout=0"])
        torch.manual_seed(0)
        model = build_model(cfg, split).train()
        stream = SequenceStream(split, 12, 64, mode, masked_lm=name == "bert4rec", row_widths=(4,))
        chunks = stream.chunks(stream.targets_at[:60], np.random.default_rng(1))
        reps, targets = model.encode_sequences(chunks)
        (reps * torch.linspace(-1, 1, reps.numel()).view_as(reps)).sum().backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        results.append((reps.detach(), targets, grads))
    (a, ta, ga), (b, tb, gb) = results
    assert torch.equal(ta, tb)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert ga.keys() == gb.keys()
    for k in ga:
        torch.testing.assert_close(ga[k], gb[k], atol=1e-5, rtol=1e-4, msg=k)
