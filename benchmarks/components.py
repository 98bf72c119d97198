#!/usr/bin/env python3
"""Where a joint training step of gsau goes: each part timed on its own, and (--profile) the ops
taking the most CPU time under torch.profiler.

    python benchmarks/components.py --model gsau-rec [--dataset beauty] [--steps 15] [--repeats 3]
                                    [--threads 2] [--set key=value ...] [--profile] [--json]

benchmarks/run.py runs it in its own process and puts the result on BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch


def _prepared(model_name: str, dataset: str, threads: int, overrides: list[str] | None):
    """A seeded model, its optimiser and endless batch iterators, built as `gsau bench` builds them."""
    from gsau.bench import setup
    from gsau.config import resolve
    from gsau.runtime import keep_freed_memory
    from gsau.trainer import cycle
    if threads:
        torch.set_num_threads(threads)
    keep_freed_memory()
    cfg = resolve(model_name, None, list(overrides or []), dataset=dataset)
    _, model, opt, graph, seq, rng = setup(cfg)
    model.train()
    return model, opt, cycle(graph, rng) if graph else None, cycle(seq, rng) if seq else None


def components(model_name: str, dataset: str, steps: int = 15, repeats: int = 3, threads: int = 0,
               overrides: list[str] | None = None) -> list[dict]:
    """Milliseconds per step of each part of a joint training step, timed separately on the same
    pre-built batches: the whole step, the graph objectives (forward + backward), the sequential
    encoder alone and with its objectives (forward + backward), the optimiser step, and building
    the next batches. Parts are timed in interleaved rounds (median over rounds of the mean over
    `steps` calls), so a slow spell of a shared machine falls on all of them."""
    from gsau.trainer import train_step
    model, opt, g_it, s_it = _prepared(model_name, dataset, threads, overrides)

    def next_batches():
        return next(g_it) if g_it else None, next(s_it) if s_it else None

    batches = [next_batches() for _ in range(steps)]

    def backward_of(loss: torch.Tensor):
        model.zero_grad(set_to_none=True)
        loss.backward()

    # The optimiser step right after the whole step, whose backward left a gradient on every
    # parameter (the parts below zero all but their own, and fused Adam skips gradient-less ones).
    parts = {"whole step (batches pre-built)": lambda g, q: train_step(model, opt, g, q),
             "optimiser step": lambda g, q: opt.step()}
    if g_it is not None:
        parts["graph objectives (forward + backward)"] = lambda g, q: backward_of(model.total(model.graph_terms(g)))
    if s_it is not None:
        parts["sequential encoder (forward + backward)"] = lambda g, q: backward_of(
            model.encode_sequences(q)[0].sum())
        parts["sequential encoder and objectives (forward + backward)"] = lambda g, q: backward_of(
            model.total(model.sequence_terms(q)))
    parts["next batches"] = lambda g, q: next_batches()

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


def top_ops(model_name: str, dataset: str, steps: int = 15, threads: int = 0, overrides: list[str] | None = None,
            n: int = 10) -> list[dict]:
    """The n ops with the most self CPU time over `steps` whole training steps (batches drawn
    inside, as in training) after a warm-up: each op's share of the profiled time and calls per step."""
    from torch.profiler import ProfilerActivity, profile

    from gsau.trainer import train_step
    model, opt, g_it, s_it = _prepared(model_name, dataset, threads, overrides)

    def step():
        train_step(model, opt, next(g_it) if g_it else None, next(s_it) if s_it else None)

    for _ in range(3):  # warm-up: allocator, thread pool, kernels, Adam's state
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "share": e.self_cpu_time_total / total, "calls_per_step": e.count / steps}
            for e in events[:n]]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", default="beauty")
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--profile", action="store_true", help="also list the ops taking the most CPU time")
    p.add_argument("--json", action="store_true", help="one JSON line instead of tables")
    a = p.parse_args(argv)
    if a.steps < 1 or a.repeats < 1:
        p.error("--steps and --repeats must be at least 1")
    out = {"parts": components(a.model, a.dataset, a.steps, a.repeats, a.threads, a.set)}
    if a.profile:
        out["top_ops"] = top_ops(a.model, a.dataset, a.steps, a.threads, a.set)
    if a.json:
        print(json.dumps(out))
        return
    print(f"{a.model} on {a.dataset}, {torch.get_num_threads()} threads, median of {a.repeats} rounds "
          f"of {a.steps} steps:")
    for r in out["parts"]:
        print(f"  {r['part']:<56} {r['ms_per_step']:8.1f} ms  {100 * r['share_of_step']:5.1f}% of a step")
    if a.profile:
        print(f"ops by self CPU time over {a.steps} whole steps:")
        for r in out["top_ops"]:
            print(f"  {r['op']:<56} {100 * r['share']:5.1f}%  {r['calls_per_step']:6.0f} calls/step")


if __name__ == "__main__":
    # From a checkout without an installed gsau too, like benchmarks/run.py.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    main()
