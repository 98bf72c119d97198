"""Load test of `gsau serve`: throughput and latency at several numbers of concurrent clients.

Starts `gsau serve RUN_DIR` on a free loopback port in a subprocess, then for each concurrency
level runs that many clients (an async httpx loop, one keep-alive connection each,
opened before the clock starts) that send
requests back to back until --requests are answered or --seconds pass; every answer must be a 200
with k items. Prints one Markdown row per level (and --json writes the raw figures):

    python benchmarks/load.py runs/load-toys --clients 1,8,32 --requests 3000

Endpoints: `user` (GET /users/ID/recommendations?k=K, a random known user each time) or `history`
(POST /recommendations with the last 10 items of a random user's history, as a visitor's). The
load generator runs on the same machine as the server, so the two share its cores: the figures are
those of a server with the CPU it has left, a floor for a server on its own machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from pathlib import Path

import httpx
import numpy as np


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


async def level(url: str, pid: int, clients: int, total: int, seconds: float, make_request, k: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    latencies: list[float] = []
    errors: list[str] = []
    issued = 0
    async with httpx.AsyncClient(base_url=url, timeout=30) as probe:
        before = (await probe.get("/model")).json()["served"]
    # Every client is created and connected before the clock starts: creating an httpx client
    # costs the load generator ~20 ms of CPU, and 32 of them created at once stalled every request
    # in flight for over half a second, which the figures counted as server latency (the p99).
    ready, go = asyncio.Event(), asyncio.Event()
    connected = 0
    timing: dict[str, float] = {}

    async def worker():
        nonlocal issued, connected
        # A client of its own per worker: one pool shared by 32 connections costs the load
        # generator more CPU per request than the server spends answering it.
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=1)) as client:
            (await client.get("/health")).raise_for_status()  # opens the keep-alive connection
            connected += 1
            if connected == clients:
                ready.set()
            await go.wait()
            while issued < total and time.perf_counter() < timing["stop_at"]:
                issued += 1
                method, path, body = make_request(rng)
                t0 = time.perf_counter()
                try:
                    response = await client.request(method, path, json=body)
                    ok = response.status_code == 200
                    if ok:
                        answer = response.json()
                        items = answer["items"] if "items" in answer else answer["recommendations"][0]["items"]
                        ok = len(items) == k
                    if not ok:
                        errors.append(f"{response.status_code} {response.text[:100]}")
                except httpx.HTTPError as e:
                    errors.append(type(e).__name__)
                latencies.append(time.perf_counter() - t0)

    async def clock():
        nonlocal cpu_before, own_before
        await ready.wait()
        cpu_before, own_before = cpu_seconds(pid), cpu_seconds(os.getpid())
        timing["start"] = time.perf_counter()
        timing["stop_at"] = timing["start"] + seconds
        go.set()

    cpu_before = own_before = None
    # The load generator's own garbage collections (its full ones take 100+ ms) would stall every
    # client at once and count as server latency: collect before the level, not during it.
    gc.collect()
    gc.disable()
    try:
        await asyncio.gather(clock(), *(worker() for _ in range(clients)))
    finally:
        gc.enable()
    elapsed = time.perf_counter() - timing["start"]
    cpu_after, own_after = cpu_seconds(pid), cpu_seconds(os.getpid())
    async with httpx.AsyncClient(base_url=url, timeout=30) as probe:
        after = (await probe.get("/model")).json()["served"]
    ms = np.array(latencies) * 1000
    batches = after["batches"] - before["batches"]
    def per_request(before, after):
        return None if before is None else round((after - before) * 1000 / max(len(latencies), 1), 3)
    return {"clients": clients, "requests": len(latencies), "errors": len(errors), "first_errors": errors[:3],
            "seconds": round(elapsed, 2), "requests_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "mean_batch": round((after["requests_scored"] - before["requests_scored"]) / max(batches, 1), 2),
            "server_cpu_ms_per_request": per_request(cpu_before, cpu_after),
            "client_cpu_ms_per_request": per_request(own_before, own_after)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", metavar="RUN_DIR", help="a finished run directory")
    ap.add_argument("--clients", default="1,8,32", help="comma-separated concurrency levels (default 1,8,32)")
    ap.add_argument("--requests", type=int, default=3000, help="requests per level (default 3000)")
    ap.add_argument("--seconds", type=float, default=60, help="time cap per level (default 60)")
    ap.add_argument("--warmup", type=int, default=200, help="requests before measuring (default 200)")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--endpoint", choices=["user", "history"], default="user")
    ap.add_argument("--server-threads", type=int, help="torch threads of the server (default: torch's)")
    ap.add_argument("--max-wait-ms", type=float, help="the server's --max-wait-ms (default: its own)")
    ap.add_argument("--json", metavar="FILE", help="write the figures here")
    a = ap.parse_args()

    from gsau.data import load_dataset
    from gsau.runs import read_config
    cfg = read_config(a.run)
    data = load_dataset(cfg.data.dataset, min_user=cfg.data.min_user_count, min_item=cfg.data.min_item_count,
                        dedup=cfg.data.dedup, columns=cfg.data.columns)
    users = data.user_ids

    def make_request(rng):
        u = int(rng.integers(len(users)))
        if a.endpoint == "user":
            return "GET", f"/users/{users[u]}/recommendations?k={a.k}", None
        history = data.item_ids[data.sequence(u + 1)[-10:] - 1].tolist()
        return "POST", "/recommendations", {"items": history, "k": a.k}

    from gsau.server import spawn
    options = (["--threads", a.server_threads] if a.server_threads else []) + (
        ["--max-wait-ms", a.max_wait_ms] if a.max_wait_ms is not None else [])
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)  # spinning vs sleeping OpenMP threads is the server's own choice
    proc, url = spawn(a.run, *options, env=env)
    try:
        asyncio.run(level(url, proc.pid, 8, a.warmup, a.seconds, make_request, a.k, seed=99))
        rows = [asyncio.run(level(url, proc.pid, int(c), a.requests, a.seconds, make_request, a.k, seed=int(c)))
                for c in a.clients.split(",")]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"{a.endpoint} endpoint, k={a.k}, run {a.run} ({cfg.preset} on {cfg.data.dataset}, "
          f"{data.n_users} users, {data.n_items} items), {os.cpu_count()} CPUs\n")
    print("| clients | requests | errors | req/s (= recommendation lists/s) | p50 ms | p95 ms | p99 ms | mean batch "
          "| CPU ms / request: server, load generator |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clients']} | {r['requests']} | {r['errors']} | {r['requests_per_s']} | {r['p50_ms']} | "
              f"{r['p95_ms']} | {r['p99_ms']} | {r['mean_batch']} | {r['server_cpu_ms_per_request']}, "
              f"{r['client_cpu_ms_per_request']} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"endpoint": a.endpoint, "run": a.run, "k": a.k, "levels": rows}, indent=2))
    if any(r["errors"] for r in rows):
        sys.exit(f"load.py: errors: {[e for r in rows for e in r['first_errors']]}")


if __name__ == "__main__":
    main()
