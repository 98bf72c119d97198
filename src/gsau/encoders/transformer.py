"""Transformer sequence encoders: SASRec (causal, Kang & McAuley 2018) and BERT4Rec (Sun et al. 2019).

The layer follows RecBole's TransformerEncoder, which the paper's code uses: post-LayerNorm,
dropout on attention probabilities and on each residual branch, no dropout inside the
feed-forward block, exact GELU.

Sequences are left-aligned (items first, padding after). With a causal mask a position only sees
itself and earlier positions, which are all real items, so SASRec needs no padding mask and the
fused causal attention kernel applies.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gsau.encoders.base import SequenceEncoder


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout with the keep mask drawn from 16 random bits per element.

    On CPU, torch's Bernoulli sampling (behind nn.Dropout) costs more than the whole Transformer at
    this size; 64-bit random words cut into 16-bit lanes cost a small fraction of it (BENCHMARKS.md,
    "Measurements behind code choices"). The drop probability is
    rounded to a multiple of 2^-16 (0.2 becomes 0.199997), far below any effect on training.
    Draws come from torch's global generator, so seeding and checkpointed RNG state still apply.
    """
    if not training or p == 0.0:
        return x
    n = x.numel()
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
    lanes = words.view(torch.int16)[:n].view(x.shape)  # uniform in [-32768, 32768)
    keep = lanes >= round(p * 65536) - 32768
    return x * keep * (1.0 / (1.0 - p))


class Dropout(nn.Module):
    def __init__(self, p: float, fast: bool = True):
        super().__init__()
        self.p, self.fast = p, fast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast:
            return dropout(x, self.p, self.training)
        return F.dropout(x, self.p, self.training)


class TransformerLayer(nn.Module):
    def __init__(self, d: int, n_heads: int, inner: int, hidden_dropout: float, attn_dropout: float, eps: float,
                 fast_dropout: bool = True):
        super().__init__()
        if d % n_heads:
            raise ValueError(f"hidden size {d} is not a multiple of {n_heads} heads")
        self.n_heads = n_heads
        # Separate projections (not one fused Linear) so Xavier init sees the paper's fan sizes.
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.attn_out = nn.Linear(d, d)
        self.attn_norm = nn.LayerNorm(d, eps=eps)
        self.ffn_in, self.ffn_out = nn.Linear(d, inner), nn.Linear(inner, d)
        self.ffn_norm = nn.LayerNorm(d, eps=eps)
        self.hidden_dropout = Dropout(hidden_dropout, fast_dropout)
        self.attn_dropout = attn_dropout
        self.fast_dropout = fast_dropout

    def forward(self, x: torch.Tensor, causal: bool, attend: torch.Tensor | None = None, reads=None) -> torch.Tensor:
        """x [B, L, d]; attend: optional bool [B, 1, 1 or L, L], True where a key may be attended.

        With `reads` (rows, cols) the output [n, d] at those positions only. Training reads one
        position per prefix (its last token), so in the final layer the feed-forward block, the
        output projection and both norms, most of a layer's work, run there alone; equal to
        forward(x)[rows, cols] apart from dropout draws."""
        b, length, d = x.shape
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        qkv = F.linear(x, weight, bias).view(b, length, 3, self.n_heads, d // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        if self.training and self.attn_dropout > 0 and self.fast_dropout:
            # Explicit attention so the probabilities' dropout uses the cheap mask above.
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
            if attend is not None:
                scores = scores.masked_fill(~attend, float("-inf"))
            elif causal:
                future = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)
                scores = scores.masked_fill(future, float("-inf"))
            a = dropout(scores.softmax(dim=-1), self.attn_dropout, True) @ v
        else:
            p = self.attn_dropout if self.training else 0.0
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=attend, is_causal=causal and attend is None,
                                               dropout_p=p)
        a = a.transpose(1, 2).reshape(b, length, d)
        if reads is not None:
            x, a = x[reads], a[reads]
        x = self.attn_norm(x + self.hidden_dropout(self.attn_out(a)))
        h = self.ffn_out(F.gelu(self.ffn_in(x)))
        return self.ffn_norm(x + self.hidden_dropout(h))


def segment_mask(segments: torch.Tensor, causal: bool) -> torch.Tensor:
    """[R, 1, W, W] bool for packed rows: a token attends only to tokens of its own sample
    (segment), and with `causal` only to earlier ones. Padding (segment -1) attends to padding, so
    no row is empty and the softmax stays finite."""
    mask = segments[:, :, None] == segments[:, None, :]
    if causal:
        width = segments.shape[1]
        mask &= torch.ones(width, width, dtype=torch.bool, device=segments.device).tril()
    return mask.unsqueeze(1)


class _Transformer(SequenceEncoder):
    """Item + position embeddings, LayerNorm, dropout, then the Transformer layers."""

    def __init__(self, cfg):
        """`cfg`: a NetConfig (embedding_dim, max_len, n_layers, n_heads, inner_size,
        hidden_dropout, attn_dropout, layer_norm_eps, fast_dropout)."""
        super().__init__()
        d, eps = cfg.embedding_dim, cfg.layer_norm_eps
        self.max_len = cfg.max_len
        self.position = nn.Embedding(cfg.max_len, d)
        self.input_norm = nn.LayerNorm(d, eps=eps)
        self.input_dropout = Dropout(cfg.hidden_dropout, cfg.fast_dropout)
        self.layers = nn.ModuleList(TransformerLayer(d, cfg.n_heads, cfg.inner_size, cfg.hidden_dropout,
                                                     cfg.attn_dropout, eps, cfg.fast_dropout)
                                    for _ in range(cfg.n_layers))

    @classmethod
    def from_config(cls, cfg) -> "_Transformer":
        return cls(cfg)

    def embed(self, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        pos = self.position.weight[: tokens.shape[1]] if positions is None else self.position(positions)
        return self.input_dropout(self.input_norm(tokens + pos))

    def _run(self, x: torch.Tensor, causal: bool, attend: torch.Tensor | None, reads) -> torch.Tensor:
        """The layers; with `reads` (rows, cols) the final one is computed at those positions only."""
        for layer in self.layers[:-1]:
            x = layer(x, causal=causal, attend=attend)
        return self.layers[-1](x, causal=causal, attend=attend, reads=reads)


class SASRec(_Transformer):
    """Causal encoder; a prefix is represented by the output at its last position."""

    def read_positions(self, chunk):
        # Packed rows: `last` is each sample's flat row * width + column index.
        if chunk.segments is not None:
            width = chunk.seqs.shape[1]
            return chunk.last // width, chunk.last % width, chunk.targets
        return torch.arange(len(chunk.seqs), device=chunk.seqs.device), chunk.lengths - 1, chunk.targets

    def encode(self, tokens: torch.Tensor, chunk=None, reads=None) -> torch.Tensor:
        """For packed rows, `chunk` gives each token's position within its sample and its sample
        id (segment), and attention stays within a sample."""
        positions = segments = None
        if chunk is not None:
            positions, segments = chunk.positions, chunk.segments
        x = self.embed(tokens, positions)
        attend = None if segments is None else segment_mask(segments, causal=True)
        return self._run(x, True, attend, reads)

    def forward(self, item_table: torch.Tensor, seqs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(seqs.shape[0], device=seqs.device)  # shape, not len(): traceable for export
        return self.encode(F.embedding(seqs, item_table), reads=(rows, lengths - 1))


class BERT4Rec(_Transformer):
    """Bidirectional encoder with a learned mask token; a masked position predicts its item."""

    masked_lm = True
    needs_free_slot = True  # the next item is predicted at a mask token appended after the history

    def __init__(self, cfg):
        super().__init__(cfg)
        d, eps = cfg.embedding_dim, cfg.layer_norm_eps
        self.mask_token = nn.Parameter(torch.zeros(1, d))
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d, eps=eps))

    def reset_extra_parameters(self, init) -> None:
        init(self.mask_token)

    def read_positions(self, chunk):
        rows, cols = chunk.masked.nonzero(as_tuple=True)
        return rows, cols, chunk.seqs[rows, cols]

    def encode(self, tokens: torch.Tensor, chunk, reads=None) -> torch.Tensor:
        return self._encode(tokens, chunk.seqs, chunk.masked, chunk.positions, chunk.segments, reads)

    def _encode(self, tokens, seqs, masked, positions=None, segments=None, reads=None) -> torch.Tensor:
        tokens = torch.where(masked.unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        x = self.embed(tokens, positions)
        if segments is None:
            attend = ((seqs > 0) | masked)[:, None, None, :]
        else:
            attend = segment_mask(segments, causal=False)
        return self.head(self._run(x, False, attend, reads))

    def forward(self, item_table: torch.Tensor, seqs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(seqs.shape[0], device=seqs.device)  # shape, not len(): traceable for export
        masked = torch.zeros_like(seqs, dtype=torch.bool)
        masked[rows, lengths] = True
        return self._encode(F.embedding(seqs, item_table), seqs, masked, reads=(rows, lengths))
