"""`gsau bench`: seconds per training epoch (bounded steps, scaled), full-ranking evaluation
throughput and peak memory of gsau's presets.

Each configuration runs in its own process (`python -m gsau.bench one ...`) so its peak resident
memory is its own and no warm cache leaks between them. `benchmarks/run.py` puts these beside
RecBole's figures and the FLOP floor (benchmarks/flops.py) and writes BENCHMARKS.md;
benchmarks/components.py splits a step into its parts.
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


def setup(cfg):
    """What a timed step needs, built as the trainer builds it: (split, seeded model, optimiser,
    graph stream or None, sequential stream or None, the generator that orders batches)."""
    from gsau.trainer import make_optimizer, make_streams, prepare
    split, model = prepare(cfg)
    graph, seq = make_streams(cfg, split)
    return split, model, make_optimizer(cfg, model), graph, seq, np.random.default_rng(cfg.train.seed)


def run_steps(model, optimizer, graph, seq, rng, n: int) -> float:
    """Seconds for n joint training steps, drawn and taken as the trainer's epoch does (the same
    `train_step`, fresh cycles over the streams)."""
    from gsau.trainer import cycle, train_step
    model.train()
    g_it = cycle(graph, rng) if graph else None
    s_it = cycle(seq, rng) if seq else None
    t0 = time.perf_counter()
    for _ in range(n):
        train_step(model, optimizer, next(g_it) if g_it else None, next(s_it) if s_it else None)
    return time.perf_counter() - t0


def measure_one(model_name: str, dataset: str, batching: str, steps: int, repeats: int, epochs: int,
                threads: int, overrides: list[str]) -> dict:
    from gsau.config import resolve
    from gsau.evaluation import evaluate
    from gsau.runtime import keep_freed_memory
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    cfg = resolve(model_name, None, [f"seq_batching={batching}", *overrides], dataset=dataset)
    if cfg.net.shortcuts:  # the naive baseline keeps glibc's default allocator behaviour too
        keep_freed_memory()
    split, model, opt, graph, seq, rng = setup(cfg)
    prep = time.perf_counter() - t0
    steps_per_epoch = max(len(s) for s in (graph, seq) if s is not None)
    run_steps(model, opt, graph, seq, rng, 3)  # warm-up: allocator, thread pool, kernels, Adam's state
    per_step = [run_steps(model, opt, graph, seq, rng, steps) / steps for _ in range(repeats)]
    step_s = statistics.median(per_step)
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
    if epochs:
        # A fixed number of real epochs from a fresh model and optimiser, so a faster variant that
        # learns less shows.
        split, model, opt, graph, seq, rng = setup(cfg)
        t2 = time.perf_counter()
        for _ in range(epochs):
            run_steps(model, opt, graph, seq, rng, steps_per_epoch)
        out["accuracy_epochs"] = epochs
        out["accuracy_train_seconds"] = time.perf_counter() - t2
        out["valid_ndcg@20"] = evaluate(model, split, "valid", (20,))["ndcg@20"]
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


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


def suite(dataset: str, steps: int, repeats: int, epochs: int, threads: int, echo=print) -> list[dict]:
    """Every configuration, `repeats` rounds. A round runs each configuration once, in its own
    process, so a slow spell of a shared machine lands on all of them instead of on the repeats of
    one; a row's step time is the median over rounds. The accuracy epochs run in the first round
    only."""
    rounds = []
    for r in range(repeats):
        if repeats > 1:
            echo(f" round {r + 1} of {repeats}")
        rounds.append(one_round(dataset, steps, epochs if r == 0 else 0, threads, echo))
    return merge_rounds(rounds)


def configurations():
    for model in MODELS:
        for variant, (batching, overrides) in VARIANTS.items():
            if model == "lightgcn" and variant != "gsau":
                continue  # no sequential batching or logits to vary
            yield model, variant, batching, overrides


def one_round(dataset: str, steps: int, epochs: int, threads: int, echo=print) -> list[dict]:
    rows = []
    for model, variant, batching, overrides in configurations():
        args = ["--model", model, "--dataset", dataset, "--batching", batching, "--steps", str(steps),
                "--repeats", "1", "--epochs", str(epochs), "--threads", str(threads)]
        for o in overrides:
            args += ["--set", o]
        row = run_isolated(args)
        row["variant"] = variant
        echo(f"  {model:<9} {variant:<22} {row['seconds_per_epoch']:8.1f} s/epoch"
             + (f"  valid NDCG@20 {row['valid_ndcg@20']:.4f} after {epochs} epochs" if epochs else ""))
        rows.append(row)
    return rows


def merge_rounds(rounds: list[list[dict]]) -> list[dict]:
    """One row per configuration: the first round's row (accuracy) with the median step
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
    one = sub.add_parser("one", help="measure one configuration; prints one JSON line")
    one.add_argument("--model", required=True)
    one.add_argument("--dataset", default="beauty")
    one.add_argument("--batching", default="packed")
    one.add_argument("--steps", type=int, default=30)
    one.add_argument("--repeats", type=int, default=3)
    one.add_argument("--epochs", type=int, default=0)
    one.add_argument("--threads", type=int, default=0)
    one.add_argument("--set", action="append", default=[])
    a = p.parse_args(argv)
    print(json.dumps(measure_one(a.model, a.dataset, a.batching, a.steps, a.repeats, a.epochs, a.threads, a.set)))


if __name__ == "__main__":
    main()
