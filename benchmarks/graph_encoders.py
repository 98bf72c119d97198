#!/usr/bin/env python3
"""GraphSAGE and GAT as gsau computes them (plain torch sparse products, encoders/sage.py and gat.py)
against PyTorch Geometric's SAGEConv and GATConv holding the same weights, on a dataset's training
graph: milliseconds for a forward and backward pass of every layer over every node, and for the
form a training step uses (gsau: the last layer at a batch's nodes alone; PyG has no such path,
so a step pays its full pass). Both sides are first checked to compute the same outputs.

    pip install torch_geometric          # in the test extra; gsau itself does not need it
    python benchmarks/graph_encoders.py [--dataset beauty] [--layers 2] [--batch 512] [--steps 5]
                                        [--rounds 5] [--threads 1] [--json]

Each round times every configuration once (mean over `steps` calls), so a slow spell of a shared
machine falls on all of them; the figures are medians over rounds, and the ratios are of medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

BATCH_GSAU, BATCH_PYG = "gsau, a batch's nodes", "PyG, a batch's nodes"


def _pyg_convs(encoder: str, graph, dim: int) -> list:
    """PyG layers holding gsau's weights (the mapping tests/test_graph_encoders.py checks)."""
    from torch_geometric.nn import GATConv, SAGEConv
    convs = []
    for k in range(graph.n_layers):
        if encoder == "sage":
            conv = SAGEConv(dim, dim, aggr="mean", root_weight=True)
            conv.lin_l.weight.data.copy_(graph.neighbour_weights[k].weight)
            conv.lin_l.bias.data.copy_(graph.self_weights[k].bias)
            conv.lin_r.weight.data.copy_(graph.self_weights[k].weight)
        else:
            conv = GATConv(dim, dim, heads=1, add_self_loops=True, negative_slope=0.2, dropout=0.0)
            conv.lin.weight.data.copy_(graph.weights[k].weight)
            conv.att_src.data.copy_(graph.attend_source[k].weight.view(1, 1, dim))
            conv.att_dst.data.copy_(graph.attend_target[k].weight.view(1, 1, dim))
            conv.bias.data.copy_(graph.biases[k])
        convs.append(conv)
    return convs


def measure(dataset: str = "beauty", layers: int = 2, batch: int = 512, steps: int = 5, rounds: int = 5,
            threads: int = 1, echo=print) -> list[dict]:
    from gsau.config import resolve
    from gsau.encoders import normalized_adjacency
    from gsau.trainer import prepare
    torch.set_num_threads(threads)
    rows = []
    for encoder in ("sage", "gat"):
        cfg = resolve("gsau-rec", None, [f"graph_encoder={encoder}", f"graph_layers={layers}"], dataset=dataset)
        split, model = prepare(cfg)
        graph, dim = model.graph, cfg.net.embedding_dim
        convs = _pyg_convs(encoder, graph, dim)
        edge_index = normalized_adjacency(*split.train_pairs(), split.n_users, split.n_items) \
            .to_sparse_coo().coalesce().indices()
        act = torch.relu if encoder == "sage" else torch.nn.functional.elu
        user_table, item_table = (t.detach().requires_grad_(True) for t in model.graph_tables())
        n_users = split.n_users
        g = torch.Generator().manual_seed(0)
        # A graph batch's nodes: `batch` (user, item) pairs, as node rows (users 0..U-1, then items).
        nodes = torch.cat([torch.randint(0, n_users, (batch,), generator=g),
                           n_users + torch.randint(0, split.n_items, (batch,), generator=g)])

        def pyg_full():
            h = torch.cat([user_table[1:], item_table[1:]])
            for k, conv in enumerate(convs):
                h = conv(h, edge_index)
                h = act(h) if k < len(convs) - 1 else h
            return h

        def ours_full():
            return graph.layers(user_table, item_table)[-1]

        def ours_batch():
            return graph.layers_at(user_table, item_table, nodes)[-1]

        def pyg_batch():
            return pyg_full()[nodes]

        with torch.no_grad():
            ours_out = ours_full()
            gap = float((ours_out - pyg_full()).abs().max())
        if gap > 1e-4 * max(1.0, float(ours_out.abs().max())):  # timing two different computations says nothing
            raise RuntimeError(f"{encoder}: gsau's and PyG's outputs differ by {gap:.3g}; the weight mapping is wrong")
        parts = {"gsau, every node": ours_full, "PyG, every node": pyg_full, BATCH_GSAU: ours_batch, BATCH_PYG: pyg_batch}

        def timed(fn) -> float:
            t0 = time.perf_counter()
            for _ in range(steps):
                out = fn()
                out.sum().backward()
                user_table.grad = item_table.grad = None
                model.zero_grad(set_to_none=True)
                for conv in convs:
                    conv.zero_grad(set_to_none=True)
            return (time.perf_counter() - t0) / steps * 1000

        for fn in parts.values():  # warm-up: first-call allocations and lazy initialisation
            timed(fn)
        times = {name: [] for name in parts}
        for _ in range(rounds):
            for name, fn in parts.items():
                times[name].append(timed(fn))
        med = {name: statistics.median(v) for name, v in times.items()}
        row = {"encoder": encoder, "dataset": dataset, "layers": layers, "nodes": n_users + split.n_items,
               "edges": int(edge_index.shape[1]), "batch_nodes": int(len(nodes)), "threads": threads,
               "rounds": rounds, "steps": steps, "max_abs_difference": gap,
               "ms": {name: round(v, 2) for name, v in med.items()},
               "pyg_over_gsau_every_node": med["PyG, every node"] / med["gsau, every node"],
               "pyg_over_gsau_batch": med[BATCH_PYG] / med[BATCH_GSAU]}
        rows.append(row)
        echo(f"{encoder}: outputs differ by at most {gap:.2e}; " + ", ".join(f"{n} {v:.1f} ms" for n, v in med.items())
             + f"; PyG / gsau: {row['pyg_over_gsau_every_node']:.2f}x every node, "
               f"{row['pyg_over_gsau_batch']:.2f}x a batch")
    return rows


def table(rows: list[dict]) -> str:
    out = ["| encoder | nodes | edges | gsau, every node | PyG, every node | ratio | gsau, a batch | PyG, a batch | ratio |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ms = r["ms"]
        out.append(f"| {r['encoder']} | {r['nodes']} | {r['edges']} | {ms['gsau, every node']:.1f} ms | "
                   f"{ms['PyG, every node']:.1f} ms | {r['pyg_over_gsau_every_node']:.2f}x | "
                   f"{ms[BATCH_GSAU]:.1f} ms | {ms[BATCH_PYG]:.1f} ms | {r['pyg_over_gsau_batch']:.2f}x |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="beauty")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=512, help="(user, item) pairs of a graph batch")
    ap.add_argument("--steps", type=int, default=5, help="timed calls per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = ap.parse_args(argv)
    try:
        import torch_geometric  # noqa: F401
    except ImportError:
        print("benchmarks/graph_encoders.py needs PyTorch Geometric: pip install torch_geometric", file=sys.stderr)
        return 2
    rows = measure(args.dataset, args.layers, args.batch, args.steps, args.rounds, args.threads)
    print(table(rows))
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
