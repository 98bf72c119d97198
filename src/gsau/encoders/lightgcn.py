"""LightGCN propagation over the user-item graph (He et al., SIGIR 2020).

Nodes are users 1..U (node u - 1) then items 1..I (node U + i - 1); the padding rows of the shared
tables are not nodes. The adjacency is D^-1/2 A D^-1/2 of the bipartite graph of TRAINING
interactions only, no self-loops, stored once as CSR. It is symmetric, so the backward pass of
`A @ X` is another `A @ G` with the same matrix: the whole graph's transpose is never built (only
that of a batch's few rows, in `_LocalPropagation`).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from gsau.encoders.base import GraphEncoder


def normalized_adjacency(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """Sparse CSR [(U + I) x (U + I)] = D^-1/2 A D^-1/2; repeated (user, item) pairs count once."""
    edges = np.unique(np.stack([users.astype(np.int64) - 1, n_users + items.astype(np.int64) - 1]), axis=1)
    rows = np.concatenate([edges[0], edges[1]])
    cols = np.concatenate([edges[1], edges[0]])
    degree = np.bincount(rows, minlength=n_users + n_items).astype(np.float64)
    values = 1.0 / np.sqrt(degree[rows] * degree[cols])
    n = n_users + n_items
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks sparse CSR as beta
        coo = torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, cols])),
                                      torch.from_numpy(values.astype(np.float32)), (n, n)).coalesce()
        csr = coo.to_sparse_csr()
        if len(rows) >= 2 ** 31:
            return csr
        # 32-bit indices: the same products bit for bit, faster through MKL's 32-bit interface
        # (BENCHMARKS.md, "Measurements behind code choices")
        return torch.sparse_csr_tensor(csr.crow_indices().int(), csr.col_indices().int(), csr.values(), (n, n))


def propagate(adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A @ x for CSR A, accumulated into a zeroed output with `addmm_`: same result bit for bit as
    torch.sparse.mm, which copies its output once more (BENCHMARKS.md, "Measurements behind code
    choices")."""
    return x.new_zeros(adjacency.shape[0], x.shape[1]).addmm_(adjacency, x.contiguous())


class _SymmetricPropagation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, adjacency, x):
        ctx.adjacency = adjacency
        return propagate(adjacency, x)

    @staticmethod
    def backward(ctx, grad):
        return None, propagate(ctx.adjacency, grad)


def _mean_of_powers(adjacency: torch.Tensor, x: torch.Tensor, n_layers: int) -> torch.Tensor:
    x = x.contiguous()
    total = x.clone()
    for k in range(n_layers):
        if k == n_layers - 1:  # the last layer is only summed: accumulate it straight into the total
            total.addmm_(adjacency, x)
        else:
            x = propagate(adjacency, x)
            total += x
    return total.div_(n_layers + 1)


class _MeanPropagation(torch.autograd.Function):
    """M x with M = (I + A + ... + A^K) / (K + 1). A is symmetric, so M is too and the backward
    pass is M applied to the gradient: no layer output is kept for it, and the sum over layers and
    its division happen in place instead of as graph nodes each with their own backward."""

    @staticmethod
    def forward(ctx, adjacency, x, n_layers):
        ctx.adjacency, ctx.n_layers = adjacency, n_layers
        return _mean_of_powers(adjacency, x, n_layers)

    @staticmethod
    def backward(ctx, grad):
        return None, _mean_of_powers(ctx.adjacency, grad, ctx.n_layers), None


def _csr_rows(adjacency: torch.Tensor, rows: torch.Tensor):
    """(crow, col, val) of the CSR sub-matrix adjacency[rows, :], columns still global."""
    crow, col, val = adjacency.crow_indices(), adjacency.col_indices(), adjacency.values()
    start = crow[rows]
    counts = crow[rows + 1] - start
    sub_crow = torch.zeros(len(rows) + 1, dtype=crow.dtype, device=crow.device)
    torch.cumsum(counts, 0, out=sub_crow[1:])
    total = int(sub_crow[-1])
    take = (torch.repeat_interleave(start - sub_crow[:-1], counts, output_size=total)
            + torch.arange(total, device=crow.device))
    return sub_crow, col[take], val[take]  # indices keep the adjacency's dtype (int32)


def _transposed(a: torch.Tensor) -> torch.Tensor:
    """CSR of the transpose of CSR `a` (its entries stably sorted by column)."""
    crow, col, val, n_cols = a.crow_indices(), a.col_indices(), a.values(), a.shape[1]
    rows = torch.repeat_interleave(torch.arange(len(crow) - 1, dtype=crow.dtype, device=crow.device), crow.diff(),
                                   output_size=len(col))
    order = torch.argsort(col, stable=True)
    t_crow = torch.zeros(n_cols + 1, dtype=crow.dtype, device=crow.device)
    torch.cumsum(torch.bincount(col, minlength=n_cols), 0, out=t_crow[1:])
    return _csr(t_crow, rows[order], val[order], (n_cols, len(crow) - 1))


def _csr(crow, col, val, shape) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks sparse CSR as beta
        return torch.sparse_csr_tensor(crow, col, val, shape)


class _LocalPropagation(torch.autograd.Function):
    """Layers E^(0..K) of LightGCN read at node rows `nodes` (unique): [K + 1, len(nodes), d].

    A step's objectives read its batch's users and items alone, so the last layer is computed at
    those rows only: A[nodes, :] holds 9% of Beauty's adjacency entries for a 512-pair batch.
    Earlier layers feed the last at the nodes' neighbours (41% of the nodes, 62% of the entries),
    which is too much of the graph for restricting them to pay for its index work: they stay whole.
    Backward: the last layer's transpose (a sort of its few entries), then whole propagations of
    the gradient (A is symmetric). Same values and gradients as `LightGCN.layers` read at `nodes`;
    per step 2(K - 1) + 2 small products instead of 2K whole ones.
    """

    @staticmethod
    def forward(ctx, adjacency, x, nodes, n_layers):
        h = x.contiguous()
        out = [x[nodes]]
        for _ in range(n_layers - 1):
            h = propagate(adjacency, h)
            out.append(h[nodes])
        last = None
        if n_layers:
            last = _csr(*_csr_rows(adjacency, nodes), (len(nodes), adjacency.shape[0]))
            out.append(propagate(last, h))
        ctx.adjacency, ctx.last, ctx.nodes = adjacency, last, nodes
        return torch.stack(out)

    @staticmethod
    def backward(ctx, grad):
        adjacency, last, nodes = ctx.adjacency, ctx.last, ctx.nodes
        if last is None:
            g = grad.new_zeros(adjacency.shape[0], grad.shape[2])
        else:
            g = propagate(_transposed(last), grad[-1])
        for k in range(len(grad) - 2, 0, -1):
            g = propagate(adjacency, g.index_add_(0, nodes, grad[k]))
        return None, g.index_add_(0, nodes, grad[0]), None, None


class LightGCN(GraphEncoder):
    """E^(k+1) = A_hat E^(k); the final embedding is the mean of layers 0..K."""

    def __init__(self, adjacency: torch.Tensor, n_users: int, n_layers: int = 2):
        super().__init__()
        self.adjacency = adjacency  # not a buffer: it is data, rebuilt from the split, not saved
        self.n_users = n_users
        self.n_layers = n_layers

    @classmethod
    def from_config(cls, cfg, adjacency: torch.Tensor, n_users: int) -> "LightGCN":
        return cls(adjacency, n_users, cfg.graph_layers)

    def _apply(self, fn, *args, **kwargs):
        # The adjacency is data, not a parameter or buffer (it is not saved), but it must follow
        # the module to its device: CSR products run where the tables are.
        out = super()._apply(fn, *args, **kwargs)
        moved = fn(self.adjacency)
        if moved.device != self.adjacency.device:
            self.adjacency = moved
        return out

    def combine(self, layers: torch.Tensor) -> torch.Tensor:
        return layers.mean(0)

    def layers(self, user_table: torch.Tensor, item_table: torch.Tensor) -> list[torch.Tensor]:
        """[E^(0), ..., E^(K)], each [(U + I), d], from the tables without their padding rows."""
        x = torch.cat([user_table[1:], item_table[1:]])
        out = [x]
        for _ in range(self.n_layers):
            x = _SymmetricPropagation.apply(self.adjacency, x)
            out.append(x)
        return out

    @torch.no_grad()
    def layers_into(self, user_table: torch.Tensor, item_table: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        """`layers` without gradient, written into `out` [K + 1, (U + I), d] (made when None or of
        another shape) and returned: no allocation once `out` exists. A history refreshed every few
        steps (NetConfig.graph_refresh) reuses one buffer: at a million nodes each layer is 256 MB,
        and fresh allocations of that size cost page faults on every refresh."""
        n, d = self.adjacency.shape[0], user_table.shape[1]
        if out is None or out.shape != (self.n_layers + 1, n, d) or out.device != user_table.device:
            out = user_table.new_empty(self.n_layers + 1, n, d)
        out[0, : self.n_users].copy_(user_table[1:])
        out[0, self.n_users:].copy_(item_table[1:])
        for k in range(1, self.n_layers + 1):
            out[k].zero_().addmm_(self.adjacency, out[k - 1])  # as `propagate`, bit for bit
        return out

    def layers_at(self, user_table: torch.Tensor, item_table: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """[K + 1, len(nodes), d]: E^(0..K) at node rows `nodes` (any order, repeats allowed), the
        last layer computed at those rows only; equal to `layers` read at those rows."""
        unique, inverse = torch.unique(nodes, return_inverse=True)
        x = torch.cat([user_table[1:], item_table[1:]])
        return _LocalPropagation.apply(self.adjacency, x, unique, self.n_layers)[:, inverse]

    def final(self, user_table: torch.Tensor, item_table: torch.Tensor) -> torch.Tensor:
        """[(U + I), d]: the mean of layers 0..K, the embedding LightGCN scores with."""
        return _MeanPropagation.apply(self.adjacency, torch.cat([user_table[1:], item_table[1:]]), self.n_layers)

    def split(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Node rows back to (user [U + 1, d], item [I + 1, d]) tables with a zero padding row."""
        zero = nodes.new_zeros(1, nodes.shape[1])
        return torch.cat([zero, nodes[: self.n_users]]), torch.cat([zero, nodes[self.n_users:]])

    def forward(self, user_table: torch.Tensor, item_table: torch.Tensor):
        return self.split(self.final(user_table, item_table))
