"""Tiny trained runs shared by the application tests (Python API, server, export, tracking, tuning):
each preset is trained once per test session, on a planted pattern small enough for 2 epochs in
about a second, and every module that needs one asks for it here."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import gsau
from gsau.data.interactions import Interactions

# Small enough to train in about a second; two cut-offs so the run's metric is its own.
TINY = dict(epochs=2, batch_size=64, eval_batch_size=512, embedding_dim=16, inner_size=32, n_layers=1, n_heads=1,
            max_len=8, hidden_dropout=0.1, attn_dropout=0.1, lr=0.01, ks=[5, 10], metric="ndcg@10")
N_USERS = 80

_made: dict[str, Path] = {}


def tiny_data(n_users: int = N_USERS, blocks: int = 4, size: int = 15, seed: int = 0) -> Interactions:
    """Users u0, u1, ... each walking the cycle of one block of `size` items (sku-101, ...) for
    8 to 12 steps, so every item's successor is predictable from the history alone."""
    rng = np.random.default_rng(seed)
    seqs = [b * size + (rng.integers(size) + np.arange(rng.integers(8, 13))) % size + 1
            for b in rng.integers(blocks, size=n_users)]
    indptr = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    return Interactions("tiny", np.array([f"u{u}" for u in range(n_users)]),
                        np.array([f"sku-{100 + i}" for i in range(1, blocks * size + 1)]), indptr,
                        np.concatenate(seqs).astype(np.int64), {"source": "synthetic"})


def tiny_dataset(tmp_path_factory) -> Path:
    """The tiny data saved once, as `--dataset` takes it."""
    if "data" not in _made:
        directory = tmp_path_factory.mktemp("app-data")
        tiny_data().save(directory)
        _made["data"] = directory
    return _made["data"]


def tiny_run(tmp_path_factory, preset: str = "gsau-rec") -> Path:
    """A finished run of `preset` on the tiny data (trained on first use, then shared)."""
    if preset not in _made:
        out = tmp_path_factory.mktemp("app-runs") / preset
        before = torch.get_num_threads()
        torch.set_num_threads(1)  # a tiny model trains as fast on one, and one does not spin on a shared CPU
        try:
            gsau.train(preset, str(tiny_dataset(tmp_path_factory)), out=str(out), progress=False, **TINY)
        finally:
            torch.set_num_threads(before)
        _made[preset] = out
    return _made[preset]


def gsau_command() -> list[str]:
    script = Path(sys.executable).with_name("gsau")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gsau.cli"]


ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


def gsau_cli(*args, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    """`gsau ARGS` in a subprocess, as a user runs it."""
    proc = subprocess.run(gsau_command() + [str(a) for a in args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def tiny_sets() -> list[str]:
    """TINY as `--set key=value` arguments of `gsau train` / `gsau tune`."""
    out = []
    for key, value in TINY.items():
        if key != "epochs":
            out += ["--set", f"{key}={','.join(map(str, value)) if isinstance(value, list) else value}"]
    return out
