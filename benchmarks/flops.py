"""The FLOP floor of a training epoch: the floating-point operations of its matrix products,
counted from the real batch shapes, and this machine's float32 matmul rate to divide them by.
benchmarks/run.py sets gsau's measured epochs against it."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch


def matmul_gflops(threads: int = 0, n: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matmul rate (median of repeats), the yardstick of the floor."""
    if threads:
        torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def epoch_flops(model_name: str, dataset: str, shortcuts: bool = True) -> dict:
    """Floating-point operations of one training epoch, counted from the real batch shapes.

    Forward multiply-adds of every matrix product (Transformer projections, attention over each
    prefix's real length, logits over all items, graph propagation, uniformity Gram matrices);
    backward counted as twice the forward, except graph propagation (the adjacency has no
    gradient: once). Elementwise work is left out: the floor is a bound. With `shortcuts` the count
    is of the work gsau does (the final layer's output projection and feed-forward block only at
    each prefix's last token); without, of every position through every layer.
    """
    from gsau.config import resolve
    from gsau.data import LeaveOneOut, load_dataset
    from gsau.data.batching import SequenceStream
    cfg = resolve(model_name, None, [], dataset=dataset)
    n, t = cfg.net, cfg.train
    split = LeaveOneOut.from_interactions(load_dataset(dataset))
    d, items = n.embedding_dim, split.n_items + 1
    macs, backward = {}, {}
    steps = 0
    if n.sequence_loss:
        seq = SequenceStream(split, n.max_len, t.batch_size)
        lengths = np.minimum(seq.position[seq.targets_at], n.max_len).astype(np.float64)
        tokens, samples = lengths.sum(), len(lengths)
        qkv, rest = 3 * d * d, d * d + 2 * d * n.inner_size  # q, k, v; output projection and feed-forward
        attention = (lengths * (lengths + 1) / 2).sum() * 2 * d
        if shortcuts:
            last = tokens * qkv + samples * rest + attention
        else:
            last = tokens * (qkv + rest) + attention
        macs["transformer"] = (n.n_layers - 1) * (tokens * (qkv + rest) + attention) + last
        steps = len(seq)
        if n.sequence_loss == "ce":
            macs["logits"] = seq.n_samples * d * items
        if n.sequence_uniformity:
            macs["seq_uniformity"] = 2 * len(seq) * t.batch_size ** 2 * d
    if n.graph_loss:
        users, its = split.train_pairs()
        nnz = 2 * len(np.unique(users * items + its))
        graph_steps = -(-len(users) // t.batch_size)
        steps = max(steps, graph_steps)
        # K - 1 whole layers and, with shortcuts, the last only at the batch's nodes (LightGCN.layers_at)
        edges = local_propagation_edges(cfg, split) if shortcuts else n.graph_layers * nnz
        macs["graph_propagation"] = steps * edges * d
        backward["graph_propagation"] = 1
        if n.graph_loss in ("au", "layer_au"):
            macs["graph_uniformity"] = 2 * steps * t.batch_size ** 2 * d
    flops = {k: 2 * (1 + backward.get(k, 2)) * v for k, v in macs.items()}  # 2 FLOPs per multiply-add
    return {"model": model_name, "dataset": dataset, "flops": flops, "total_flops": sum(flops.values()),
            "steps": steps, "shortcuts": shortcuts}


def local_propagation_edges(cfg, split, batches: int = 16) -> float:
    """Mean adjacency entries a step's propagation multiplies (forward; the backward pass multiplies
    as many), over `batches` batches of the graph stream (seed 0): K - 1 whole layers, and the last
    layer at the batch's nodes only (LightGCN.layers_at)."""
    from gsau.data.batching import GraphStream
    from gsau.encoders import normalized_adjacency
    adjacency = normalized_adjacency(*split.train_pairs(), split.n_users, split.n_items)
    degree = adjacency.crow_indices().diff()
    stream = GraphStream(split, cfg.train.batch_size, negatives=cfg.net.graph_loss == "bpr")
    last = []
    for _, batch in zip(range(batches), stream.batches(np.random.default_rng(0))):
        nodes = [batch["users"] - 1, split.n_users + batch["items"] - 1]
        if "negatives" in batch:
            nodes.append(split.n_users + batch["negatives"] - 1)
        last.append(int(degree[torch.cat(nodes).unique()].sum()))
    return (cfg.net.graph_layers - 1) * adjacency.values().numel() + float(np.mean(last))
