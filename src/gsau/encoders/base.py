"""The two encoder slots' interfaces. `Recommender` talks to encoders only through these, so a
new encoder (GraphSAGE, GAT, GRU4Rec, ...) is a module implementing one of them plus one line in
`registry.py`; the model, trainer, evaluation and serving need no change."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from gsau.config import NetConfig
    from gsau.data.batching import SequenceChunk


class GraphEncoder(nn.Module):
    """Embeddings of users and items from the training graph over the shared tables.

    Nodes are users 1..U (row u - 1) then items 1..I (row U + i - 1); tables carry a padding row 0
    that is not a node. Objectives read the encoder's layers at a batch's nodes (`layers_at`);
    scoring reads the final embeddings of everything (`forward`)."""

    @classmethod
    def from_config(cls, cfg: "NetConfig", adjacency: torch.Tensor, n_users: int) -> "GraphEncoder":
        raise NotImplementedError

    def layers(self, user_table: torch.Tensor, item_table: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's embeddings of every node [(U + I), d]: the plain reference path."""
        raise NotImplementedError

    def layers_at(self, user_table: torch.Tensor, item_table: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """[K + 1, len(nodes), d]: the layers read at node rows `nodes`; equal to `layers` there."""
        raise NotImplementedError

    @torch.no_grad()
    def layers_into(self, user_table: torch.Tensor, item_table: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        """`layers` without gradient as one tensor [K + 1, (U + I), d], written into `out` where an
        encoder can reuse it (NetConfig.graph_refresh keeps a history of them)."""
        return torch.stack(self.layers(user_table, item_table))

    def combine(self, layers: torch.Tensor) -> torch.Tensor:
        """The final embedding from the stacked layers [K + 1, n, d] (LightGCN: their mean)."""
        raise NotImplementedError

    def forward(self, user_table: torch.Tensor, item_table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (user [U + 1, d], item [I + 1, d]) tables, zero padding row first."""
        raise NotImplementedError

    @staticmethod
    def default_init(weight: torch.Tensor) -> None:
        """The encoder's own published initialisation of a weight (init=encoder_default)."""
        nn.init.xavier_uniform_(weight)


class SequenceEncoder(nn.Module):
    """A representation of a user's item history, read at chosen positions.

    Class attributes say how training samples and scoring windows are laid out for it:
    `masked_lm`: training sequences have masked positions to predict (BERT4Rec) rather than
    (prefix -> next item) pairs read at each prefix's last token (SASRec);
    `needs_free_slot`: scoring reads a token appended after the history, so a history window
    keeps one position free."""

    masked_lm: bool = False
    needs_free_slot: bool = False

    @classmethod
    def from_config(cls, cfg: "NetConfig") -> "SequenceEncoder":
        raise NotImplementedError

    def read_positions(self, chunk: "SequenceChunk") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, cols, targets): where each training sample of `chunk` is read, and its item."""
        raise NotImplementedError

    def encode(self, tokens: torch.Tensor, chunk: "SequenceChunk", reads=None) -> torch.Tensor:
        """From looked-up item embeddings `tokens` [b, L, d] of `chunk.seqs`: every position
        [b, L, d], or with `reads` (rows, cols) those positions only [n, d] (the final layer may
        then be computed there alone)."""
        raise NotImplementedError

    def forward(self, item_table: torch.Tensor, seqs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, d]: the representation each left-aligned history of `lengths[b]` items predicts
        the next item from (with `needs_free_slot`, lengths[b] < seqs.shape[1])."""
        raise NotImplementedError

    @staticmethod
    def default_init(weight: torch.Tensor) -> None:
        nn.init.normal_(weight, 0.0, 0.02)

    def reset_extra_parameters(self, init) -> None:
        """Initialise parameters that are neither Linear nor Embedding weights (e.g. a mask token)
        with `init(tensor)`; the model initialises the rest."""
