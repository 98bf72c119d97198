"""GraphSAGE with the mean aggregator (Hamilton et al., NeurIPS 2017) over the user-item graph.

    h_v^(k+1) = act(W_self^k h_v^k + W_neigh^k mean_{u in N(v)} h_u^k + b^k)

as PyTorch Geometric's SAGEConv (mean aggregation, root weight), ReLU between layers and none
after the last (PyG's GraphSAGE model; a ReLU on the output would confine the embeddings to one
orthant). The final embedding is the last layer. Nodes, tables and the training graph are
LightGCN's (users 1..U then items 1..I, training interactions only, no self-loops).

Plain torch sparse products rather than PyTorch Geometric: the graph is one fixed CSR matrix that
LightGCN already multiplies with, so the mean aggregator is that product with D^-1 A, and its
backward the product with (D^-1 A)^T = A D^-1, both built once; no extra dependency, and the same
restriction of the last layer to a batch's nodes as LightGCN's fast path. tests/test_graph_encoders.py
checks it against PyG's SAGEConv holding the same weights; benchmarks/graph_encoders.py times both.
"""

from __future__ import annotations

import torch
from torch import nn

from gsau.encoders.base import GraphEncoder
from gsau.encoders.lightgcn import _csr, _csr_rows, _transposed, propagate


class _Product(torch.autograd.Function):
    """a @ x for CSR a, with a's transpose `a_t` for the backward pass (None: built when needed)."""

    @staticmethod
    def forward(ctx, a, a_t, x):
        ctx.a, ctx.a_t = a, a_t
        return propagate(a, x)

    @staticmethod
    def backward(ctx, grad):
        a_t = ctx.a_t if ctx.a_t is not None else _transposed(ctx.a)
        return None, None, propagate(a_t, grad)


class SparseGraphEncoder(GraphEncoder):
    """What GraphSAGE and GAT share: sparse graph tensors that follow the module to its device
    (data rebuilt from the split, not parameters: never saved), the final embedding as the last
    layer, and node rows split back into user and item tables."""

    _graph_tensors: tuple[str, ...] = ()

    def __init__(self, n_users: int, n_layers: int):
        super().__init__()
        self.n_users, self.n_layers = n_users, n_layers

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        for name in self._graph_tensors:
            tensor = getattr(self, name)
            moved = fn(tensor)
            if moved.device != tensor.device:
                setattr(self, name, moved)
        return out

    def combine(self, layers: torch.Tensor) -> torch.Tensor:
        return layers[-1]

    def forward(self, user_table: torch.Tensor, item_table: torch.Tensor):
        final = self.layers(user_table, item_table)[-1]
        zero = final.new_zeros(1, final.shape[1])
        return torch.cat([zero, final[: self.n_users]]), torch.cat([zero, final[self.n_users:]])

    def layers_at(self, user_table: torch.Tensor, item_table: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """[K + 1, len(nodes), d]: every layer but the last computed whole, the last at `nodes` only."""
        unique, inverse = torch.unique(nodes, return_inverse=True)
        x = torch.cat([user_table[1:], item_table[1:]])
        out = [x[unique]]
        for k in range(self.n_layers):
            if k == self.n_layers - 1:
                out.append(self.layer(k, x, unique))
            else:
                x = self.layer(k, x)
                out.append(x[unique])
        return torch.stack(out)[:, inverse]

    def layers(self, user_table: torch.Tensor, item_table: torch.Tensor) -> list[torch.Tensor]:
        x = torch.cat([user_table[1:], item_table[1:]])
        out = [x]
        for k in range(self.n_layers):
            x = self.layer(k, x)
            out.append(x)
        return out

    def layer(self, k: int, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Layer k + 1 from layer k `x` [(U + I), d], at every node or at node rows `rows` (unique)."""
        raise NotImplementedError


class GraphSAGE(SparseGraphEncoder):
    _graph_tensors = ("mean", "mean_t")

    def __init__(self, adjacency: torch.Tensor, n_users: int, n_layers: int, dim: int):
        super().__init__(n_users, n_layers)
        # D^-1 A and its transpose A D^-1 from the structure of D^-1/2 A D^-1/2 (A symmetric, 0/1).
        crow, col = adjacency.crow_indices(), adjacency.col_indices()
        degree = crow.diff().to(torch.float32)
        rows = torch.repeat_interleave(torch.arange(len(degree), device=crow.device), crow.diff().long())
        self.mean = _csr(crow, col, 1.0 / degree[rows], adjacency.shape)
        self.mean_t = _csr(crow, col, 1.0 / degree[col.long()], adjacency.shape)
        self.self_weights = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_layers))
        self.neighbour_weights = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(n_layers))

    @classmethod
    def from_config(cls, cfg, adjacency: torch.Tensor, n_users: int) -> "GraphSAGE":
        return cls(adjacency, n_users, cfg.graph_layers, cfg.embedding_dim)

    def layer(self, k: int, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        if rows is None:
            h, neighbours = x, _Product.apply(self.mean, self.mean_t, x)
        else:  # the rows of D^-1 A at `rows` alone; its transpose is built in the backward pass
            sub = _csr(*_csr_rows(self.mean, rows), (len(rows), self.mean.shape[1]))
            h, neighbours = x[rows], _Product.apply(sub, None, x)
        out = self.self_weights[k](h) + self.neighbour_weights[k](neighbours)
        return out if k == self.n_layers - 1 else torch.relu(out)
