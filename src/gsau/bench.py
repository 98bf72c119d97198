"""Speed measurements of gsau itself: seconds per training epoch (bounded steps, scaled), full-ranking
evaluation throughput, peak memory, and the FLOP floor of an epoch on this machine.

Each configuration runs in its own process (`python -m gsau.bench one ...`) so its peak resident
memory is its own and no warm cache leaks between them. `benchmarks/run.py` puts these beside
RecBole's figures and writes BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch


def _steps(cfg, split, model, graph, seq, rng, n: int) -> float:
    """Seconds for n joint training steps, as the trainer runs them."""
    from gsau.trainer import _cycle, make_optimizer
    opt = make_optimizer(cfg, model)
    model.train()
    g_it = _cycle(graph, rng) if graph else None
    s_it = _cycle(seq, rng) if seq else None
    t0 = time.perf_counter()
    for _ in range(n):
        total, _ = model.loss(next(g_it) if g_it else None, next(s_it) if s_it else None)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    return time.perf_counter() - t0


def measure_one(model_name: str, dataset: str, batching: str, steps: int, repeats: int, epochs: int,
                threads: int, overrides: list[str], profile: bool = False) -> dict:
    from gsau.config import resolve
    from gsau.evaluation import evaluate
    from gsau.runtime import keep_freed_memory
    from gsau.trainer import make_streams, prepare
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    cfg = resolve(model_name, None, [f"seq_batching={batching}", *overrides], dataset=dataset)
    if cfg.net.shortcuts:  # the naive baseline keeps glibc's default allocator behaviour too
        keep_freed_memory()
    split, model = prepare(cfg)
    graph, seq = make_streams(cfg, split)
    prep = time.perf_counter() - t0
    steps_per_epoch = max(len(s) for s in (graph, seq) if s is not None)
    rng = np.random.default_rng(cfg.train.seed)
    _steps(cfg, split, model, graph, seq, rng, 3)  # warm-up: allocator, thread pool, kernels
    per_step = [_steps(cfg, split, model, graph, seq, rng, steps) / steps for _ in range(repeats)]
    step_s = statistics.median(per_step)
    top_ops = None
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            _steps(cfg, split, model, graph, seq, rng, steps)
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        top_ops = [{"op": e.key, "share": e.self_cpu_time_total / total, "calls_per_step": e.count / steps}
                   for e in events[:10]]
    # Evaluation throughput: full ranking of every user's validation target.
    model.eval()
    t1 = time.perf_counter()
    evaluate(model, split, "valid", cfg.train.ks, batch_size=cfg.train.eval_batch_size)
    eval_s = time.perf_counter() - t1
    out = {"model": model_name, "dataset": dataset, "batching": batching, "threads": torch.get_num_threads(),
           "steps_timed": steps * repeats, "seconds_per_step": step_s,
           "seconds_per_step_all": per_step, "steps_per_epoch": steps_per_epoch,
           "seconds_per_epoch": step_s * steps_per_epoch, "eval_seconds": eval_s,
           "eval_users_per_second": split.n_users / eval_s, "prepare_seconds": prep,
           "overrides": overrides}
    if top_ops:
        out["top_ops"] = top_ops
    if epochs:
        # A fixed number of real epochs from a fresh model, so a faster variant that learns less shows.
        cfg.train.epochs = epochs
        split, model = prepare(cfg)
        graph, seq = make_streams(cfg, split)
        rng = np.random.default_rng(cfg.train.seed)
        t2 = time.perf_counter()
        for _ in range(epochs):
            _steps(cfg, split, model, graph, seq, rng, steps_per_epoch)
        out["accuracy_epochs"] = epochs
        out["accuracy_train_seconds"] = time.perf_counter() - t2
        out["valid_ndcg@20"] = evaluate(model, split, "valid", (20,))["ndcg@20"]
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def components(model_name: str, dataset: str, steps: int = 15, repeats: int = 3, threads: int = 0,
               overrides: list[str] | None = None) -> list[dict]:
    """Milliseconds per step of each part of a joint training step, timed separately on the same
    pre-built batches: the whole step, the graph objectives (forward + backward), the sequential
    encoder alone and with its objectives (forward + backward), the optimiser step, and building
    the next batches. Parts are timed in interleaved rounds (median over rounds of the mean over
    `steps` calls), so a slow spell of a shared machine falls on all of them."""
    from gsau.config import resolve
    from gsau.runtime import keep_freed_memory
    from gsau.trainer import _cycle, make_optimizer, make_streams, prepare
    if threads:
        torch.set_num_threads(threads)
    keep_freed_memory()
    cfg = resolve(model_name, None, list(overrides or []), dataset=dataset)
    split, model = prepare(cfg)
    graph, seq = make_streams(cfg, split)
    rng = np.random.default_rng(cfg.train.seed)
    opt = make_optimizer(cfg, model)
    model.train()
    g_it = _cycle(graph, rng) if graph else None
    s_it = _cycle(seq, rng) if seq else None
    batches = [(next(g_it) if g_it else None, next(s_it) if s_it else None) for _ in range(steps)]

    def whole(g, q):
        total, _ = model.loss(g, q)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

    def backward_of(terms: dict):
        model.zero_grad(set_to_none=True)
        weights = {"L_GU": model.cfg.gamma, "L_SU": model.cfg.gamma, "L_reg": model.cfg.bpr_reg}
        sum(weights.get(k, 1.0) * v for k, v in terms.items()).backward()

    # The optimiser step right after the whole step, whose backward left a gradient on every
    # parameter (the parts below zero all but their own, and fused Adam skips gradient-less ones).
    parts = {"whole step (batches pre-built)": whole, "optimiser step": lambda g, q: opt.step()}
    if graph is not None:
        parts["graph objectives (forward + backward)"] = lambda g, q: backward_of(model.graph_terms(g))
    if seq is not None:
        parts["sequential encoder (forward + backward)"] = lambda g, q: backward_of(
            {"h": model._encode_chunks(q)[0].sum()})
        parts["sequential encoder and objectives (forward + backward)"] = lambda g, q: backward_of(
            model.sequence_terms(q))
    parts["next batches"] = lambda g, q: (next(g_it) if g_it else None, next(s_it) if s_it else None)

    for fn in parts.values():  # warm-up: allocator, thread pool, kernels
        for g, q in batches[:3]:
            fn(g, q)
    times: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(repeats):
        for name, fn in parts.items():
            t0 = time.perf_counter()
            for g, q in batches:
                fn(g, q)
            times[name].append((time.perf_counter() - t0) / len(batches) * 1000)
    whole_ms = statistics.median(times["whole step (batches pre-built)"])
    return [{"part": name, "ms_per_step": statistics.median(t), "ms_all": t,
             "share_of_step": statistics.median(t) / whole_ms} for name, t in times.items()]


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
        edges = _local_propagation_edges(cfg, split) if shortcuts else n.graph_layers * nnz
        macs["graph_propagation"] = steps * edges * d
        backward["graph_propagation"] = 1
        if n.graph_loss in ("au", "layer_au"):
            macs["graph_uniformity"] = 2 * steps * t.batch_size ** 2 * d
    flops = {k: 2 * (1 + backward.get(k, 2)) * v for k, v in macs.items()}  # 2 FLOPs per multiply-add
    return {"model": model_name, "dataset": dataset, "flops": flops, "total_flops": sum(flops.values()),
            "steps": steps, "shortcuts": shortcuts}


def _local_propagation_edges(cfg, split, batches: int = 16) -> float:
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


# The configurations compared: gsau's default (packed) batching, the same with the opt-in bfloat16
# all-item softmax, length-bucketed batching, the
# paper's per-prefix batching (every prefix padded to max_len), and that scheme implemented naively
# (torch's Bernoulli dropout, no exact shortcuts, default allocator). All train on the same samples
# with the same model and loss.
VARIANTS = {
    "gsau": ("packed", []),
    # Opt-in, not exact: the all-item softmax's three products on bfloat16 operands.
    "gsau, bfloat16 CE": ("packed", ["ce_dtype=bfloat16"]),
    "length buckets": ("prefix", []),
    "paper batching": ("padded", []),
    "paper batching, naive": ("padded", ["fast_dropout=false", "shortcuts=false"]),
}
MODELS = ("sasrec", "gsau-rec", "lightgcn")


def suite(dataset: str, steps: int, repeats: int, epochs: int, threads: int, echo=print,
          profile: bool = True) -> list[dict]:
    """Every configuration, `repeats` rounds. A round runs each configuration once, in its own
    process, so a slow spell of a shared machine lands on all of them instead of on the repeats of
    one; a row's step time is the median over rounds. The accuracy epochs and the profile run in
    the first round only."""
    rounds = []
    for r in range(repeats):
        if repeats > 1:
            echo(f" round {r + 1} of {repeats}")
        rounds.append(one_round(dataset, steps, epochs if r == 0 else 0, threads, echo, profile and r == 0))
    return merge_rounds(rounds)


def configurations():
    for model in MODELS:
        for variant, (batching, overrides) in VARIANTS.items():
            if model == "lightgcn" and variant != "gsau":
                continue  # no sequential batching or logits to vary
            yield model, variant, batching, overrides


def one_round(dataset: str, steps: int, epochs: int, threads: int, echo=print, profile: bool = False) -> list[dict]:
    rows = []
    for model, variant, batching, overrides in configurations():
        args = ["--model", model, "--dataset", dataset, "--batching", batching, "--steps", str(steps),
                "--repeats", "1", "--epochs", str(epochs), "--threads", str(threads)]
        for o in overrides:
            args += ["--set", o]
        if profile and model == "gsau-rec" and variant == "gsau":
            args.append("--profile")
        row = run_isolated(args)
        row["variant"] = variant
        echo(f"  {model:<9} {variant:<22} {row['seconds_per_epoch']:8.1f} s/epoch"
             + (f"  valid NDCG@20 {row['valid_ndcg@20']:.4f} after {epochs} epochs" if epochs else ""))
        rows.append(row)
    return rows


def merge_rounds(rounds: list[list[dict]]) -> list[dict]:
    """One row per configuration: the first round's row (accuracy, profile) with the median step
    time and evaluation throughput over all rounds and the largest peak memory."""
    merged = []
    if len({len(r) for r in rounds}) > 1:
        raise ValueError("benchmark rounds measured different numbers of configurations")
    for runs in zip(*rounds):
        if len({(r["model"], r["variant"]) for r in runs}) > 1:
            raise ValueError(f"benchmark rounds out of step: {[(r['model'], r['variant']) for r in runs]}")
        row = dict(runs[0])
        row["seconds_per_step_all"] = [r["seconds_per_step"] for r in runs]
        row["seconds_per_step"] = statistics.median(row["seconds_per_step_all"])
        row["seconds_per_epoch"] = row["seconds_per_step"] * row["steps_per_epoch"]
        row["eval_users_per_second"] = statistics.median(r["eval_users_per_second"] for r in runs)
        row["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
        row["rounds"] = len(runs)
        merged.append(row)
    return merged


def table(rows: list[dict]) -> str:
    head = ("| model | batching | s/step (median) | steps/epoch | s/epoch | eval users/s | peak RSS MiB | "
            "valid NDCG@20 (epochs) |\n|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        acc = f"{r['valid_ndcg@20']:.4f} ({r['accuracy_epochs']})" if "valid_ndcg@20" in r else "-"
        lines.append(f"| {r['model']} | {r['variant']} | {r['seconds_per_step']:.4f} | {r['steps_per_epoch']} | "
                     f"{r['seconds_per_epoch']:.1f} | {r['eval_users_per_second']:.0f} | {r['peak_rss_mib']:.0f} | {acc} |")
    return head + "\n".join(lines) + "\n"


def run_isolated(args: list[str]) -> dict:
    """One measurement in a fresh interpreter; returns its JSON line."""
    proc = subprocess.run([sys.executable, "-m", "gsau.bench", "one", *args], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"bench {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m gsau.bench")
    sub = p.add_subparsers(dest="cmd", required=True)
    one = sub.add_parser("one")
    one.add_argument("--model", required=True)
    one.add_argument("--dataset", default="beauty")
    one.add_argument("--batching", default="packed")
    one.add_argument("--steps", type=int, default=30)
    one.add_argument("--repeats", type=int, default=3)
    one.add_argument("--epochs", type=int, default=0)
    one.add_argument("--threads", type=int, default=0)
    one.add_argument("--set", action="append", default=[])
    one.add_argument("--profile", action="store_true")
    parts = sub.add_parser("components", help="time each part of a training step separately")
    parts.add_argument("--model", required=True)
    parts.add_argument("--dataset", default="beauty")
    parts.add_argument("--steps", type=int, default=15)
    parts.add_argument("--repeats", type=int, default=3)
    parts.add_argument("--threads", type=int, default=0)
    parts.add_argument("--set", action="append", default=[])
    parts.add_argument("--json", action="store_true", help="one JSON line instead of a table")
    a = p.parse_args(argv)
    if a.cmd == "components":
        rows = components(a.model, a.dataset, a.steps, a.repeats, a.threads, a.set)
        if a.json:
            print(json.dumps(rows))
        else:
            print(f"{a.model} on {a.dataset}, {torch.get_num_threads()} threads, median of {a.repeats} rounds "
                  f"of {a.steps} steps:")
            for r in rows:
                print(f"  {r['part']:<56} {r['ms_per_step']:8.1f} ms  {100 * r['share_of_step']:5.1f}% of a step")
        return
    print(json.dumps(measure_one(a.model, a.dataset, a.batching, a.steps, a.repeats, a.epochs, a.threads, a.set,
                                 a.profile)))


if __name__ == "__main__":
    main()
