#!/usr/bin/env python3
"""The GPU benchmark, one command, ready for the moment a GPU machine is lent (15 minutes of
device time, machine start included, so every part has a time cap):

    python benchmarks/gpu.py [--device cuda] [--dataset toys] [--out benchmarks/gpu-results.json]

1. seconds per epoch (median of the timed epochs, validation excluded) of sasrec, lightgcn and
   gsau-rec, on one device;
2. gsau-rec from start to early stop at the grid's settings (lr 0.003), wall clock and test
   metrics, against the authors' published GPU run (18 s an epoch, 56 minutes to best epoch 161);
3. with two or more GPUs: gsau-rec's seconds per epoch with 2 processes (`gsau train --nproc 2`,
   NCCL) and the speed-up over one.

Results are written as JSON (device name, torch and CUDA versions, date, every figure) and as a
markdown section, which goes into BENCHMARKS.md through benchmarks/NOTES.md. The same script runs on
the CPU (`--device cpu --quick`), which is how CI tests it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = {"seconds_per_epoch": 18.0, "minutes": 56, "recall@10": 0.0924, "ndcg@10": 0.0470}


def gsau(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.pop("OMP_WAIT_POLICY", None)  # PASSIVE slows multi-threaded CPU runs by a third
    return subprocess.run([sys.executable, "-m", "gsau", "train", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def train(model: str, dataset: str, out: Path, device: str, epochs: int, sets: list[str], timeout: float,
          nproc: int = 1) -> dict:
    """One `gsau train` run; its metrics.json and log, plus the wall clock around it."""
    args = ["--model", model, "--dataset", dataset, "--out", str(out), "--epochs", str(epochs), "--device", device,
            "--quiet"] + [a for s in sets for a in ("--set", s)]
    if nproc > 1:
        args += ["--nproc", str(nproc)]
    t0 = time.perf_counter()
    proc = gsau(args, timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        # A rank that aborts (SIGABRT) says why in a line far above torchrun's summary: keep those lines.
        why = [line for line in proc.stderr.splitlines()
               if any(k in line for k in ("terminate called", "what():", "Error:", "error:"))]
        raise RuntimeError(f"{model} on {dataset} ({device}, {nproc} process(es)) failed:\n" + "\n".join(why[:20])
                           + f"\n...\n{proc.stderr[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return {"metrics": metrics, "log": log, "wall_seconds": wall}


def epoch_seconds(run: dict) -> float:
    """Median training seconds of the epochs after the first (which pays for warm-up: CUDA
    context, kernel selection, allocator growth)."""
    timed = [h["train_seconds"] for h in run["log"][1:]] or [run["log"][0]["train_seconds"]]
    return statistics.median(timed)


def device_facts(device: str) -> dict:
    import torch
    facts = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda,
             "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"}
    if device.startswith("cuda") and torch.cuda.is_available():
        facts["name"] = torch.cuda.get_device_name(0)
        facts["gpus"] = torch.cuda.device_count()
    else:
        import platform
        facts["name"] = platform.processor() or platform.machine()
        facts["gpus"] = 0
        facts["threads"] = torch.get_num_threads()
    return facts


def run(a) -> dict:
    facts = device_facts(a.device)
    result = {"facts": facts, "epochs": [], "to_early_stop": None, "two_processes": None}
    sets = list(a.set)
    with tempfile.TemporaryDirectory(prefix="gsau-gpu-") as tmp:
        tmp = Path(tmp)
        for model in a.models:
            r = train(model, a.dataset, tmp / f"epochs-{model}", a.device, a.epochs, sets + ["lr=0.003"], a.cap)
            result["epochs"].append({"model": model, "seconds_per_epoch": epoch_seconds(r),
                                     "epochs": len(r["log"]), "wall_seconds": r["wall_seconds"]})
            print(f"{model:<9} {epoch_seconds(r):8.3f} s/epoch", flush=True)
        if a.early_stop:
            r = train("gsau-rec", a.dataset, tmp / "early-stop", a.device, a.max_epochs, sets + ["lr=0.003"],
                      a.cap_early_stop)
            m = r["metrics"]
            result["to_early_stop"] = {"wall_seconds": r["wall_seconds"], "epochs_run": m["epochs_run"],
                                       "best_epoch": m["best_epoch"], "test": m["test"],
                                       "seconds_per_epoch": epoch_seconds(r)}
            print(f"gsau-rec to early stop: {r['wall_seconds'] / 60:.1f} min, best epoch {m['best_epoch']}, "
                  f"test R@10 {m['test']['recall@10']:.4f} N@10 {m['test']['ndcg@10']:.4f}", flush=True)
        if facts["gpus"] >= 2 or a.force_two_processes:
            one = next((row["seconds_per_epoch"] for row in result["epochs"] if row["model"] == "gsau-rec"), None)
            r = train("gsau-rec", a.dataset, tmp / "two", a.device, a.epochs, sets + ["lr=0.003"], a.cap, nproc=2)
            two = epoch_seconds(r)
            result["two_processes"] = {"seconds_per_epoch": two, "one_process": one,
                                       "speedup": (one / two) if one else None}
            print(f"gsau-rec, 2 processes: {two:.3f} s/epoch" + (f" ({one / two:.2f}x one)" if one else ""), flush=True)
    return result


def markdown(result: dict) -> str:
    f = result["facts"]
    lines = [f"**GPU benchmark** ({f['name']}, {f.get('gpus', 0)} GPU(s), torch {f['torch']}, CUDA {f['cuda']}, "
             f"{f['date']}; `python benchmarks/gpu.py --device {f['device']}`):", "",
             "| model | s/epoch (median, after the first) |", "|---|---|"]
    lines += [f"| {row['model']} | {row['seconds_per_epoch']:.3f} |" for row in result["epochs"]]
    e = result["to_early_stop"]
    if e:
        lines += ["", f"gsau-rec from start to early stop (lr 0.003): {e['wall_seconds'] / 60:.1f} minutes, "
                      f"{e['epochs_run']} epochs (best {e['best_epoch']}), test R@10 {e['test']['recall@10']:.4f}, "
                      f"N@10 {e['test']['ndcg@10']:.4f}; the authors' published GPU run: {PUBLISHED['seconds_per_epoch']:.0f} s "
                      f"an epoch, {PUBLISHED['minutes']} minutes, {PUBLISHED['recall@10']} / {PUBLISHED['ndcg@10']}."]
    t = result["two_processes"]
    if t:
        speedup = f", {t['speedup']:.2f}x one process" if t["speedup"] else ""
        lines += ["", f"gsau-rec with 2 processes: {t['seconds_per_epoch']:.3f} s/epoch{speedup}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--dataset", default="toys")
    p.add_argument("--models", default="sasrec,lightgcn,gsau-rec")
    p.add_argument("--epochs", type=int, default=4, help="epochs per s/epoch measurement (the first is not timed)")
    p.add_argument("--max-epochs", type=int, default=300, help="cap of the run to early stop")
    p.add_argument("--cap", type=float, default=240, help="seconds allowed per s/epoch run")
    p.add_argument("--cap-early-stop", type=float, default=420, help="seconds allowed for the run to early stop")
    p.add_argument("--no-early-stop", dest="early_stop", action="store_false")
    p.add_argument("--force-two-processes", action="store_true", help="also run 2 processes without 2 GPUs")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="options for every run")
    p.add_argument("--quick", action="store_true", help="2 epochs each, no run to early stop (a smoke test)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "gpu-results.json"))
    a = p.parse_args(argv)
    a.models = [m for m in a.models.split(",") if m]
    if a.quick:
        a.epochs, a.early_stop = 2, False
    result = run(a)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    Path(a.out).with_suffix(".md").write_text(markdown(result))
    print(f"wrote {a.out} and {Path(a.out).with_suffix('.md')}")


if __name__ == "__main__":
    main()
