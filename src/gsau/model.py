"""The recommender: one shared embedding table, optional graph and sequential encoders, and the
objectives that tie them together. Every preset (GSAU, GSAU (rec), SASRec (u), DirectAU, ...) is a
`ModelConfig` over these parts; nothing here is specific to one variant.

    L = L_GA + L_SA + gamma (L_GU + L_SU)        (paper, Eq. for the joint objective)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gsau import objectives as obj
from gsau.config import ModelConfig
from gsau.data.batching import SequenceChunk
from gsau.encoders import BERT4Rec, LightGCN, SASRec


class Recommender(nn.Module):
    def __init__(self, cfg: ModelConfig, n_users: int, n_items: int, adjacency: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.n_users, self.n_items = n_users, n_items
        d = cfg.embedding_dim
        # The shared table (index 0 = padding). Users only have vectors when a graph encoder uses them.
        self.item_table = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.user_table = nn.Embedding(n_users + 1, d, padding_idx=0) if cfg.graph_encoder else None
        self.graph = None
        if cfg.graph_encoder:
            if adjacency is None:
                raise ValueError("a graph encoder needs the training adjacency")
            self.graph = LightGCN(adjacency, n_users, cfg.graph_layers)
        self.sequence = None
        if cfg.sequence_encoder:
            encoder = SASRec if cfg.sequence_encoder == "sasrec" else BERT4Rec
            self.sequence = encoder(d, cfg.max_len, cfg.n_layers, cfg.n_heads, cfg.inner_size,
                                    cfg.hidden_dropout, cfg.attn_dropout, cfg.layer_norm_eps, cfg.fast_dropout)
        self.output_bias = None
        if cfg.sequence_encoder == "bert4rec" and cfg.sequence_loss == "ce":
            self.output_bias = nn.Parameter(torch.zeros(n_items + 1))
        self._scoring_cache = None
        self._softmax_ce = obj.FullSoftmaxCE(getattr(torch, cfg.ce_dtype))
        self.reset_parameters()

    # -- initialisation --------------------------------------------------------------------
    def reset_parameters(self) -> None:
        xavier = self.cfg.init == "xavier_normal"
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                if xavier:
                    nn.init.xavier_normal_(m.weight)
                elif self.sequence is not None:  # Transformer baselines: BERT-style init
                    nn.init.normal_(m.weight, 0.0, 0.02)
                else:  # LightGCN baseline: RecBole's Xavier-uniform tables
                    nn.init.xavier_uniform_(m.weight)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if isinstance(self.sequence, BERT4Rec):
            if xavier:
                nn.init.xavier_normal_(self.sequence.mask_token)
            else:
                nn.init.normal_(self.sequence.mask_token, 0.0, 0.02)
        with torch.no_grad():
            for table in (self.item_table, self.user_table):
                if table is not None:
                    table.weight[0].zero_()

    # -- training objectives -------------------------------------------------------------------
    def loss(self, graph_batch: dict | None, seq_chunks: list[SequenceChunk] | None):
        """Total loss of one joint step and its named terms (floats, for logging)."""
        self._scoring_cache = None
        terms: dict[str, torch.Tensor] = {}
        if graph_batch is not None:
            terms.update(self.graph_terms(graph_batch))
        if seq_chunks is not None:
            terms.update(self.sequence_terms(seq_chunks))
        return self.total(terms), {name: v.detach() for name, v in terms.items()}

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of named terms: L = L_GA + L_SA + gamma (L_GU + L_SU) (+ L_CE, L_BPR,
        bpr_reg L_reg); every term not named here has weight 1."""
        weights = {"L_GU": self.cfg.gamma, "L_SU": self.cfg.gamma, "L_reg": self.cfg.bpr_reg}
        return sum(weights.get(name, 1.0) * value for name, value in terms.items())

    def _node_rows(self, users: torch.Tensor, items: torch.Tensor):
        return users - 1, self.n_users + items - 1

    def graph_terms(self, batch: dict) -> dict[str, torch.Tensor]:
        users, items = self.user_table.weight, self.item_table.weight
        u, i = self._node_rows(batch["users"], batch["items"])
        kind = self.cfg.graph_loss
        nodes = [u, i] if kind != "bpr" else [u, i, self.n_users + batch["negatives"] - 1]
        if self.cfg.shortcuts:  # each layer read at the batch's nodes, the last computed there alone
            layers = self.graph.layers_at(users, items, torch.cat(nodes)).split([len(r) for r in nodes], dim=1)
        else:
            full = self.graph.layers(users, items)
            layers = [torch.stack([e[r] for e in full]) for r in nodes]
        if kind == "layer_au":  # GraphAU: align each layer-0 node with its partner's layer-k view
            lu, li = layers
            align = sum(obj.alignment(lu[0], li[k]) + obj.alignment(li[0], lu[k]) for k in range(1, len(lu))) / 2
            return {"L_GA": align / (len(lu) - 1), "L_GU": obj.uniformity(lu[0]) + obj.uniformity(li[0])}
        final = [rows.mean(0) for rows in layers]  # LightGCN's final embedding: the mean of layers 0..K
        if kind == "au":  # DirectAU on the final LightGCN embeddings
            eu, ei = final
            return {"L_GA": obj.alignment(eu, ei), "L_GU": obj.uniformity(eu) + obj.uniformity(ei)}
        # BPR with one negative per pair; the L2 term acts on the layer-0 (table) rows
        eu, ep, en = final
        return {"L_BPR": obj.bpr((eu * ep).sum(-1), (eu * en).sum(-1)),
                "L_reg": obj.l2_regularizer(users[batch["users"]], items[batch["items"]], items[batch["negatives"]])}

    def encode_sequences(self, chunks: list[SequenceChunk]) -> tuple[torch.Tensor, torch.Tensor]:
        """(representations [n, d], target items [n]) over all chunks of a batch."""
        # One lookup for every chunk: each lookup's backward zero-fills a whole table-sized gradient.
        flat = torch.cat([c.seqs.reshape(-1) for c in chunks])
        looked_up = F.embedding(flat, self.item_table.weight).split([c.seqs.numel() for c in chunks])
        reps, targets = [], []
        for c, tokens in zip(chunks, looked_up):
            tokens = tokens.view(*c.seqs.shape, -1)
            # Where each sample is read: BERT4Rec at its masked tokens, SASRec at the last token of
            # each prefix (packed rows: `last` is a flat row * width + column index).
            if isinstance(self.sequence, BERT4Rec):
                rows, cols = c.masked.nonzero(as_tuple=True)
                targets.append(c.seqs[rows, cols])
            elif c.segments is not None:
                rows, cols = c.last // c.seqs.shape[1], c.last % c.seqs.shape[1]
                targets.append(c.targets)
            else:
                rows, cols = torch.arange(len(c.seqs)), c.lengths - 1
                targets.append(c.targets)
            reads = (rows, cols) if self.cfg.shortcuts else None
            if isinstance(self.sequence, BERT4Rec):
                h = self.sequence.encode(tokens, c.seqs, c.masked, c.positions, c.segments, reads=reads)
            else:
                h = self.sequence.encode(tokens, c.positions, c.segments, reads=reads)
            reps.append(h if reads is not None else h[rows, cols])
        return torch.cat(reps), torch.cat(targets)

    def sequence_terms(self, chunks: list[SequenceChunk]) -> dict[str, torch.Tensor]:
        s, targets = self.encode_sequences(chunks)
        p = self.item_table(targets)
        terms = {}
        if self.cfg.sequence_loss == "au":
            terms["L_SA"] = obj.alignment(s, p)
        else:
            scored = F.normalize(s, dim=-1) if self.cfg.ce_normalize else s
            if self.cfg.shortcuts:
                terms["L_CE"] = self._softmax_ce(scored, self.item_table.weight, targets, self.output_bias)
            else:
                terms["L_CE"] = F.cross_entropy(self._logits(s)[:, 1:], targets - 1)
        if self.cfg.sequence_uniformity:
            terms["L_SU"] = obj.uniformity(s) + obj.uniformity(p)
            if len(p) >= 2:  # a lone sample (an epoch's last batch) has no other item to pair with
                n = p[obj.derangement(len(p), device=p.device)]  # the user-negative-item pairs
                terms["L_SU"] = terms["L_SU"] + obj.pair_uniformity(s, n)
        return terms

    def _logits(self, s: torch.Tensor) -> torch.Tensor:
        """Scores [B, I + 1] of every item for sequence representations s (column 0: padding)."""
        if self.cfg.ce_normalize:
            s = F.normalize(s, dim=-1)
        if self.output_bias is not None:
            return torch.addmm(self.output_bias, s, self.item_table.weight.T)
        return s @ self.item_table.weight.T

    # -- scoring ---------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, users: torch.Tensor, seqs: torch.Tensor | None = None,
              lengths: torch.Tensor | None = None) -> torch.Tensor:
        """[B, I + 1] scores of all items (column 0 is padding) for users with their histories
        (left-aligned `seqs` of `lengths` items; BERT4Rec needs one free slot after each)."""
        if self.cfg.scorer == "graph":
            if self._scoring_cache is None:
                self._scoring_cache = self.graph(self.user_table.weight, self.item_table.weight)
            user_final, item_final = self._scoring_cache
            return user_final[users] @ item_final.T
        return self._logits(self.sequence(self.item_table.weight, seqs, lengths))

    def train(self, mode: bool = True):
        self._scoring_cache = None
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._scoring_cache = None  # the cached graph scores belong to the old weights
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
