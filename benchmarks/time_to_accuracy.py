#!/usr/bin/env python3
"""Time to accuracy: one `gsau train` from start to early stop, timed by the wall clock, its test
metrics set against the authors' published run; the record goes into BENCHMARKS.json and onto
BENCHMARKS.md (via benchmarks/run.py --render-only).

    python benchmarks/time_to_accuracy.py [--model gsau-rec] [--dataset toys] [--threads 2]
                                          [--set lr=0.003 ...] [--out runs/tta/NAME]
    python benchmarks/time_to_accuracy.py --record runs/tta/NAME --wall-seconds S

The second form records a run that was started by hand (the same `gsau train` command): its wall
clock must then be given, as measured around the command (e.g. by /usr/bin/time).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# The authors' published GSAU (rec) run on Toys (RecBole fork, a GPU): test metrics at best epoch 161.
PUBLISHED = {("gsau-rec", "toys"): {"recall@10": 0.0924, "ndcg@10": 0.0470, "recall@20": 0.1328, "ndcg@20": 0.0572,
                                    "best_epoch": 161, "minutes": 56}}


def record(run_dir: Path, wall_seconds: float, command: str) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    key = (metrics["model"], metrics["dataset"])
    return {"command": command, "run": str(run_dir), "recorded": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}",
            "model": metrics["model"], "dataset": metrics["dataset"], "wall_seconds": round(wall_seconds, 1),
            "epochs_run": metrics["epochs_run"], "best_epoch": metrics["best_epoch"],
            "median_train_seconds_per_epoch": metrics["seconds_per_epoch"],
            "median_epoch_seconds_with_validation": sorted(h["seconds"] for h in log)[len(log) // 2],
            "lr": cfg["train"]["lr"], "lr_schedule": cfg["train"].get("lr_schedule", "constant"),
            "warmup_epochs": cfg["train"].get("warmup_epochs", 0), "decay_epochs": cfg["train"].get("decay_epochs", 0),
            "batch_size": cfg["train"]["batch_size"], "schedule_epochs": cfg["train"]["epochs"], "threads": cfg["train"]["threads"],
            "test": metrics["test"], "valid": metrics["valid"], "published": PUBLISHED.get(key)}


THRESHOLDS = (0.02, 0.04, 0.05, 0.06, 0.065, 0.068)


def schedule(run_dirs: list[str]) -> list[dict]:
    """For each run (same model and data, different settings): its learning rate, epochs run, best
    validation NDCG@20, and the first epoch at which validation NDCG@20 reached each threshold."""
    rows = []
    for d in run_dirs:
        d = Path(d)
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        log = [json.loads(line) for line in (d / "log.jsonl").read_text().splitlines() if line.strip()]
        scores = [h["valid_ndcg@20"] for h in log]
        finished = (d / "metrics.json").exists()
        ended = ("stopped by hand" if not finished else
                 "epoch limit" if len(log) >= cfg["train"]["epochs"] else "early stop")
        rows.append({"run": str(d), "lr": cfg["train"]["lr"], "lr_schedule": cfg["train"].get("lr_schedule", "constant"),
                     "warmup_epochs": cfg["train"].get("warmup_epochs", 0), "decay_epochs": cfg["train"].get("decay_epochs", 0),
                     "batch_size": cfg["train"]["batch_size"], "schedule_epochs": cfg["train"]["epochs"], "epochs_run": len(log),
                     "finished": finished, "ended": ended, "best_valid_ndcg@20": max(scores),
                     "first_epoch_reaching": {str(t): next((h["epoch"] for h in log if h["valid_ndcg@20"] >= t), None)
                                              for t in THRESHOLDS}})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gsau-rec")
    ap.add_argument("--dataset", default="toys")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", help="run directory (default runs/tta/MODEL-DATASET)")
    ap.add_argument("--record", metavar="RUN_DIR", help="record a finished run instead of training")
    ap.add_argument("--wall-seconds", type=float, help="with --record: the run's measured wall clock")
    ap.add_argument("--note", default="", help="with --record: how the wall clock was measured")
    ap.add_argument("--compare", nargs="+", metavar="RUN_DIR",
                    help="with --record: runs of the same model and data under other settings (learning rates), "
                         "for the epochs-to-accuracy table")
    ap.add_argument("--json", default=str(ROOT / "BENCHMARKS.json"))
    a = ap.parse_args()
    # The run is timed under OpenMP's default waiting: PASSIVE makes multi-threaded epochs ~1.3x slower.
    if os.environ.pop("OMP_WAIT_POLICY", None) and not a.record:
        print("note: OMP_WAIT_POLICY removed for the timed run", flush=True)
    if a.record:
        if a.wall_seconds is None:
            ap.error("--record needs --wall-seconds")
        run_dir = Path(a.record)
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        t = cfg["train"]
        values = [("lr", t["lr"])] + ([("lr_schedule", t["lr_schedule"]), ("epochs", t["epochs"])]
                                      if t.get("lr_schedule", "constant") != "constant" else [])
        for key, default in (("warmup_epochs", 0), ("decay_epochs", 0), ("batch_size", 512)):
            if t.get(key, default) != default:
                values.append((key, t[key]))
        sets = " ".join(f"--set {k}={v}" for k, v in values)
        command = (f"gsau train --model {cfg['model']} --dataset {cfg['data']['dataset']} {sets} "
                   f"--threads {cfg['train']['threads']} --out {run_dir}")
        wall = a.wall_seconds
    else:
        run_dir = Path(a.out or ROOT / "runs" / "tta" / f"{a.model}-{a.dataset}")
        cmd = ["gsau", "train", "--model", a.model, "--dataset", a.dataset, "--threads", str(a.threads),
               "--out", str(run_dir), "--quiet"]
        for s in a.set:
            cmd += ["--set", s]
        command = " ".join(cmd)
        print(command, flush=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gsau.cli", *cmd[1:]], check=True)
        wall = time.perf_counter() - t0
    rec = record(run_dir, wall, command)
    if a.record and a.note:
        rec["note"] = a.note
    if a.compare:
        rec["schedule"] = schedule([str(run_dir), *a.compare])
    path = Path(a.json)
    saved = json.loads(path.read_text()) if path.exists() else {}
    def run_of(r: dict) -> Path | None:  # records made before "run" was kept name it in their command
        out = r.get("run") or next(iter(re.findall(r"--out (\S+)", r.get("command", ""))), None)
        return Path(out).resolve() if out else None

    # Earlier records of other runs stay on file (and on BENCHMARKS.md) beside the new one.
    earlier = [saved["time_to_accuracy"]] if "time_to_accuracy" in saved else []
    earlier = [r for r in earlier + saved.get("time_to_accuracy_earlier", []) if run_of(r) != run_of(rec)]
    saved.pop("time_to_accuracy_earlier", None)
    if earlier:
        saved["time_to_accuracy_earlier"] = earlier
    saved["time_to_accuracy"] = rec
    path.write_text(json.dumps(saved, indent=2))
    t = rec["test"]
    print(f"{rec['model']} on {rec['dataset']}: {wall / 60:.1f} min to the end of training, best epoch {rec['best_epoch']} "
          f"of {rec['epochs_run']}; test R@10 {t['recall@10']:.4f} N@10 {t['ndcg@10']:.4f} "
          f"R@20 {t['recall@20']:.4f} N@20 {t['ndcg@20']:.4f}")


if __name__ == "__main__":
    main()
