"""Graph attention (GAT, Velickovic et al., ICLR 2018) over the user-item graph.

    z = W^k h^k;  e_vu = LeakyReLU_0.2(a_dst^k . z_v + a_src^k . z_u)  for u in N(v) + {v}
    alpha_vu = softmax_u(e_vu);  h_v^(k+1) = act(sum_u alpha_vu z_u + b^k)

as PyTorch Geometric's GATConv (self-loops added, one head), ELU between layers and none after
the last; the final embedding is the last layer. One head: at d = 64 several heads would each
attend in a few dimensions, and the question asked of it is whether learned neighbour weights
help beside LightGCN's fixed ones. No attention dropout (the graph encoders here have none).

Plain torch, no PyTorch Geometric: the attention is a gather over the edges of A + I and two
index_add reductions (the softmax's sum and the weighted sum), differentiable as they stand; the
edges are LightGCN's training graph. The fast path computes the last layer over the edges into
a batch's nodes alone, as LightGCN's does. tests/test_graph_encoders.py checks it against PyG's
GATConv holding the same weights; benchmarks/graph_encoders.py times both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gsau.encoders.sage import SparseGraphEncoder

NEGATIVE_SLOPE = 0.2  # GAT's LeakyReLU


def _segment_softmax(logits: torch.Tensor, segment: torch.Tensor, n: int) -> torch.Tensor:
    """Softmax of `logits` within each of n segments (segment[e] is edge e's target row)."""
    # The per-segment max only keeps exp() in range; the softmax does not depend on it.
    top = logits.new_full((n,), float("-inf")).scatter_reduce(0, segment, logits.detach(), "amax")
    weights = (logits - top[segment]).exp()
    return weights / weights.new_zeros(n).index_add(0, segment, weights)[segment]


class GAT(SparseGraphEncoder):
    _graph_tensors = ("edge_ptr", "edge_row", "edge_col")

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
        self.weights = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(n_layers))
        self.attend_target = nn.ModuleList(nn.Linear(dim, 1, bias=False) for _ in range(n_layers))
        self.attend_source = nn.ModuleList(nn.Linear(dim, 1, bias=False) for _ in range(n_layers))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(dim)) for _ in range(n_layers))

    @classmethod
    def from_config(cls, cfg, adjacency: torch.Tensor, n_users: int) -> "GAT":
        return cls(adjacency, n_users, cfg.graph_layers, cfg.embedding_dim)

    def _edges_into(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(segment, source) of every edge into node rows `rows`: segment = position in rows."""
        start, counts = self.edge_ptr[rows], self.edge_ptr[rows + 1] - self.edge_ptr[rows]
        segment = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), counts)
        offsets = torch.arange(len(segment), device=rows.device) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        return segment, self.edge_col[start[segment] + offsets]

    def layer(self, k: int, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        z = self.weights[k](x)
        if rows is None:
            n, segment, source, targets = len(x), self.edge_row, self.edge_col, z
        else:
            (segment, source), n, targets = self._edges_into(rows), len(rows), z[rows]
        logits = F.leaky_relu(self.attend_target[k](targets).squeeze(1)[segment]
                              + self.attend_source[k](z).squeeze(1)[source], NEGATIVE_SLOPE)
        alpha = _segment_softmax(logits, segment, n)
        out = z.new_zeros(n, z.shape[1]).index_add(0, segment, alpha.unsqueeze(1) * z[source]) + self.biases[k]
        return out if k == self.n_layers - 1 else F.elu(out)
