"""benchmarks/gpu.py is run once when a GPU is lent; CI runs it on the CPU on tiny data so the
command is known to work before then."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from gsau.data.interactions import Interactions

ROOT = Path(__file__).resolve().parent.parent


def test_the_gpu_benchmark_runs_on_the_cpu(tmp_path):
    rng = np.random.default_rng(0)
    seqs = [(rng.integers(6) + np.arange(rng.integers(6, 9))) % 10 + 1 for _ in range(60)]
    indptr = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    Interactions("t", np.array([f"u{u}" for u in range(60)]), np.array([f"i{i}" for i in range(1, 11)]),
                 indptr, np.concatenate(seqs).astype(np.int64)).save(tmp_path / "data")
    out = tmp_path / "gpu.json"
    sets = ["--set", "embedding_dim=8", "--set", "batch_size=32", "--set", "max_len=6", "--set", "n_layers=1",
            "--set", "patience=2"]
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--dataset",
                           str(tmp_path / "data"), "--epochs", "2", "--max-epochs", "6", "--force-two-processes",
                           "--out", str(out), *sets], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [row["model"] for row in result["epochs"]] == ["sasrec", "lightgcn", "gsau-rec"]
    assert all(row["seconds_per_epoch"] > 0 for row in result["epochs"])
    stop = result["to_early_stop"]
    assert 1 <= stop["best_epoch"] <= stop["epochs_run"] <= 6 and 0 <= stop["test"]["recall@10"] <= 1
    two = result["two_processes"]
    assert two["seconds_per_epoch"] > 0 and two["speedup"] > 0
    md = out.with_suffix(".md").read_text()
    assert "| gsau-rec |" in md and "to early stop" in md and "2 processes" in md and result["facts"]["device"] == "cpu"
