#!/usr/bin/env python3
"""How gsau's training, evaluation and import grow with interactions and items; writes SCALING.md.

    python benchmarks/scaling.py [--threads 1] [--steps 3] [--out SCALING.md] [--toys-runs DIR ...]
    python benchmarks/scaling.py --quick --out /tmp/SCALING.md      # a tiny grid in seconds (tests)

Data: `gsau data synth` datasets (users = interactions / 10, so a mean of 10 interactions a user),
made once into --data-dir. Each case runs in a fresh process (`scaling.py one ...`), so its peak
memory is its own: the model, optimiser and streams as the trainer builds them, one warm-up step,
then --steps single training steps, each timed in wall and CPU seconds; the median step times the
steps of an epoch is the epoch (as `gsau bench` scales a bounded number of steps). Then full-ranking
evaluation of a sample of users (chunks of eval_batch_size), with its own peak memory. The import
section writes a 10M-row CSV of the largest dataset and imports it with `gsau data import` (the
streaming reader), and a 1M-row head of it with the exact reader, for contrast. The accuracy
section reads the run directories given with --toys-runs (trained with the commands it quotes).

The machine may be shared: every figure is a median of single steps, CPU seconds are shown beside
wall seconds (a busy neighbour inflates wall time, much less CPU time), and the load average at the
start and end is recorded.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from run import cpu_model  # noqa: E402  (benchmarks/run.py: the CPU's name, as BENCHMARKS.md gives it)
MODELS = ("gsau-rec", "sasrec")
SAMPLED = ["sequence_loss=sampled_ce", "sampling=uniform", "sampled_negatives=1000"]
CHUNK_ITEMS = {False: 65_536, True: 64}  # the chunked CE's items per chunk, by --quick
# The large-graph approximations (gsau/optim.py, NetConfig.graph_refresh): lazy Adam on the tables
# and, for gsau-rec, LightGCN's layers refreshed every REFRESH steps.
REFRESH = {False: 400, True: 4}  # --graph-refresh replaces the first
TARGET = {"interactions": 10_000_000, "items": 1_000_000, "epoch_minutes": 20, "peak_gib": 8, "import_minutes": 2}


def variants(chunk_items: int) -> dict[str, list[str]]:
    return {"exact": [], "chunked": [f"ce_chunk_items={chunk_items}"], "sampled": SAMPLED}


def case_sets(model: str, variant: str, quick: bool) -> list[str]:
    """The options of a case. "approx" (and "approx-2threads", the same on both cores): the sampled
    softmax with lazy Adam, and for gsau-rec the graph refreshed every REFRESH steps."""
    if variant.startswith("approx"):
        return SAMPLED + ["optimizer=lazy_adam"] + ([f"graph_refresh={REFRESH[quick]}"] if model == "gsau-rec" else [])
    return variants(CHUNK_ITEMS[quick])[variant]


def grid(quick: bool) -> list[dict]:
    """The cases: growth with interactions (items fixed), with items (interactions fixed), and the
    target size. A case two groups share is measured once. --quick: four tiny cases, each group
    with two points a model, for the test."""
    if quick:
        plan = [("interactions", n, 300, "gsau-rec", "sampled") for n in (2_000, 4_000)]
        plan += [("items", 2_000, i, "sasrec", "exact") for i in (100, 300)]
        plan += [("target", 4_000, 300, "gsau-rec", v) for v in ("sampled", "approx")]
    else:
        plan = [("interactions", n, 100_000, m, v) for n in (300_000, 1_000_000, 3_000_000, 10_000_000)
                for m in MODELS for v in ("exact", "sampled")]
        plan += [("items", 1_000_000, i, m, v) for i in (10_000, 100_000, 1_000_000) for m in MODELS
                 for v in (("exact", "chunked", "sampled") if m == "gsau-rec" else ("exact", "sampled"))]
        plan += [("target", TARGET["interactions"], TARGET["items"], m, v) for m in MODELS
                 for v in ("sampled", "approx", "approx-2threads")]
    cases: dict[tuple, dict] = {}
    for group, n, items, model, variant in plan:
        case = cases.setdefault((n, items, model, variant), {
            "groups": [], "interactions": n, "items": items, "users": n // 10, "model": model,
            "variant": variant, "sets": case_sets(model, variant, quick), "eval_batch_sizes": [1024],
            "threads": 2 if variant.endswith("2threads") else None})
        case["groups"].append(group)
        if group == "target":  # evaluation's memory at the default chunk and a smaller one
            # (the approximations change training, not the model evaluation ranks with)
            case["eval_batch_sizes"] = [] if variant.startswith("approx") else [1024, 256]
    return list(cases.values())


def dataset_dir(data_dir: Path, users: int, items: int, interactions: int) -> Path:
    """The synthetic dataset of this size, made on first use (seed 0)."""
    path = data_dir / f"synth-{interactions}-{items}-{users}"
    if not (path / "dataset.npz").exists():
        from gsau.data.synth import synthesize
        synthesize(users, items, interactions, seed=0, name=path.name).data.save(path)
    return path


# -- one case, in its own process -----------------------------------------------------------------

def peak_mib() -> float:
    """This process's peak resident memory (VmHWM: its own, not inherited across exec)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024
    except (OSError, IndexError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> bool:
    """Start a new peak from the current resident memory (Linux clear_refs); False if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def step_parts(net, optimizer, g_it, s_it, steps: int) -> dict[str, float]:
    """Median CPU seconds of each part of a training step: drawing the batches, the graph terms'
    forward pass, the sequence terms' forward pass, the backward pass and Adam's update."""
    parts: dict[str, list[float]] = {}
    for _ in range(steps):
        clock = [time.process_time()]
        graph_batch, seq_batch = next(g_it) if g_it else None, next(s_it) if s_it else None
        clock.append(time.process_time())
        terms = net.graph_terms(graph_batch) if graph_batch is not None else {}
        clock.append(time.process_time())
        terms.update(net.sequence_terms(seq_batch) if seq_batch is not None else {})
        clock.append(time.process_time())
        optimizer.zero_grad(set_to_none=True)
        net.total(terms).backward()
        clock.append(time.process_time())
        optimizer.step()
        clock.append(time.process_time())
        for name, a, b in zip(("batches", "graph forward", "sequence forward", "backward", "adam"), clock, clock[1:]):
            parts.setdefault(name, []).append(b - a)
    return {name: statistics.median(v) for name, v in parts.items()}


def measure(model: str, dataset: str, sets: list[str], steps: int, eval_users: int, threads: int,
            eval_batch_sizes: list[int], parts: int = 0) -> dict:
    import torch
    from gsau import bench
    from gsau.config import resolve
    from gsau.evaluation import user_ranks
    from gsau.runtime import keep_freed_memory
    from gsau.trainer import cycle, train_step
    torch.set_num_threads(threads)
    keep_freed_memory()
    t0 = time.perf_counter()
    cfg = resolve(model, None, sets, dataset=dataset)
    split, net, optimizer, graph, seq, rng = bench.setup(cfg)  # as the trainer builds them
    prepare_s = time.perf_counter() - t0
    steps_per_epoch = max(len(s) for s in (graph, seq) if s is not None)
    refresh = cfg.net.graph_refresh
    if refresh:  # time a window of graph_refresh steps: it holds one refresh of the layers
        steps = max(steps, refresh)
    net.train()
    # The streams' iterators once, as in an epoch: the shuffle is paid by the warm-up step.
    g_it, s_it = (cycle(stream, rng) if stream is not None else None for stream in (graph, seq))
    wall, cpu = [], []
    for k in range(steps + 1):  # the first is the warm-up: allocator, thread pool, Adam's state
        t, c = time.perf_counter(), time.process_time()
        train_step(net, optimizer, next(g_it) if g_it else None, next(s_it) if s_it else None)
        if k:
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    split_step = step_parts(net, optimizer, g_it, s_it, parts) if parts else None
    refresh_cpu = None
    if refresh:  # one refresh alone (LightGCN's layers of every node, no gradient, into its buffer)
        c = time.process_time()
        net.graph.layers_into(*net.graph_tables(), net._history_buffer)
        refresh_cpu = time.process_time() - c
    train_peak = peak_mib()
    users = np.arange(1, min(eval_users, split.n_users) + 1)
    evaluations = []
    for batch_size in eval_batch_sizes:
        separate = reset_peak()
        t1, c1 = time.perf_counter(), time.process_time()
        user_ranks(net, split, "valid", batch_size=batch_size, users=users)
        evaluations.append({"batch_size": batch_size, "users_per_second": len(users) / (time.perf_counter() - t1),
                            "cpu_per_user": (time.process_time() - c1) / len(users),
                            "peak_mib": peak_mib() if separate else None})
    # The median step, or with graph_refresh the mean over a window holding one refresh.
    average = statistics.mean if refresh else statistics.median
    step_s, step_cpu = average(wall), average(cpu)
    first = evaluations[0] if evaluations else {"users_per_second": None, "peak_mib": None}
    return {"graph_refresh": refresh, "refresh_cpu_seconds": refresh_cpu, "users": split.n_users, "items": split.n_items, "train_interactions": int(len(split.train_items)),
            "threads": torch.get_num_threads(), "prepare_seconds": prepare_s, "steps_timed": steps,
            "step_seconds": step_s, "step_seconds_all": wall, "step_cpu_seconds": step_cpu,
            "steps_per_epoch": steps_per_epoch, "epoch_seconds": step_s * steps_per_epoch,
            "epoch_cpu_seconds": step_cpu * steps_per_epoch, "train_peak_mib": train_peak,
            "step_parts_cpu": split_step, "eval_users": int(len(users)), "evaluations": evaluations,
            "eval_users_per_second": first["users_per_second"], "eval_peak_mib": first["peak_mib"]}


def case_key(row: dict) -> tuple:
    return row["interactions"], row["items"], row["model"], row["variant"]


def run_case(case: dict, data_dir: Path, steps: int, eval_users: int, threads: int) -> dict:
    dataset = dataset_dir(data_dir, case["users"], case["items"], case["interactions"])
    args = [sys.executable, str(Path(__file__).resolve()), "one", "--model", case["model"], "--dataset", str(dataset),
            "--steps", str(steps), "--eval-users", str(eval_users), "--threads", str(case.get("threads") or threads),
            "--eval-batch-sizes", ",".join(map(str, case["eval_batch_sizes"])) or "none",
            "--parts", str(steps if "target" in case["groups"] else 0)]
    for s in case["sets"]:
        args += ["--set", s]
    proc = subprocess.run(args, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    if proc.returncode:
        raise RuntimeError(f"scaling case {case} failed:\n{proc.stderr[-3000:]}")
    row = dict(case)
    row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    return row


# -- how much of the graph a batch reaches ---------------------------------------------------------

def reach(crow: np.ndarray, col: np.ndarray, nodes: np.ndarray) -> dict:
    """What exact LightGCN (2 layers) reads for a batch's nodes, in a CSR adjacency (crow, col):
    its last layer needs the rows A[nodes, :], the layer before it the rows of the nodes' 1-hop
    neighbourhood N1 (the nodes and their neighbours). Counts of nodes and of adjacency entries."""
    nodes = np.unique(nodes)
    starts, ends = crow[nodes], crow[nodes + 1]
    neighbours = np.concatenate([col[a:b] for a, b in zip(starts, ends)]) if len(nodes) else np.zeros(0, np.int64)
    n1 = np.union1d(nodes, neighbours)
    degree = np.diff(crow)
    return {"nodes": int(len(nodes)), "n1_nodes": int(len(n1)), "entries_nodes": int(degree[nodes].sum()),
            "entries_n1": int(degree[n1].sum())}


def neighbourhood(dataset: str, batch: int = 512, draws: int = 5, seed: int = 0) -> dict:
    """Median share of the graph that one training batch of `batch` (user, item) pairs reaches (as
    `reach` counts it), over `draws` batches drawn from the training pairs."""
    from gsau.data import load_dataset
    from gsau.data.split import LeaveOneOut
    from gsau.encoders.lightgcn import normalized_adjacency
    split = LeaveOneOut.from_interactions(load_dataset(dataset))
    users, items = split.train_pairs()
    adjacency = normalized_adjacency(users, items, split.n_users, split.n_items)
    crow, col = adjacency.crow_indices().numpy().astype(np.int64), adjacency.col_indices().numpy().astype(np.int64)
    n, entries = split.n_users + split.n_items, len(col)
    rng = np.random.default_rng(seed)
    shares = []
    for _ in range(draws):
        pick = rng.integers(0, len(users), batch)
        r = reach(crow, col, np.concatenate([users[pick] - 1, split.n_users + items[pick] - 1]))
        shares.append((r["nodes"], r["n1_nodes"] / n, r["entries_nodes"] / entries, r["entries_n1"] / entries))
    med = [statistics.median(x) for x in zip(*shares)]
    return {"dataset": Path(dataset).name, "nodes": n, "entries": entries, "batch": batch, "draws": draws,
            "batch_nodes": med[0], "n1_share": med[1], "last_layer_share": med[2], "n1_entries_share": med[3]}


def reach_section(found: list[dict], needed: float | None = None) -> str:
    if not found:
        return ""
    rows = "".join(f"| {f['dataset']} | {size(f['nodes'])} | {size(f['entries'])} | {f['batch_nodes']:.0f} | "
                   f"{100 * f['n1_share']:.1f}% | {100 * f['last_layer_share']:.1f}% | {100 * f['n1_entries_share']:.1f}% | "
                   f"{100 * (f['last_layer_share'] + f['n1_entries_share']) / 2:.0f}% |\n" for f in found)
    big = max(found, key=lambda f: f["entries"])
    return ("## How much of the graph one batch reaches\n\n"
            "Exact LightGCN with 2 layers reads, for a batch's users and items, the adjacency rows of those nodes "
            "(the last layer) and the rows of their whole 1-hop neighbourhood (the layer before). Measured by "
            f"`neighbourhood()` in benchmarks/scaling.py: batches of {big['batch']} training pairs, median of "
            f"{big['draws']} draws. The last column is the share of two whole propagations (each way) that an exact "
            "batch-local step would still do; today's step does one whole propagation and the batch's rows.\n\n"
            "| dataset | nodes | adjacency entries | batch nodes | 1-hop nodes | entries, batch rows | entries, 1-hop rows "
            "| exact local step / whole |\n|---|---|---|---|---|---|---|---|\n" + rows
            + f"\nAt the largest size a batch of {big['batch']} pairs reaches {100 * big['n1_share']:.0f}% of the nodes and "
            f"{100 * big['n1_entries_share']:.0f}% of the adjacency entries within one hop: the popular items of a "
            "power-law catalogue neighbour almost every batch, and their users are most of the graph. So restricting "
            "exact propagation to the batch's neighbourhood would make the graph work of a step at most "
            f"{(1 + big['last_layer_share']) / max(1e-9, big['last_layer_share'] + big['n1_entries_share']):.1f}x "
            "smaller than today's (one whole propagation and the batch's rows, each way), "
            + (f"far from the {needed:.0f}x the target needs" if needed else "far from what the target needs")
            + ": an exact gsau-rec step at this size costs whole-graph "
            "propagations, and only approximations (stale embeddings refreshed every few steps, sampled "
            "neighbours, larger batches, lazy row-wise Adam) or a faster device change that."
            + (f" The exception is a sparse graph: in {sparse['dataset']} a batch's 1-hop rows hold "
               f"{100 * sparse['n1_entries_share']:.1f}% of the entries, and there a batch-local step would pay."
               if (sparse := min(found, key=lambda f: f["n1_entries_share"]))["n1_entries_share"] < 0.1 else "")
            + "\n")


# -- import ---------------------------------------------------------------------------------------

def _digits(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative integers as ASCII digit rows, right-aligned in [n, 20], and their widths."""
    width = np.maximum(1, np.floor(np.log10(np.maximum(values, 1))).astype(np.int64) + 1)
    power = 10 ** np.arange(19, -1, -1, dtype=np.uint64)
    digits = (values.astype(np.uint64)[:, None] // power[None, :]) % 10
    return digits.astype(np.uint8) + ord("0"), width


def write_csv(data, path: Path, seed: int = 0, block: int = 1 << 18) -> int:
    """`user,item,timestamp` rows of an Interactions in shuffled order (the times keep each user's
    order), written a block of rows at a time with numpy; returns the number of bytes."""
    users = np.repeat(np.arange(1, data.n_users + 1), data.lengths)
    order = np.random.default_rng(seed).permutation(data.n_interactions)
    start = 1_600_000_000
    with open(path, "wb") as f:
        f.write(b"user,item,timestamp\n")
        for lo in range(0, len(order), block):
            rows = order[lo: lo + block]
            cols = [_digits(users[rows]), _digits(data.items[rows]), _digits(start + rows)]
            widths = np.stack([w for _, w in cols], axis=1) + 1  # each value and its separator
            out = np.zeros((len(rows), int(widths.sum(axis=1).max())), dtype=np.uint8)
            at = np.zeros(len(rows), dtype=np.int64)
            for k, (digits, w) in enumerate(cols):
                for j in range(int(w.max())):
                    has = j < w
                    out[has, at[has] + j] = digits[has, 20 - w[has] + j]
                at += w
                out[np.arange(len(rows)), at] = ord(",") if k < 2 else ord("\n")
                at += 1
            keep = np.arange(out.shape[1])[None, :] < at[:, None]
            f.write(out[keep].tobytes())
    return path.stat().st_size


def readers_chunk() -> str:
    from gsau.data import readers
    return f"{readers.CHUNK_RECORDS:,}"


def write_quoted(src: Path, dst: Path, block: int = 1 << 24) -> int:
    """`src` with a quoted text column holding a comma added to every line (a review, say): CSV
    the block reader leaves to the csv module (read_delimited_chunks). Returns its bytes."""
    with open(src, "rb") as f, open(dst, "wb") as out:
        rest = b""
        while chunk := f.read(block):
            chunk = rest + chunk
            cut = chunk.rfind(b"\n") + 1
            out.write(chunk[:cut].replace(b"\n", b',"fun, for all ages"\n'))
            rest = chunk[cut:]
        out.write(rest)
    return dst.stat().st_size


IMPORT = """
import json, sys, time
from pathlib import Path
sys.argv = ["gsau"] + sys.argv[1:]
t = time.perf_counter()
if sys.argv[1] == "exact":
    from gsau.data import readers
    from gsau.data.interactions import build
    path = Path(sys.argv[2])
    data = build(readers.read_exact(path, "csv", None), "x", str(path))
else:
    from gsau.cli import main
    assert main(sys.argv[1:]) == 0
status = Path("/proc/self/status").read_text()
print(json.dumps({"seconds": time.perf_counter() - t, "peak_mib": int(status.split("VmHWM:")[1].split()[0]) / 1024}))
"""


def measure_import(data_dir: Path, users: int, items: int, interactions: int, exact_rows: int) -> dict:
    from gsau.data import Interactions
    data = Interactions.load(dataset_dir(data_dir, users, items, interactions))
    csv = data_dir / f"synth-{interactions}.csv"
    t0 = time.perf_counter()
    size = write_csv(data, csv)
    write_s = time.perf_counter() - t0

    def run(*args):
        proc = subprocess.run([sys.executable, "-c", IMPORT, *map(str, args)], capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"import {args} failed:\n{proc.stderr[-2000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])
    streamed = run("data", "import", csv, "--out", data_dir / "imported")
    head = data_dir / f"synth-{interactions}-head.csv"
    with open(csv, "rb") as src, open(head, "wb") as dst:
        for _ in range(exact_rows + 1):
            dst.write(src.readline())
    quoted = data_dir / f"synth-{interactions}-quoted.csv"
    quoted_bytes = write_quoted(csv, quoted)
    chunked = run("data", "import", quoted, "--out", data_dir / "imported-quoted")
    return {"rows": interactions, "bytes": size, "write_seconds": write_s, "streaming": streamed,
            "quoted_bytes": quoted_bytes, "quoted": chunked,
            "streaming_head": run("data", "import", head, "--out", data_dir / "imported-head"),
            "exact_rows": exact_rows, "exact_head": run("exact", head)}


# -- report ---------------------------------------------------------------------------------------

def slope(xs, ys) -> float | None:
    """Least-squares exponent b of y = a x^b over the points (None with fewer than 2)."""
    if len(xs) < 2:
        return None
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def fits(rows: list[dict], group: str, axis: str) -> list[dict]:
    out = []
    for model in MODELS:
        for variant in ("exact", "chunked", "sampled"):
            pts = sorted((r[axis], r) for r in rows if group in r["groups"] and r["model"] == model and r["variant"] == variant)
            if len(pts) < 2:
                continue
            xs = [x for x, _ in pts]
            out.append({"model": model, "variant": variant, "points": len(pts),
                        "epoch": slope(xs, [r["epoch_cpu_seconds"] for _, r in pts]),
                        "step": slope(xs, [r["step_cpu_seconds"] for _, r in pts]),
                        "steps": slope(xs, [r["steps_per_epoch"] for _, r in pts]),
                        "memory": slope(xs, [r["train_peak_mib"] for _, r in pts])})
    return out


def hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def size(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n / 1e3:g}k" if n >= 1000 else str(n)


def case_table(rows: list[dict], group: str) -> str:
    head = ("| interactions | items | users | model | softmax | s/step (median) | CPU s/step | steps/epoch | "
            "epoch (wall) | epoch (CPU) | peak MiB (train) | eval users/s | peak MiB (eval) |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in sorted((r for r in rows if group in r["groups"]),
                    key=lambda r: (r["interactions"], r["items"], r["model"], r["variant"])):
        eval_peak = f"{r['eval_peak_mib']:.0f}" if r.get("eval_peak_mib") is not None else "-"
        eval_rate = f"{r['eval_users_per_second']:.0f}" if r.get("eval_users_per_second") is not None else "-"
        lines.append(f"| {size(r['interactions'])} | {size(r['items'])} | {size(r['users'])} | {r['model']} | {r['variant']} | "
                     f"{r['step_seconds']:.3f} | {r['step_cpu_seconds']:.3f} | {r['steps_per_epoch']} | "
                     f"{hms(r['epoch_seconds'])} | {hms(r['epoch_cpu_seconds'])} | {r['train_peak_mib']:.0f} | "
                     f"{eval_rate} | {eval_peak} |")
    return head + "\n".join(lines) + "\n"


def eval_table(rows: list[dict]) -> str:
    """Evaluation at the target size: users ranked per second and the memory of ranking, by chunk."""
    lines = ["| model | items | eval_batch_size | users ranked | users/s | CPU s per user | peak MiB while ranking |",
             "|---|---|---|---|---|---|---|"]
    for r in (r for r in rows if "target" in r["groups"]):
        for e in r["evaluations"]:
            peak = "-" if e["peak_mib"] is None else f"{e['peak_mib']:.0f}"
            lines.append(f"| {r['model']} | {size(r['items'])} | {e['batch_size']} | {r['eval_users']} | "
                         f"{e['users_per_second']:.0f} | {e['cpu_per_user']:.4f} | {peak} |")
    return "\n".join(lines) + "\n"


def fit_table(rows: list[dict], group: str, axis: str) -> str:
    head = (f"| model | softmax | points | epoch CPU s ~ {axis}^b | step CPU s ~ {axis}^b | steps/epoch ~ {axis}^b | "
            f"peak memory ~ {axis}^b |\n|---|---|---|---|---|---|---|\n")

    def f(x):
        return "-" if x is None else f"{x:.2f}"
    return head + "\n".join(f"| {r['model']} | {r['variant']} | {r['points']} | {f(r['epoch'])} | {f(r['step'])} | "
                            f"{f(r['steps'])} | {f(r['memory'])} |" for r in fits(rows, group, axis)) + "\n"


def toys_section(run_dirs: list[str], record: Path) -> str:
    """Exact against sampled softmax on Toys at the same seed and epochs, from run directories."""
    if not run_dirs:
        return ("Not measured in this run (pass the run directories with --toys-runs; the commands are "
                "`gsau train --model gsau-rec --dataset toys --epochs 10 --set lr=0.003 [--set sequence_loss=sampled_ce "
                "--set sampling=uniform|popularity --set sampled_negatives=1000] --out runs/...`).\n")
    lines = ["| run | sequence loss | epochs | valid NDCG@20 at the last epoch | valid Recall@10 at the last epoch | "
             "best epoch | test Recall@10 | test NDCG@10 | train s/epoch (median) |", "|---|---|---|---|---|---|---|---|---|"]
    runs = []
    for d in map(Path, run_dirs):
        log = [json.loads(x) for x in (d / "log.jsonl").read_text().splitlines()]
        metrics = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").exists() else None
        net = (metrics or {}).get("config", {}).get("net") or _config_net(d)
        loss = _settings(d)
        test = metrics["test"] if metrics else {}
        runs.append({"name": d.name, "loss": loss, "exact": net["sequence_loss"] == "ce", "epochs": len(log), "test": test})
        lines.append(f"| {d.name} | {loss} | {len(log)} | {log[-1]['valid_ndcg@20']:.4f} | {log[-1]['valid_recall@10']:.4f} | "
                     f"{metrics['best_epoch'] if metrics else '-'} | {test.get('recall@10', float('nan')):.4f} | "
                     f"{test.get('ndcg@10', float('nan')):.4f} | "
                     f"{statistics.median(h['train_seconds'] for h in log):.0f} |")
    epochs = {r["epochs"] for r in runs}
    if record.exists() and len(epochs) == 1:
        # The committed exact run (results/runs) at the same epoch: same seed and config (a different
        # thread count changes only the last digits).
        n = epochs.pop()
        log = [json.loads(x) for x in (record / "log.jsonl").read_text().splitlines()]
        if len(log) >= n:
            h = log[n - 1]
            shown = record.relative_to(ROOT) if record.is_relative_to(ROOT) else record
            lines.append(f"| {shown} (epoch {n} of its {len(log)}) | ce | {n} | {h['valid_ndcg@20']:.4f} | "
                         f"{h['valid_recall@10']:.4f} | - | - | - | {statistics.median(x['train_seconds'] for x in log[:n]):.0f} |")
    commands = list(dict.fromkeys(_train_command(Path(d)) for d in run_dirs))
    exact = next((r for r in runs if r["exact"] and r["test"]), None)
    notes = []
    if exact:
        for r in runs:
            if not r["exact"] and r["test"]:
                notes.append(f"{r['loss']}: test Recall@10 {r['test']['recall@10'] - exact['test']['recall@10']:+.4f}, "
                             f"NDCG@10 {r['test']['ndcg@10'] - exact['test']['ndcg@10']:+.4f} against the exact CE")
    summary = ("\nAt the same seed and epochs, " + "; ".join(notes) + ". The train seconds were measured while other "
               "jobs shared the machine (the tables above time the losses).\n") if notes else ""
    return ("Trained with " + ", ".join(f"`{c}`" for c in commands) + ".\n\n" + "\n".join(lines) + "\n" + summary)


def toys_full_section(run_dirs: list[str], record: Path) -> str:
    """Runs trained to early stopping on Toys against the committed exact record (same seed and lr):
    what an approximation costs once both have converged, not after a fixed number of epochs."""
    if not run_dirs:
        return ""
    lines = ["| run | settings | epochs run | best epoch | valid NDCG@20 (best) | test Recall@10 | test NDCG@10 | "
             "train s/epoch (median) |", "|---|---|---|---|---|---|---|---|"]
    rows = []
    for d in [*map(Path, run_dirs), record]:
        log = [json.loads(x) for x in (d / "log.jsonl").read_text().splitlines()]
        metrics = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").exists() else None
        shown = d.relative_to(ROOT) if d.is_relative_to(ROOT) else d.name
        settings = "exact (ce, adam)" if d == record else _settings(d)
        best = max(log, key=lambda h: h["valid_ndcg@20"])
        test = (metrics or {}).get("test", {})
        state = str(metrics["best_epoch"]) if metrics else f"{best['epoch']} so far (stopped unfinished)"
        rows.append((d, metrics, test))
        lines.append(f"| {shown} | {settings} | {len(log)} | {state} | {best['valid_ndcg@20']:.4f} | "
                     + (f"{test['recall@10']:.4f} | {test['ndcg@10']:.4f}" if test else "- | -")
                     + f" | {statistics.median(h['train_seconds'] for h in log):.0f} |")
    exact = rows[-1][2]
    notes = [f"{_settings(d)}: test Recall@10 {t['recall@10'] - exact['recall@10']:+.4f} "
             f"({100 * (t['recall@10'] / exact['recall@10'] - 1):+.1f}%), NDCG@10 {t['ndcg@10'] - exact['ndcg@10']:+.4f}, "
             f"best epoch {m['best_epoch']} against {rows[-1][1]['best_epoch']}"
             for d, m, t in rows[:-1] if t and exact]
    return ("\nTo early stopping (patience 10 on validation NDCG@20), against the committed exact run: "
            + ", ".join(f"`{_train_command(Path(d))}`" for d in run_dirs) + ".\n\n" + "\n".join(lines) + "\n"
            + ("\nOnce both have converged: " + "; ".join(notes) + ".\n" if notes else ""))


def _settings(run_dir: Path) -> str:
    """How a run departs from exact training: its sequence loss, optimiser and graph refresh."""
    net, train = _config_net(run_dir), _config_train(run_dir)
    text = net["sequence_loss"] + (f" ({net['sampling']}, {net['sampled_negatives']} candidates)"
                                   if net["sequence_loss"] == "sampled_ce" else "")
    if train.get("optimizer", "adam") != "adam":
        text += f", {train['optimizer']}"
    if net.get("graph_refresh"):
        text += f", graph_refresh={net['graph_refresh']}"
    return text


def _train_command(run_dir: Path) -> str:
    """The `gsau train` command line of a run, from its config.yaml (the settings this section compares)."""
    import yaml
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    net, train = cfg["net"], cfg["train"]
    sets = [f"lr={train['lr']:g}"]
    if net["sequence_loss"] == "sampled_ce":
        sets += ["sequence_loss=sampled_ce", f"sampling={net['sampling']}", f"sampled_negatives={net['sampled_negatives']}"]
    if train.get("optimizer", "adam") != "adam":
        sets.append(f"optimizer={train['optimizer']}")
    if net.get("graph_refresh"):
        sets.append(f"graph_refresh={net['graph_refresh']}")
    threads = f" --threads {train['threads']}" if train.get("threads") else ""
    return (f"gsau train --model {cfg['model']} --dataset {cfg['data']['dataset']} --epochs {train['epochs']}"
            + "".join(f" --set {x}" for x in sets) + threads + f" --out runs/{run_dir.name}")


def _config_net(run_dir: Path) -> dict:
    import yaml
    return yaml.safe_load((run_dir / "config.yaml").read_text())["net"]


def _config_train(run_dir: Path) -> dict:
    import yaml
    return yaml.safe_load((run_dir / "config.yaml").read_text())["train"]


def parts_table(rows: list[dict]) -> str:
    """Where a step's CPU time goes at the target size."""
    rows = [r for r in rows if "target" in r["groups"] and r.get("step_parts_cpu")]
    if not rows:
        return ""
    names = list(rows[0]["step_parts_cpu"])
    lines = ["| model | variant | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for r in rows:
        total = sum(r["step_parts_cpu"].values())
        lines.append(f"| {r['model']} | {r['variant']} | " + " | ".join(f"{r['step_parts_cpu'][n]:.2f} s ({100 * r['step_parts_cpu'][n] / total:.0f}%)"
                                                      for n in names) + " |")
    return "CPU seconds of each part of a step (median of as many steps as were timed):\n\n" + "\n".join(lines) + "\n"


def findings(rows: list[dict]) -> str:
    """What the fits say, with the mechanism behind each (the code's, not a guess)."""
    by_n = {(f["model"], f["variant"]): f for f in fits(rows, "interactions", "interactions")}
    by_i = {(f["model"], f["variant"]): f for f in fits(rows, "items", "items")}
    out = []
    g, s = by_n.get(("gsau-rec", "sampled")), by_n.get(("sasrec", "sampled"))
    if g and s:
        out.append(f"- **Interactions: gsau-rec grows faster than linear, SASRec about linearly.** An epoch is one step "
                   f"per batch of 512 training samples: steps grow as interactions^{g['steps']:.2f}. SASRec's step "
                   f"reads a batch of prefixes and the item table, neither of which grows with the data (CPU time per "
                   f"step ~ interactions^{s['step']:.2f}), so its epoch grows as interactions^{s['epoch']:.2f}. "
                   f"gsau-rec's step runs LightGCN over the whole training graph (every user, item and edge, in the "
                   f"forward and the backward pass) and Adam over the whole user and item tables, all of which grow "
                   f"with the data: its step grows as interactions^{g['step']:.2f}, its epoch as "
                   f"interactions^{g['epoch']:.2f}, tending to quadratic as the graph comes to dominate the step.")
    e, c, m = (by_i.get(("gsau-rec", v)) for v in ("exact", "chunked", "sampled"))
    if e and m:
        out.append(f"- **Items: the exact softmax grows with the catalogue, the sampled one much less.** The exact CE "
                   f"multiplies [batch x items] three times a step: gsau-rec's step grows as items^{e['step']:.2f} "
                   f"(exponents below 1 mean the fixed part of the step, the Transformer, the graph and uniformity, "
                   f"still weighs at the small end)"
                   + (f"; chunked, the same products plus the scores once more, as items^{c['step']:.2f}" if c else "")
                   + f". With the sampled softmax the step grows as items^{m['step']:.2f}: its logits are [batch x 1000] "
                   f"whatever the catalogue, but the item table's gradient is dense and Adam updates every row every "
                   f"step, an O(items x d) pass that no loss removes (lazy, row-wise updates would; they are not the "
                   f"paper's optimiser).")
    out.append("- **Uniformity** (L_GU, L_SU) costs O(batch^2 x d) a step whatever the data: a constant per step, "
               "so linear per epoch; it weighs only with large batches.")
    for r in (r for r in rows if "target" in r["groups"] and r.get("step_parts_cpu") and r["variant"] == "sampled"):
        parts, budget = r["step_parts_cpu"], TARGET["epoch_minutes"] * 60 / r["steps_per_epoch"]
        total = sum(parts.values())
        if r["model"] == "gsau-rec":
            share = {name: 100 * v / total for name, v in parts.items()}
            out.append(f"- **The target size.** One gsau-rec epoch at {size(r['interactions'])} interactions and "
                       f"{size(r['items'])} items is {r['steps_per_epoch']} steps; {TARGET['epoch_minutes']} minutes "
                       f"leave {budget * 1000:.0f} ms a step, and a step takes {r['step_cpu_seconds']:.2f} CPU s "
                       f"({r['step_cpu_seconds'] / budget:.0f}x too long). The graph terms' forward pass (LightGCN over "
                       f"all {size(r['users'] + r['items'])} nodes, then uniformity) takes {share['graph forward']:.0f}% "
                       f"of it and the backward pass (LightGCN's propagations again, with the sequence side's gradients) "
                       f"{share['backward']:.0f}%; the sequence terms' forward pass, the sampled softmax included, "
                       f"{share['sequence forward']:.0f}%. No softmax meets this target. Propagating only the batch's "
                       f"neighbourhood does not either (measured below, \"How much of the graph one batch reaches\"); "
                       f"what remains is approximation (the graph refreshed every few steps and row-wise table "
                       f"updates, measured in the next points; sampled neighbours, larger batches) or a GPU.")
        else:
            out.append(f"- SASRec alone at the target size: {hms(r['epoch_cpu_seconds'])} CPU per epoch, "
                       f"{r['step_cpu_seconds']:.2f} s a step, {100 * parts['backward'] / total:.0f}% of it the backward "
                       f"pass (the Transformer's, and the {size(r['items'])}-row item table's dense gradient).")
    approx = findings_approx(rows)
    if approx:
        out.append(approx)
    for r in (r for r in rows if "target" in r["groups"] and len(r.get("evaluations", [])) > 1):
        grown = [(e["batch_size"], (e["peak_mib"] - r["train_peak_mib"]) / 1024) for e in r["evaluations"] if e["peak_mib"]]
        scores = {b: b * (r["items"] + 1) * 4 / 2**30 for b, _ in grown}
        if grown and r["model"] == "gsau-rec":
            out.append("- **Evaluation memory at the target size** is bounded by the chunk, not the users: ranking added "
                       + ", ".join(f"{g:.1f} GiB with eval_batch_size={b} (one chunk's scores: {scores[b]:.1f} GiB)"
                                   for b, g in grown)
                       + " to the trained model's peak. About three score matrices: evaluation.py keeps the previous "
                       "chunk's scores alive while it scores the next, and the rank comparison adds boolean masks. At a "
                       "million items, eval_batch_size=256 keeps a full evaluation near the training peak.")
    mem = by_n.get(("gsau-rec", "sampled"))
    big = max((r for r in rows if r["variant"] == "exact" and "items" in r["groups"]), key=lambda r: r["items"], default=None)
    if mem:
        text = (f"- **Memory** grows with the tables (users and items, each with Adam's two moments and a gradient) "
                f"and LightGCN's layers ([users + items] x d each): gsau-rec's peak ~ interactions^{mem['memory']:.2f} "
                f"here, on top of torch's own ~0.45 GiB.")
        if big:
            text += (f" The exact CE adds its [batch x items] score buffer ({512 * big['items'] * 4 / 2**30:.1f} GiB at "
                     f"{size(big['items'])} items); chunking caps it at [batch x chunk]. Evaluation ranks users in "
                     f"chunks: its memory grows with eval_batch_size x items and not with the number of users (table "
                     f"above), so all users are ranked in the memory of one chunk.")
        out.append(text)
    return "## Where growth departs from linear, and why\n\n" + "\n".join(out) + "\n"


def _target(rows: list[dict], variant: str = "sampled", model: str = "gsau-rec") -> dict | None:
    return next((r for r in rows if "target" in r["groups"] and r["model"] == model and r["variant"] == variant), None)


def findings_approx(rows: list[dict]) -> str | None:
    """What the approximations buy at the target size, and where the rest of a step goes."""
    exact, one, two = (_target(rows, v) for v in ("sampled", "approx", "approx-2threads"))
    seq_exact, seq_one = _target(rows, "sampled", "sasrec"), _target(rows, "approx", "sasrec")
    if not (exact and one):
        return None
    parts = one.get("step_parts_cpu") or {}
    total = sum(parts.values()) or 1.0
    share = ", ".join(f"{name} {100 * v / total:.0f}%" for name, v in parts.items())
    budget = TARGET["epoch_minutes"] * 60 / one["steps_per_epoch"]
    text = (f"- **Approximations at the target size.** With lazy Adam on the tables (only the rows a step reads are "
            f"updated, from row-sparse gradients) and LightGCN's layers refreshed every {one['graph_refresh']} steps "
            f"(a step reads them at its batch's nodes beside the fresh layer 0), a gsau-rec step takes "
            f"{one['step_cpu_seconds']:.3f} CPU s on one thread against {exact['step_cpu_seconds']:.2f} s exact "
            f"({exact['step_cpu_seconds'] / one['step_cpu_seconds']:.0f}x less), one refresh included: the refresh "
            f"itself (every node's layers, no gradient) takes {one['refresh_cpu_seconds']:.2f} CPU s, "
            f"{one['refresh_cpu_seconds'] / one['graph_refresh'] * 1000:.0f} ms a step. An epoch: "
            f"{hms(one['epoch_seconds'])} on one thread")
    if two:
        text += f", {hms(two['epoch_seconds'])} on both cores ({two['step_seconds'] * 1000:.0f} ms a step)"
    text += (f", against the {budget * 1000:.0f} ms a step the {TARGET['epoch_minutes']}-minute target leaves. "
             f"What remains of a step (median of the steps without a refresh): {share}, i.e. the Transformer")
    if seq_exact and seq_one:
        text += (f"; SASRec alone with lazy Adam takes {seq_one['step_cpu_seconds']:.3f} CPU s a step against "
                 f"{seq_exact['step_cpu_seconds']:.3f} s with Adam, so the dense table update was most of its step "
                 f"and the Transformer over 512 histories of up to 50 items is now the floor")
    text += (". What the approximations cost in accuracy is measured on Toys below (\"Sampled softmax and the approximations against "
             "exact training on Toys\").")
    return text


def report(rows: list[dict], imported: dict | None, meta: dict, toys: str, reach: str = "") -> str:
    target = _target(rows)
    out = [f"# Scaling\n\nWritten by `{meta['command']}` on {meta['date']} ({meta['seconds'] / 60:.0f} minutes). "
           f"Machine: {meta['cpu']}, {meta['cores']} cores, shared with other jobs (load average "
           f"{meta['load_start']} at the start, {meta['load_end']} at the end); torch {meta['torch']}, "
           f"{meta['threads']} torch thread(s) per case. No GPU was available to this run."
           + "".join(f" `{m['command']}` added its measurements on {m['date']} (load average {m['load_start']} at "
                     f"the start, {m['load_end']} at the end)." for m in meta.get("later", []))
           + (f" The report was rewritten from the saved rows by `{meta['rewritten']}`." if meta.get("rewritten") else "")
           + "\n",
           "Synthetic data from `gsau data synth` (power-law popularity and activity, a planted successor pattern; "
           "users = interactions / 10). Each case: a fresh process, one warm-up step, then "
           f"{meta['steps']} single steps timed; an epoch is the median step times the steps of an epoch "
           "(as `gsau bench` scales); the approximate cases (approx: lazy_adam, and for gsau-rec graph_refresh) "
           "time a window of graph_refresh steps holding one refresh of the graph and take their mean. Wall seconds depend on the neighbours; CPU seconds much less, so the fits "
           f"use CPU seconds. Sampled softmax: uniform candidates, 1000 per step. Chunked: the exact CE {meta['chunk']:,} "
           "items at a time. Evaluation: full ranking of a sample of users in chunks of eval_batch_size. Peak "
           "memory is the process's resident high-water mark (about 0.45 GiB of it is torch itself).\n"]
    if target:
        epoch_ok = target["epoch_seconds"] <= TARGET["epoch_minutes"] * 60
        mem_ok = target["train_peak_mib"] <= TARGET["peak_gib"] * 1024
        out.append(f"## Targets\n\n| target | measured | met |\n|---|---|---|\n"
                   f"| one gsau-rec epoch, sampled softmax, {size(target['interactions'])} interactions, "
                   f"{size(target['items'])} items: <= {TARGET['epoch_minutes']} min | {hms(target['epoch_seconds'])} wall, "
                   f"{hms(target['epoch_cpu_seconds'])} CPU ({target['steps_per_epoch']} steps of {target['step_seconds']:.2f} s) | "
                   f"{'yes' if epoch_ok else 'no'} |\n"
                   f"| its peak memory <= {TARGET['peak_gib']} GiB | {target['train_peak_mib'] / 1024:.2f} GiB | "
                   f"{'yes' if mem_ok else 'no'} |\n"
                   + "".join(f"| the same epoch approximated (lazy_adam, graph_refresh={r['graph_refresh']}), "
                             f"{r['threads']} thread(s): <= {TARGET['epoch_minutes']} min, <= {TARGET['peak_gib']} GiB | "
                             f"{hms(r['epoch_seconds'])} wall, {hms(r['epoch_cpu_seconds'])} CPU ({r['step_seconds']:.3f} s a "
                             f"step), peak {r['train_peak_mib'] / 1024:.2f} GiB | "
                             f"{'yes' if r['epoch_seconds'] <= TARGET['epoch_minutes'] * 60 and r['train_peak_mib'] <= TARGET['peak_gib'] * 1024 else 'no'} |\n"
                             for r in (_target(rows, v) for v in ("approx", "approx-2threads")) if r)
                   + (f"| import of {size(imported['rows'])} interactions <= {TARGET['import_minutes']} min | "
                      f"{imported['streaming']['seconds']:.0f} s, peak {imported['streaming']['peak_mib']:.0f} MiB | "
                      f"{'yes' if imported['streaming']['seconds'] <= TARGET['import_minutes'] * 60 else 'no'} |\n"
                      if imported else ""))
    out.append("## Growth with interactions\n\n" + case_table(rows, "interactions") + "\n"
               + fit_table(rows, "interactions", "interactions"))
    out.append("## Growth with items\n\n" + case_table(rows, "items") + "\n" + fit_table(rows, "items", "items"))
    out.append("## The target size\n\n" + case_table(rows, "target") + "\n" + parts_table(rows) + "\n" + eval_table(rows))
    out.append(findings(rows))
    if imported:
        s, h, e = imported["streaming"], imported["streaming_head"], imported["exact_head"]
        out.append(f"## Import\n\n| input | reader | seconds | peak MiB |\n|---|---|---|---|\n"
                   f"| {size(imported['rows'])} rows, {imported['bytes'] / 2**20:.0f} MiB CSV | streaming (`gsau data import`) | "
                   f"{s['seconds']:.1f} | {s['peak_mib']:.0f} |\n"
                   f"| its first {size(imported['exact_rows'])} rows | streaming (`gsau data import`) | {h['seconds']:.1f} | "
                   f"{h['peak_mib']:.0f} |\n"
                   f"| its first {size(imported['exact_rows'])} rows | exact (whole text, csv module) | {e['seconds']:.1f} | "
                   f"{e['peak_mib']:.0f} |\n"
                   + (f"| {size(imported['rows'])} rows with a quoted text column, {imported['quoted_bytes'] / 2**20:.0f} MiB "
                      f"CSV | chunked (csv module, {readers_chunk()} records at a time) | {imported['quoted']['seconds']:.1f} | "
                      f"{imported['quoted']['peak_mib']:.0f} |\n" if imported.get("quoted") else ""))
    out.append(reach)
    out.append("## Sampled softmax and the approximations against exact training on Toys\n\n" + toys)
    return "\n".join(o for o in out if o)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="benchmarks/scaling.py")
    sub = p.add_subparsers(dest="cmd")
    one = sub.add_parser("one", help="measure one case; prints one JSON line")
    one.add_argument("--model", required=True)
    one.add_argument("--dataset", required=True)
    one.add_argument("--steps", type=int, default=3)
    one.add_argument("--eval-users", type=int, default=2048)
    one.add_argument("--threads", type=int, default=1)
    one.add_argument("--set", action="append", default=[])
    one.add_argument("--eval-batch-sizes", default="1024", help="comma-separated, or none (no evaluation)")
    one.add_argument("--parts", type=int, default=0, help="also split this many steps into their parts")
    p.add_argument("--quick", action="store_true", help="a tiny grid in seconds (what the test runs)")
    p.add_argument("--steps", type=int, default=3, help="single training steps timed per case (after one warm-up)")
    p.add_argument("--eval-users", type=int, default=2048, help="users ranked to time evaluation")
    p.add_argument("--threads", type=int, default=1, help="torch threads per case")
    p.add_argument("--data-dir", default=str(ROOT / "runs" / "scaling-data"))
    p.add_argument("--out", default=str(ROOT / "SCALING.md"))
    p.add_argument("--json", help="also write the raw rows here (after every case)")
    p.add_argument("--resume", action="store_true", help="keep the cases the --json file already holds")
    p.add_argument("--toys-runs", nargs="*", default=[], help="run directories of the Toys accuracy comparison")
    p.add_argument("--toys-full", nargs="*", default=[], help="Toys runs trained to early stopping, compared with "
                   "the committed exact run")
    p.add_argument("--no-import", action="store_true", help="skip the import measurement")
    p.add_argument("--only", choices=("interactions", "items", "target", "import"),
                   help="measure only this group's cases (import: only the import of the target size)")
    p.add_argument("--graph-refresh", type=int, default=REFRESH[False],
                   help="graph_refresh of the approximate cases (steps between refreshes of LightGCN's layers)")
    p.add_argument("--variants", help="measure only these variants (comma-separated, e.g. approx,approx-2threads)")
    p.add_argument("--from-json", metavar="FILE", nargs="+", help="measure nothing: rewrite the report from --json "
                   "files (a later file's case replaces an earlier one's; the Toys runs as they are now)")
    a = p.parse_args(argv)
    REFRESH[False] = a.graph_refresh
    if a.cmd == "one":
        sizes = [] if a.eval_batch_sizes == "none" else [int(b) for b in a.eval_batch_sizes.split(",")]
        print(json.dumps(measure(a.model, a.dataset, a.set, a.steps, a.eval_users, a.threads, sizes, a.parts)))
        return
    record = ROOT / "results" / "runs" / "gsau-rec-toys-2020"
    toys = toys_section(a.toys_runs, record) + toys_full_section(a.toys_full, record)

    def reached(rows: list[dict]) -> str:
        """The reach of a batch in Toys and in each gsau-rec case's data found on disk."""
        sizes = sorted({(r["users"], r["items"], r["interactions"]) for r in rows if r["model"] == "gsau-rec"},
                       key=lambda x: (x[2], x[1]))
        where = ["toys"] + [str(p) for p in (Path(a.data_dir) / f"synth-{n}-{i}-{u}" for u, i, n in sizes)
                            if (p / "dataset.npz").exists()]
        target = next((r for r in rows if "target" in r["groups"] and r["model"] == "gsau-rec"), None)
        needed = target and target["step_cpu_seconds"] / (TARGET["epoch_minutes"] * 60 / target["steps_per_epoch"])
        return reach_section([neighbourhood(d) for d in where], needed)

    if a.from_json:
        saved = [json.loads(Path(f).read_text()) for f in a.from_json]
        rows: dict[tuple, dict] = {}
        for row in (r for part in saved for r in part["rows"]):
            rows[case_key(row)] = row
        imported = next((part["import"] for part in reversed(saved) if part["import"]), None)
        later = [part["meta"] for part in saved[1:] if part.get("meta")]
        meta = dict(saved[0]["meta"], later=later, rewritten=f"python benchmarks/scaling.py --from-json {' '.join(a.from_json)}"
                    + (" --toys-runs " + " ".join(a.toys_runs) if a.toys_runs else "")
                    + (" --toys-full " + " ".join(a.toys_full) if a.toys_full else ""))
        Path(a.out).write_text(report(list(rows.values()), imported, meta, toys, reached(list(rows.values()))))
        print(f"wrote {a.out}")
        return
    import torch
    started, t0 = datetime.datetime.now(), time.perf_counter()
    load_start = " ".join(f"{x:.1f}" for x in os.getloadavg())
    data_dir = Path(a.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    eval_users = 64 if a.quick else a.eval_users
    rows = []
    done = {}
    if a.resume and a.json and Path(a.json).exists():
        done = {case_key(r): r for r in json.loads(Path(a.json).read_text())["rows"]}
    wanted = set(a.variants.split(",")) if a.variants else None
    for case in (c for c in grid(a.quick) if (a.only is None or a.only in c["groups"])
                 and (wanted is None or c["variant"] in wanted)):
        row = done.get(case_key(case))
        if not row or row["threads"] != (case.get("threads") or a.threads) or row["steps_timed"] < a.steps:
            row = run_case(case, data_dir, a.steps, eval_users, a.threads)
        row["groups"] = case["groups"]
        if a.json:  # after every case, so a crash or a stop loses one case at most (--resume)
            Path(a.json).write_text(json.dumps({"rows": rows + [row], "import": None, "meta": None}, default=str))
        print(f"  {size(case['interactions']):>5} x {size(case['items']):>5} {case['model']:<9} {case['variant']:<8} "
              f"{row['step_seconds']:7.3f} s/step ({row['step_cpu_seconds']:.3f} CPU) x {row['steps_per_epoch']} steps "
              f"= {hms(row['epoch_seconds'])}  peak {row['train_peak_mib']:.0f} MiB", flush=True)
        rows.append(row)
    imported = None
    if not a.no_import:
        biggest = max(rows, key=lambda r: (r["interactions"], r["items"]), default=None) or {
            "interactions": 4_000 if a.quick else TARGET["interactions"], "items": 300 if a.quick else TARGET["items"]}
        imported = measure_import(data_dir, biggest["interactions"] // 10, biggest["items"], biggest["interactions"],
                                  1_000 if a.quick else 1_000_000)
        print(f"  import {size(imported['rows'])} rows: {imported['streaming']['seconds']:.1f} s, "
              f"peak {imported['streaming']['peak_mib']:.0f} MiB", flush=True)
    command = "python benchmarks/scaling.py" + (" --quick" if a.quick else "") + (
        f" --only {a.only}" if a.only else "") + (f" --variants {a.variants}" if a.variants else "") + (
        f" --graph-refresh {a.graph_refresh}" if a.graph_refresh != 400 else "") + (" --no-import" if a.no_import else "") + (
        f" --steps {a.steps} --threads {a.threads}") + (f" --json {a.json}" if a.json else "") + (
        " --toys-runs " + " ".join(a.toys_runs) if a.toys_runs else "")
    meta = {"command": command, "date": started.strftime("%Y-%m-%d %H:%M"), "seconds": time.perf_counter() - t0,
            "cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__, "threads": a.threads,
            "steps": a.steps, "chunk": CHUNK_ITEMS[a.quick], "load_start": load_start, "load_end": " ".join(f"{x:.1f}" for x in os.getloadavg())}
    Path(a.out).write_text(report(rows, imported, meta, toys, reached(rows)))
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "import": imported, "meta": meta}, indent=1, default=str))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
