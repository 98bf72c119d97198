"""Graph attention (GAT, Velickovic et al., ICLR 2018) over the user-item graph.

    z = W^k h^k;  e_vu = LeakyReLU_0.2(a_dst^k . z_v + a_src^k . z_u)  for u in N(v) + {v}
    alpha_vu = softmax_u(e_vu);  h_v^(k+1) = act(sum_u alpha_vu z_u + b^k)

as PyTorch Geometric's GATConv (self-loops added, one head), ELU between layers and none after
the last; the final embedding is the last layer. One head: at d = 64 several heads would each
attend in a few dimensions, and the question asked of it is whether learned neighbour weights
help beside LightGCN's fixed ones. No attention dropout (the graph encoders here have none).

Plain torch, no PyTorch Geometric: the attention logits are a gather of two scalars per edge of
A + I and the softmax an index_add over each node's edges; the weighted sum is one sparse product
with the CSR matrix that holds alpha on those edges (_AttentionSum), rather than PyG's gather of an
edges x d tensor z[source] that is scattered back, twice over in the backward pass. The edges are
LightGCN's training graph. The fast path computes the last layer over the edges into a batch's
nodes alone, as LightGCN's does. tests/test_graph_encoders.py checks it against PyG's GATConv
holding the same weights; benchmarks/graph_encoders.py times both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gsau.encoders.lightgcn import _csr, _transposed, propagate
from gsau.encoders.sage import SparseGraphEncoder

NEGATIVE_SLOPE = 0.2  # GAT's LeakyReLU


def _segment_softmax(logits: torch.Tensor, segment: torch.Tensor, n: int) -> torch.Tensor:
    """Softmax of `logits` within each of n segments (segment[e] is edge e's target row)."""
    # The per-segment max only keeps exp() in range; the softmax does not depend on it.
    top = logits.new_full((n,), float("-inf")).scatter_reduce(0, segment, logits.detach(), "amax")
    weights = (logits - top[segment]).exp()
    return weights / weights.new_zeros(n).index_add(0, segment, weights)[segment]


class _AttentionSum(torch.autograd.Function):
    """A_alpha @ z, A_alpha the CSR matrix of pattern (ptr, col) holding the attention weights alpha:
    out_v = sum_u alpha_vu z_u over each row's edges. Backward: dz = A_alpha^T grad, and
    dalpha_vu = grad_v . z_u, the dense product grad z^T sampled on the pattern (an SDDMM), so no
    edges x d tensor is built. `transpose` = (ptr, col, order) of A^T's pattern with order[e]
    the edge of A that A^T's entry e holds; None: built from A when the backward pass needs it."""

    @staticmethod
    def forward(ctx, ptr, col, alpha, z, transpose):
        a = _csr(ptr, col, alpha, (len(ptr) - 1, len(z)))
        ctx.a, ctx.alpha, ctx.transpose = a, alpha, transpose
        ctx.save_for_backward(z)
        return propagate(a, z)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        grad = grad.contiguous()
        d_alpha = d_z = None
        if ctx.needs_input_grad[2]:
            d_alpha = torch.sparse.sampled_addmm(ctx.a, grad, z.t(), beta=0.0).values()
        if ctx.needs_input_grad[3]:
            if ctx.transpose is None:
                a_t = _transposed(ctx.a)
            else:
                t_ptr, t_col, order = ctx.transpose
                a_t = _csr(t_ptr, t_col, ctx.alpha[order], (len(t_ptr) - 1, ctx.a.shape[0]))
            d_z = propagate(a_t, grad)
        return None, None, d_alpha, d_z, None


class GAT(SparseGraphEncoder):
    _graph_tensors = ("edge_ptr", "edge_row", "edge_col", "t_ptr", "t_col", "t_order")

    def __init__(self, adjacency: torch.Tensor, n_users: int, n_layers: int, dim: int):
        super().__init__(n_users, n_layers)
        n = adjacency.shape[0]
        # The edges of A + I (each node attends to itself and its neighbours), CSR by target row.
        crow, col = adjacency.crow_indices().long(), adjacency.col_indices().long()
        nodes = torch.arange(n, device=crow.device)
        rows = torch.cat([torch.repeat_interleave(nodes, crow.diff()), nodes])
        cols = torch.cat([col, nodes])
        order = torch.argsort(rows * n + cols)
        # Each edge's target row beside its source, kept for the pass over every node (which would
        # otherwise rebuild the same index each layer and step).
        self.edge_row, self.edge_col = rows[order], cols[order]
        self.edge_ptr = torch.zeros(n + 1, dtype=torch.long, device=crow.device)
        torch.cumsum(torch.bincount(rows, minlength=n), 0, out=self.edge_ptr[1:])
        # The transpose's pattern for the backward pass over every node, built once (A + I is
        # symmetric for this graph, but nothing here relies on it).
        self.t_order = torch.argsort(self.edge_col * n + self.edge_row)
        self.t_col = self.edge_row[self.t_order]
        self.t_ptr = torch.zeros(n + 1, dtype=torch.long, device=crow.device)
        torch.cumsum(torch.bincount(self.edge_col, minlength=n), 0, out=self.t_ptr[1:])
        self.weights = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(n_layers))
        self.attend_target = nn.ModuleList(nn.Linear(dim, 1, bias=False) for _ in range(n_layers))
        self.attend_source = nn.ModuleList(nn.Linear(dim, 1, bias=False) for _ in range(n_layers))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(dim)) for _ in range(n_layers))

    @classmethod
    def from_config(cls, cfg, adjacency: torch.Tensor, n_users: int) -> "GAT":
        return cls(adjacency, n_users, cfg.graph_layers, cfg.embedding_dim)

    def _edges_into(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ptr, segment, source) of the edges into node rows `rows`, CSR by position in rows."""
        start, counts = self.edge_ptr[rows], self.edge_ptr[rows + 1] - self.edge_ptr[rows]
        ptr = torch.zeros(len(rows) + 1, dtype=torch.long, device=rows.device)
        torch.cumsum(counts, 0, out=ptr[1:])
        segment = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), counts)
        offsets = torch.arange(len(segment), device=rows.device) - ptr[:-1][segment]
        return ptr, segment, self.edge_col[start[segment] + offsets]

    def layer(self, k: int, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        z = self.weights[k](x)
        if rows is None:
            ptr, segment, source, targets = self.edge_ptr, self.edge_row, self.edge_col, z
            transpose = (self.t_ptr, self.t_col, self.t_order)
        else:
            (ptr, segment, source), targets, transpose = self._edges_into(rows), z[rows], None
        logits = F.leaky_relu(self.attend_target[k](targets).squeeze(1)[segment]
                              + self.attend_source[k](z).squeeze(1)[source], NEGATIVE_SLOPE)
        alpha = _segment_softmax(logits, segment, len(ptr) - 1)
        out = _AttentionSum.apply(ptr, source, alpha, z, transpose) + self.biases[k]
        return out if k == self.n_layers - 1 else F.elu(out)
