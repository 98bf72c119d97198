"""The recommender: one shared embedding table, optional graph and sequential encoders, and the
objectives that tie them together. Every preset (GSAU, GSAU (rec), SASRec (u), DirectAU, ...) is a
`NetConfig` over these parts; nothing here is specific to one variant or one encoder class: the
encoders are built from the registry and used through their slot's interface (encoders/base.py).

    L = L_GA + L_SA + gamma (L_GU + L_SU)        (paper, Eq. for the joint objective)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gsau import objectives as obj
from gsau.config import NetConfig
from gsau.data.batching import SequenceChunk, history_windows
from gsau.distributed import Dist
from gsau.encoders import registry


class Recommender(nn.Module):
    def __init__(self, cfg: NetConfig, n_users: int, n_items: int, adjacency: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.n_users, self.n_items = n_users, n_items
        d = cfg.embedding_dim
        # The shared table (index 0 = padding). Users only have vectors when a graph encoder uses them.
        self.item_table = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.user_table = nn.Embedding(n_users + 1, d, padding_idx=0) if cfg.graph_encoder else None
        # shared_table=false: the graph encoder's own item table; the sequential encoder and the
        # ranker keep item_table, so the two encoders meet only in the joint loss.
        self.graph_item_table = None if cfg.shared_table else nn.Embedding(n_items + 1, d, padding_idx=0)
        self.graph = None
        if cfg.graph_encoder:
            if adjacency is None:
                raise ValueError("a graph encoder needs the training adjacency")
            self.graph = registry.graph_encoder(cfg.graph_encoder).from_config(cfg, adjacency, n_users)
        self.sequence = None
        if cfg.sequence_encoder:
            self.sequence = registry.sequence_encoder(cfg.sequence_encoder).from_config(cfg)
        self.output_bias = None
        if self.sequence is not None and self.sequence.masked_lm and cfg.sequence_loss in ("ce", "sampled_ce"):
            # BERT4Rec's output layer bias; the sampled softmax reads it at the target and candidates.
            self.output_bias = nn.Parameter(torch.zeros(n_items + 1))
        self._scoring_cache = None
        self._softmax_ce = obj.sequence_ce(cfg, n_items)
        # Set by the trainer: the process group (several processes share each batch) and the
        # Transformer's autocast dtype (train.precision=bf16). Neither changes the parameters.
        self.dist = Dist()
        self.autocast_dtype: torch.dtype | None = None
        # Several processes: a generator seeded alike on every rank each step, for the draws every
        # rank must share (L_SU's negative pairs, the sampled softmax's candidates).
        self.pair_generator: torch.Generator | None = None
        # Set by trainer.build_model for train.optimizer=lazy_adam: the tables' lookups give
        # row-sparse gradients, so only the rows a step reads are updated (gsau/optim.py).
        self.sparse_tables = False
        # graph_refresh > 0: layers 1..K of every node [K, U + I, d], computed without gradient
        # every graph_refresh steps (and afresh after `train()`, i.e. at each epoch's start, so
        # a run resumed at an epoch boundary reads what an uninterrupted one would).
        self._history_buffer: torch.Tensor | None = None  # layers 0..K; layer 0 is read fresh
        self._history_age: int | None = None  # steps since the refresh; None: refresh at the next
        self.reset_parameters()

    # -- initialisation --------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """init=xavier_normal: every table and layer Xavier-normal (the GSAU family);
        init=encoder_default: each baseline's own, the sequential encoder's when there is one
        (it also initialises the shared table), else the graph encoder's."""
        if self.cfg.init == "xavier_normal":
            init = nn.init.xavier_normal_
        else:
            init = (self.sequence or self.graph).default_init
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                init(m.weight)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.sequence is not None:
            self.sequence.reset_extra_parameters(init)
        with torch.no_grad():
            for table in (self.item_table, self.user_table, self.graph_item_table):
                if table is not None:
                    table.weight[0].zero_()

    def table_parameters(self) -> list[nn.Parameter]:
        """The embedding tables' weights (what train.optimizer=lazy_adam updates row by row)."""
        return [t.weight for t in (self.item_table, self.user_table, self.graph_item_table) if t is not None]

    def rows(self, table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """table[ids]; with `sparse_tables` as a lookup whose gradient is row-sparse (same values)."""
        return F.embedding(ids, table, sparse=True) if self.sparse_tables else table[ids]

    # -- training objectives -------------------------------------------------------------------
    def loss(self, graph_batch: dict | None, seq_chunks: list[SequenceChunk] | None):
        """Total loss of one joint step and its named terms (detached 0-dim tensors)."""
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

    def graph_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(user, item) tables the graph encoder reads: the shared item table, or its own."""
        items = self.item_table if self.graph_item_table is None else self.graph_item_table
        return self.user_table.weight, items.weight

    def graph_terms(self, batch: dict) -> dict[str, torch.Tensor]:
        users, items = self.graph_tables()
        objective = obj.GRAPH_OBJECTIVES[self.cfg.graph_loss]
        # Node rows: users 1..U are rows 0..U-1, items 1..I rows U..U+I-1.
        nodes = [batch["users"] - 1, self.n_users + batch["items"] - 1]
        if objective.negatives:
            nodes.append(self.n_users + batch["negatives"] - 1)
        if self.cfg.graph_refresh:
            layers = self._layers_from_history(users, items, batch, objective.negatives)
        elif self.cfg.shortcuts:  # each layer read at the batch's nodes, the last computed there alone
            layers = self.graph.layers_at(users, items, torch.cat(nodes)).split([len(r) for r in nodes], dim=1)
        else:
            full = self.graph.layers(users, items)
            layers = [torch.stack([e[r] for e in full]) for r in nodes]
        if self.dist.active:
            # Several processes: the graph terms (uniformity is over the whole batch) are computed
            # on the gathered global batch, identically on every rank (distributed.py).
            layers = [self.dist.gather(rows.transpose(0, 1)).transpose(0, 1) for rows in layers]
            batch = {k: self.dist.gather(v) for k, v in batch.items()}
        return objective.terms(layers, self.graph.combine, batch, (users, items))

    def _layers_from_history(self, users, items, batch, negatives: bool) -> list[torch.Tensor]:
        """[K + 1, n, d] at the batch's users, items (and negatives): layer 0 the tables' rows
        (with gradient), layers 1..K read from the history, refreshed every graph_refresh steps."""
        if self._history_age is None or self._history_age >= self.cfg.graph_refresh:
            self._history_buffer = self.graph.layers_into(users, items, self._history_buffer)  # one buffer for all
            self._history_age = 0
        self._history_age += 1
        parts = [(users, batch["users"], 0), (items, batch["items"], self.n_users)]
        if negatives:
            parts.append((items, batch["negatives"], self.n_users))
        out = []
        for table, ids, offset in parts:
            stale = self._history_buffer[1:, offset + ids - 1]  # [K, n, d], no gradient
            out.append(torch.cat([self.rows(table, ids).unsqueeze(0), stale]))
        return out

    def encode_sequences(self, chunks: list[SequenceChunk]) -> tuple[torch.Tensor, torch.Tensor]:
        """(representations [n, d], target items [n]) of every training sample of a batch."""
        # One lookup for every chunk: each lookup's backward zero-fills a whole table-sized gradient.
        flat = torch.cat([c.seqs.reshape(-1) for c in chunks])
        looked_up = F.embedding(flat, self.item_table.weight, sparse=self.sparse_tables).split([c.seqs.numel() for c in chunks])
        reps, targets = [], []
        autocast = self.autocast_dtype is not None
        for c, tokens in zip(chunks, looked_up):
            rows, cols, target = self.sequence.read_positions(c)
            targets.append(target)
            reads = (rows, cols) if self.cfg.shortcuts else None
            with torch.autocast(tokens.device.type, dtype=self.autocast_dtype, enabled=autocast):
                h = self.sequence.encode(tokens.view(*c.seqs.shape, -1), c, reads=reads)
            h = h.float() if autocast else h  # the objectives run in float32
            reps.append(h if reads is not None else h[rows, cols])
        return torch.cat(reps), torch.cat(targets)

    def sequence_terms(self, chunks: list[SequenceChunk]) -> dict[str, torch.Tensor]:
        s, targets = self.encode_sequences(chunks)
        p = F.embedding(targets, self.item_table.weight, padding_idx=0, sparse=self.sparse_tables)
        terms = {}
        # Means over samples; with several processes each rank's mean weighs its share.
        share = self.dist.share_weight(len(s), s.device)
        if self.cfg.sequence_loss == "au":
            terms["L_SA"] = obj.alignment(s, p)
        else:
            scored = F.normalize(s, dim=-1) if self.cfg.ce_normalize else s
            if self.cfg.sequence_loss == "sampled_ce":  # no plain variant
                # Several processes: every rank draws the same candidates (the shared generator)
                # and counts the whole batch's targets.
                counted = self.dist.gather(targets) if self.dist.active else None
                terms["L_CE"] = self._softmax_ce(scored, self.item_table.weight, targets, self.output_bias,
                                                 generator=self.pair_generator, counted=counted,
                                                 sparse=self.sparse_tables)
            elif self.cfg.shortcuts:
                terms["L_CE"] = self._softmax_ce(scored, self.item_table.weight, targets, self.output_bias)
            else:
                terms["L_CE"] = F.cross_entropy(self._logits(s)[:, 1:], targets - 1)
        if share != 1.0:
            terms = {k: v * share for k, v in terms.items()}
        if self.cfg.sequence_uniformity:
            # Over the whole batch: with several processes, on the gathered global batch.
            s, p = self.dist.gather(s), self.dist.gather(p)
            t = self.cfg.su_t
            hits = weights = None
            if self.cfg.su_mask_hits or self.cfg.su_unique_items or self.cfg.su_negatives == "items":
                every = self.dist.gather(targets) if self.dist.active else targets  # the targets of s, p
            if self.cfg.su_mask_hits or self.cfg.su_unique_items:
                same = every[:, None] == every[None, :]  # [n, n]: the same item
                hits = same if self.cfg.su_mask_hits else None
                weights = 1.0 / same.sum(dim=1).to(s.dtype) if self.cfg.su_unique_items else None
            terms["L_SU"] = obj.uniformity(s, t) + obj.uniformity(p, t)
            if self.cfg.su_negatives == "batch":  # every other sample's target as a negative
                terms["L_SU"] = terms["L_SU"] + obj.cross_uniformity(s, p, t, hits, weights)
            elif self.cfg.su_negatives == "rows":  # the same, log-mean-exp per sample
                terms["L_SU"] = terms["L_SU"] + obj.row_uniformity(s, p, t, hits, weights)
            elif self.cfg.su_negatives == "items":  # every item but the sample's own target
                terms["L_SU"] = terms["L_SU"] + obj.catalogue_uniformity(s, self.item_table.weight, every, t)
            elif len(p) >= 2:  # a lone sample (an epoch's last batch) has no other item to pair with
                if self.pair_generator is None:
                    pairs = obj.derangement(len(p), device=p.device)
                else:  # the same pairs on every rank
                    pairs = obj.derangement(len(p), generator=self.pair_generator).to(p.device)
                keep = None if hits is None else ~hits[torch.arange(len(p), device=p.device), pairs]
                # user-negative-item pairs; accidental hits masked, not indexed out (no host sync)
                terms["L_SU"] = terms["L_SU"] + obj.pair_uniformity(s, p[pairs], t, keep)
        return terms

    def _logits(self, s: torch.Tensor) -> torch.Tensor:
        """Scores [B, I + 1] of every item for sequence representations s (column 0: padding)."""
        if self.cfg.ce_normalize:
            s = F.normalize(s, dim=-1)
        if self.output_bias is not None:
            return torch.addmm(self.output_bias, s, self.item_table.weight.T)
        return s @ self.item_table.weight.T

    # -- scoring ---------------------------------------------------------------------------
    @property
    def history_cap(self) -> int:
        """How many of a user's latest items the scorer reads (the sequence window)."""
        if self.cfg.scorer != "sequence":
            return self.cfg.max_len
        return self.cfg.max_len - int(self.sequence.needs_free_slot)

    @torch.no_grad()
    def score(self, users: torch.Tensor, seqs: torch.Tensor | None = None,
              lengths: torch.Tensor | None = None) -> torch.Tensor:
        """[B, I + 1] scores of all items (column 0 is padding) for users with their histories
        (left-aligned `seqs` of `lengths` items, as `history_windows` builds them)."""
        if self.cfg.scorer == "graph":
            if self._scoring_cache is None:
                final = self.graph(*self.graph_tables())
                self._scoring_cache = tuple(F.normalize(x, dim=-1) for x in final) if self.cfg.cosine_scores else final
            user_final, item_final = self._scoring_cache
            return user_final[users] @ item_final.T
        s = self.sequence(self.item_table.weight, seqs, lengths)
        if self.cfg.cosine_scores:
            # The padding row is zero and stays zero (F.normalize divides by max(norm, eps)).
            items = F.normalize(self.item_table.weight, dim=-1)
            s = F.normalize(s, dim=-1)
            return s @ items.T if self.output_bias is None else torch.addmm(self.output_bias, s, items.T)
        return self._logits(s)

    @torch.no_grad()
    def score_histories(self, users: np.ndarray, indptr: np.ndarray, flat: np.ndarray) -> torch.Tensor:
        """[B, I + 1] scores for users (1-based) whose histories are CSR rows `indptr`/`flat`
        (user u's items: flat[indptr[u - 1]:indptr[u]]). The one place scoring windows are built,
        for evaluation and recommendation alike."""
        device = self.item_table.weight.device
        seqs = lengths = None
        if self.cfg.scorer == "sequence":
            seqs, lengths = history_windows(indptr, flat, users, self.history_cap, self.sequence.needs_free_slot)
            seqs, lengths = torch.from_numpy(seqs).to(device), torch.from_numpy(lengths).to(device)
        return self.score(torch.from_numpy(np.asarray(users)).to(device), seqs, lengths)

    def train(self, mode: bool = True):
        self._scoring_cache = None
        self._history_age = None  # refreshed at the next step (see __init__), in the same buffer
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._scoring_cache = None  # the cached graph scores belong to the old weights
        self._history_age = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
