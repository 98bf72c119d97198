#!/usr/bin/env python3
"""gsau against RecBole 1.2.1 and against the FLOP floor, side by side in one run; writes BENCHMARKS.md.

    python benchmarks/run.py [--dataset beauty] [--steps 30] [--repeats 3] [--epochs 2] [--threads 2]

1. gsau (`python -m gsau.bench`, one fresh process per configuration): seconds per training epoch
   for sasrec, gsau-rec and lightgcn, with gsau's batching, the paper's per-prefix batching (every
   prefix padded to 50) and that scheme done naively (also torch's Bernoulli dropout); evaluation
   throughput; peak resident memory; validation NDCG@20 after --epochs full epochs.
2. RecBole 1.2.1 in its own virtual environment (benchmarks/recbole/setup.sh): stock SASRec (CE,
   max length 50, batch 512) and LightGCN on the same data, converted to atomic files; and GSAU (rec)
   assembled from those two stock modules the way the paper's RecBole fork assembles it
   (benchmarks/recbole/gsau_on_recbole.py).
3. The floor: FLOPs of one epoch over this machine's float32 matmul rate (benchmarks/flops.py).
4. gsau-rec's step by part, and its most expensive ops (benchmarks/components.py).

Both sides are timed the same way: a bounded number of training batches after warm-up, scaled to the
number of batches in an epoch, median over rounds; each round measures every configuration of both
sides once, each in a fresh process.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECBOLE = ROOT / "benchmarks" / "recbole"
RECBOLE_VENV = ROOT / "benchmarks" / ".recbole-venv"
RECBOLE_DATA = ROOT / "benchmarks" / ".recbole-data"
RECBOLE_NAMES = {"beauty": "Beauty", "sports": "Sports_and_Outdoors", "toys": "Toys_and_Games"}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def recbole_setup(dataset: str) -> str:
    subprocess.run(["bash", str(RECBOLE / "setup.sh")], check=True)
    name = RECBOLE_NAMES[dataset]
    src = ROOT / "src" / "gsau" / "data" / "bundled" / f"{name}.txt.gz"
    subprocess.run([sys.executable, str(RECBOLE / "convert.py"), "--input", str(src), "--name", name,
                    "--out-dir", str(RECBOLE_DATA)], check=True, stdout=subprocess.DEVNULL)
    return name


def recbole_round(name: str, batches: int, threads: int) -> list[dict]:
    """Each RecBole model once, in its own process."""
    rows = []
    for model in ("SASRec", "LightGCN", "GSAU-rec"):
        proc = subprocess.run([str(RECBOLE_VENV / "bin" / "python"), str(RECBOLE / "run_recbole.py"),
                               "--model", model, "--data-dir", str(RECBOLE_DATA), "--dataset", name,
                               "--batches", str(batches), "--threads", str(threads)],
                              capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"RecBole {model} failed:\n{proc.stderr[-3000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  RecBole {model:<9} {row['seconds_per_epoch_scaled']:8.1f} s/epoch", flush=True)
        rows.append(row)
    return rows


def merge_recbole(rounds: list[list[dict]]) -> list[dict]:
    rows = []
    for runs in zip(*rounds):
        row = dict(runs[-1])
        row["seconds_per_epoch"] = statistics.median(r["seconds_per_epoch_scaled"] for r in runs)
        row["seconds_per_batch"] = statistics.median(r["seconds"] / r["batches_timed"] for r in runs)
        row["repeats"] = len(runs)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="beauty", choices=sorted(RECBOLE_NAMES))
    ap.add_argument("--steps", type=int, default=30, help="timed steps per repeat (gsau)")
    ap.add_argument("--recbole-batches", type=int, default=20, help="timed batches per repeat (RecBole)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2, help="full epochs for the accuracy column (0 = skip)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--skip-recbole", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--render-only", action="store_true", help="rewrite the page from the saved BENCHMARKS.json")
    a = ap.parse_args()
    if a.repeats < 1 or a.steps < 1 or a.recbole_batches < 1:
        ap.error("--repeats, --steps and --recbole-batches must be at least 1")
    # Measured under OpenMP's default waiting, as a user runs: PASSIVE (handy for runs side by side)
    # makes multi-threaded steps ~1.3x slower, on gsau's side and RecBole's alike. Removed before torch
    # loads OpenMP, and from every process started from here.
    passive = os.environ.pop("OMP_WAIT_POLICY", None)
    if passive:
        print(f"note: OMP_WAIT_POLICY={passive} removed for the measurements", flush=True)
    sys.path.insert(0, str(ROOT / "src"))
    # torch (flops imports it too) loads only now that OMP_WAIT_POLICY is gone.
    import torch
    from flops import matmul_gflops

    from gsau import bench

    command = "python benchmarks/run.py " + " ".join(sys.argv[1:])
    json_path = Path(a.out).with_suffix(".json")
    if a.render_only:
        saved = json.loads(json_path.read_text())
    else:
        started = datetime.datetime.now(datetime.timezone.utc)
        print(f"machine: {os.cpu_count()} cores, {cpu_model()}; torch {torch.__version__}", flush=True)
        rate = matmul_gflops(a.threads)
        print(f"float32 matmul: {rate:.1f} GFLOP/s", flush=True)
        name = None if a.skip_recbole else recbole_setup(a.dataset)
        # Rounds: every gsau configuration and every RecBole model once per round, so a slow spell
        # of the machine lands on both sides rather than on one configuration's repeats.
        rounds, rb_rounds = [], []
        for r in range(a.repeats):
            print(f"round {r + 1} of {a.repeats}, gsau:", flush=True)
            rounds.append(bench.one_round(a.dataset, a.steps, a.epochs if r == 0 else 0, a.threads))
            if name:
                print("RecBole:", flush=True)
                rb_rounds.append(recbole_round(name, a.recbole_batches, a.threads))
        rows = bench.merge_rounds(rounds)
        rb = merge_recbole(rb_rounds) if rb_rounds else []
        print("gsau-rec step by part, and profiled:", flush=True)
        proc = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "components.py"), "--model", "gsau-rec", "--dataset", a.dataset,
             "--steps", str(a.steps), "--repeats", str(a.repeats), "--threads", str(a.threads), "--profile", "--json"],
            capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"benchmarks/components.py failed:\n{proc.stderr[-3000:]}")
        where = json.loads(proc.stdout.strip().splitlines()[-1])
        rate_after = matmul_gflops(a.threads)
        saved = {"command": command, "started": f"{started:%Y-%m-%d %H:%M}", "cores": os.cpu_count(), "cpu": cpu_model(),
                 "python": platform.python_version(), "torch": torch.__version__,
                 "args": {k: v for k, v in vars(a).items() if k not in ("out", "render_only")},
                 "gsau": rows, "recbole": rb, "components": where["parts"], "top_ops": where["top_ops"],
                 "matmul_gflops": [rate, rate_after]}
        if json_path.exists():  # keep the time-to-accuracy record (benchmarks/time_to_accuracy.py)
            previous = json.loads(json_path.read_text())
            for key in ("time_to_accuracy", "time_to_accuracy_earlier"):
                if key in previous:
                    saved[key] = previous[key]
        json_path.write_text(json.dumps(saved, indent=2))
    notes = ROOT / "benchmarks" / "NOTES.md"
    Path(a.out).write_text(render(saved, notes.read_text() if notes.exists() else None))
    print(f"wrote {a.out} and {json_path}")


def render(saved: dict, notes: str | None = None) -> str:
    """The page from the saved measurements; `notes` (benchmarks/NOTES.md, written by hand: probes
    and findings outside the script's measurements) go at the end."""
    # Imported here, not at the top: main must clear OMP_WAIT_POLICY before torch loads.
    from flops import epoch_flops

    from gsau.bench import VARIANTS, table
    args, rows, rb = saved["args"], saved["gsau"], saved["recbole"]
    rate, rate_after = saved["matmul_gflops"]

    def find(model, variant="gsau"):
        return next(r for r in rows if r["model"] == model and r["variant"] == variant)

    md = ["# Benchmarks\n\n",
          f"Produced by `{saved['command']}` on {saved['started']} UTC (`--render-only` re-renders this page "
          "from BENCHMARKS.json without measuring).\n\n",
          f"Machine: {saved['cores']} cores, {saved['cpu']}, Python {saved['python']}, torch {saved['torch']}, "
          f"{args['threads']} threads. float32 matmul rate (2048^3): {rate:.1f} GFLOP/s before, {rate_after:.1f} after the run.\n\n",
          f"Dataset: {args['dataset']}. Epoch times are medians over {args['repeats']} "
          + ("rounds" if any("rounds" in r for r in rows) else "repeats")
          + f" of {args['steps']} timed steps (gsau) or {args['recbole_batches']} timed batches (RecBole) after warm-up, "
          "scaled to the batches of one epoch"
          + ("; a round measures every configuration of both sides once, each in a fresh process, so a slow spell "
             "of the machine falls on all of them" if any("rounds" in r for r in rows) else "")
          + ". One batch is 512 training samples on both sides. Each gsau configuration runs in its own process "
          + ("(peak RSS is the largest over its processes; the first also trains the accuracy epochs). "
             if any("rounds" in r for r in rows) else "(peak RSS is that process's). ")
          + "The accuracy column trains a fresh model for that many full epochs.\n\n",
          "## gsau\n\n", table(rows)]
    if rb:
        md += ["\n## RecBole 1.2.1 (stock models, same data, same batch size)\n\n",
               "| model | s/batch (median) | batches/epoch | s/epoch | train samples |\n|---|---|---|---|---|\n"]
        md += [f"| {r['model']} | {r['seconds_per_batch']:.4f} | {r['batches_per_epoch']} | {r['seconds_per_epoch']:.1f} | "
               f"{r.get('train_samples', '-')}{' + ' + str(r['graph_train_samples']) + ' pairs' if r.get('graph_train_samples') else ''} |\n"
               for r in rb]
        if any(r["model"] == "GSAU-rec" for r in rb):
            md.append("\nGSAU-rec: RecBole's stock SASRec and LightGCN sharing one item table, its per-prefix and "
                      "(user, item) loaders drawn in lockstep, the paper's joint loss (benchmarks/recbole/gsau_on_recbole.py; "
                      "the design of the paper's RecBole fork, none of its code).\n")
        rbm = {r["model"]: r for r in rb}
        md += ["\n### Ratios (RecBole s/epoch over gsau s/epoch; higher is faster for gsau)\n\n",
               "| comparison | RecBole s/epoch | gsau s/epoch | speed-up |\n|---|---|---|---|\n"]
        for mine, theirs in (("sasrec", "SASRec"), ("lightgcn", "LightGCN"), ("gsau-rec", "GSAU-rec")):
            if theirs not in rbm:
                continue
            for variant in [v for v in VARIANTS if v == "gsau" or v.startswith("gsau,")]:
                if not any(r["model"] == mine and r["variant"] == variant for r in rows):
                    continue
                g, r = find(mine, variant)["seconds_per_epoch"], rbm[theirs]["seconds_per_epoch"]
                label = mine if variant == "gsau" else f"{mine} ({variant[6:]})"
                md.append(f"| {label} vs RecBole {theirs} | {r:.1f} | {g:.1f} | {r / g:.1f}x |\n")
    naive = find("gsau-rec", "paper batching, naive")["seconds_per_epoch"]
    fast = find("gsau-rec")["seconds_per_epoch"]
    md.append(f"\ngsau-rec, paper's per-prefix scheme done naively over gsau's batching: {naive:.1f} / {fast:.1f} s = "
              f"{naive / fast:.1f}x")
    low = [r for r in rows if r["model"] == "gsau-rec" and r["variant"] == "gsau, bfloat16 CE"]
    if low:
        md.append(f"; with the bfloat16 CE: {naive:.1f} / {low[0]['seconds_per_epoch']:.1f} s = "
                  f"{naive / low[0]['seconds_per_epoch']:.1f}x")
    md.append(".\n")
    md.append("\n## FLOP floor\n\nMultiply-adds of every matrix product of one epoch, counted from the real batch "
              "shapes (backward = 2x forward; graph propagation once more, the adjacency has no gradient), over the "
              "measured matmul rate. 'gsau work' counts what gsau computes (the final Transformer layer's output "
              "projection and feed-forward block only at each prefix's last token, the position that is read; "
              "LightGCN's last layer only at the batch's users and items, averaged over 16 batches); "
              "'full model' counts every position through every layer, as the authors' code computes. The ratio "
              "uses the smaller (stricter) count.\n\n"
              "| model | GFLOP/epoch (gsau work) | of which | GFLOP/epoch (full model) | floor s/epoch | measured s/epoch "
              "| measured / floor |\n|---|---|---|---|---|---|---|\n")
    for model in ("gsau-rec", "sasrec"):
        f = epoch_flops(model, args["dataset"], shortcuts=True)
        full = epoch_flops(model, args["dataset"], shortcuts=False)
        floor = f["total_flops"] / (max(rate, rate_after) * 1e9)
        parts = ", ".join(f"{k} {v / 1e9:.0f}" for k, v in f["flops"].items())
        for r in [r for r in rows if r["model"] == model and r["variant"] in ("gsau", "gsau, bfloat16 CE")]:
            m = r["seconds_per_epoch"]
            label = model if r["variant"] == "gsau" else f"{model} (bfloat16 CE, against the float32 floor)"
            md.append(f"| {label} | {f['total_flops'] / 1e9:.0f} | {parts} | {full['total_flops'] / 1e9:.0f} | "
                      f"{floor:.1f} | {m:.1f} | {m / floor:.1f}x |\n")
    parts = saved.get("components")
    if parts:
        md.append("\n## Where gsau-rec's step goes, by part\n\n`python benchmarks/components.py --model gsau-rec` "
                  "(part of the same run): each part timed on its own over the same pre-built batches, forward and "
                  "backward; the encoder-and-objectives part contains the encoder part. The whole step here leaves "
                  "out building the batches (the last row), which the table above includes.\n\n"
                  "| part | ms per step | share of a step |\n|---|---|---|\n")
        md += [f"| {p['part']} | {p['ms_per_step']:.1f} | {100 * p['share_of_step']:.0f}% |\n" for p in parts]
        if any(p["part"] == "whole step" for p in parts):  # measured before the optimiser part was fixed
            md.append("\nIn this run the optimiser step was timed with gradients on the sequential side's "
                      "parameters only (fused Adam skips the rest), so its row under-counts.\n")
    # Older result files keep the profile on gsau-rec's row, measured in its first round.
    prof = saved.get("top_ops") or find("gsau-rec").get("top_ops")
    if prof:
        md.append("\n## Where gsau-rec's step goes (torch.profiler, self CPU time)\n\n"
                  + ("`python benchmarks/components.py --model gsau-rec --profile` (part of the same run), over "
                     f"{args['steps']} whole steps after a warm-up.\n\n" if saved.get("top_ops") else "")
                  + "| op | share | calls/step |\n|---|---|---|\n")
        md += [f"| `{p['op']}` | {100 * p['share']:.1f}% | {p['calls_per_step']:.0f} |\n" for p in prof]
    tta = saved.get("time_to_accuracy")
    if tta:
        t, pub = tta["test"], tta.get("published") or {}
        md.append("\n## Time to accuracy\n\n"
                  f"`{tta['command']}` (recorded by `benchmarks/time_to_accuracy.py` on {tta['recorded']} UTC): "
                  f"**{tta['wall_seconds'] / 60:.1f} minutes** from start to the end of training on this machine "
                  f"({tta['threads']} threads), {tta['epochs_run']} epochs, best epoch {tta['best_epoch']}, median "
                  f"{tta['median_epoch_seconds_with_validation']:.1f} s per epoch with validation."
                  + (f" {tta['note']}" if tta.get("note") else "") + "\n\n"
                  "| test | R@10 | N@10 | R@20 | N@20 | best epoch | minutes | recorded (UTC) |\n"
                  "|---|---|---|---|---|---|---|---|\n")
        for r in [tta] + saved.get("time_to_accuracy_earlier", []):
            rt = r["test"]
            # The model from the record: "gsau" alone would read as the collapsing preset of that name.
            md.append(f"| {r.get('model') or tta.get('model', 'gsau-rec')}, {_schedule_name(r)}{' (above)' if r is tta else ''} | "
                      f"{rt['recall@10']:.4f} | {rt['ndcg@10']:.4f} | {rt['recall@20']:.4f} | {rt['ndcg@20']:.4f} | "
                      f"{r['best_epoch']} of {r['epochs_run']} | {r['wall_seconds'] / 60:.1f} | {r['recorded']} |\n")
        if pub:
            md.append(f"| authors' published run (GPU, lr 0.001 constant) | {pub['recall@10']:.4f} | {pub['ndcg@10']:.4f} | "
                      f"{pub['recall@20']:.4f} | {pub['ndcg@20']:.4f} | {pub['best_epoch']} | {pub['minutes']} | - |\n")
        noted = [r for r in saved.get("time_to_accuracy_earlier", []) if r.get("note")]
        if noted:
            md.append("\n" + "".join(f"- {_schedule_name(r)} ({r['recorded']}): {r['note']}\n" for r in noted))
        if tta.get("schedule"):
            thresholds = list(tta["schedule"][0]["first_epoch_reaching"])
            md.append("\nLearning-rate schedules tried on the same model, data and seed: the first epoch at which "
                      "validation NDCG@20 reached each level ('-' = not reached in the epochs run):\n\n"
                      "| schedule | epochs run | ended | best valid NDCG@20 | "
                      + " | ".join(f"epoch to {t}" for t in thresholds) + " |\n|---|---|---|---|"
                      + "---|" * len(thresholds) + "\n")
            for r in tta["schedule"]:
                cells = " | ".join(str(r["first_epoch_reaching"][t] or "-") for t in thresholds)
                md.append(f"| {_schedule_name(r)} | {r['epochs_run']} | {r.get('ended') or ('finished' if r['finished'] else 'stopped by hand')} | "
                          f"{r['best_valid_ndcg@20']:.4f} | {cells} |\n")
    if notes:
        md.append("\n" + notes.strip() + "\n")
    return "".join(md)


def _schedule_name(r: dict) -> str:
    kind = r.get("lr_schedule", "constant")
    extra = f", {r['warmup_epochs']:g} warm-up epochs" if r.get("warmup_epochs") else ""
    if r.get("batch_size", 512) != 512:
        extra += f", batch {r['batch_size']}"
    if kind == "constant":
        return f"lr {r['lr']} constant{extra}"
    epochs, decay = r.get("schedule_epochs"), r.get("decay_epochs")
    if decay:
        return f"lr {r['lr']} constant, then {kind} decay over the last {decay:g} of {epochs} epochs{extra}"
    return (f"lr {r['lr']} {kind} over {epochs} epochs" if epochs else f"lr {r['lr']} {kind}") + extra


if __name__ == "__main__":
    main()
