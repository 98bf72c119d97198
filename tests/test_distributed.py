"""Devices and several processes on the CPU (gloo), as CI can run them: `--device` plumbing, one
step of two processes equal to one process's step on the same global batch, and a two-process run
that is killed and resumed to the same end as an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import random_interactions, random_sequences_split
from gsau import checkpoint
from gsau.cli import main
from gsau.config import resolve
from gsau.data.interactions import Interactions
from gsau.errors import GsauError
from gsau.runtime import resolve_device
from gsau.trainer import build_model, make_optimizer, make_streams, train_step

pytestmark = pytest.mark.usefixtures("one_thread")
TESTS = Path(__file__).parent
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
           PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
# An odd batch: the ranks get 13 and 12 samples, so the share weights are not 1.
NO_DROPOUT = ["hidden_dropout=0", "attn_dropout=0", "batch_size=25", "embedding_dim=16", "inner_size=32",
              "max_len=10", "n_layers=1", "seq_batching=padded"]


# -- devices ----------------------------------------------------------------------------------------

def test_devices_resolve_and_cuda_is_refused_clearly_without_one():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(GsauError, match="no CUDA device is available here"):
            resolve_device("cuda:1")
    with pytest.raises(Exception, match="device must be auto, cpu, cuda or cuda:N"):
        resolve("sasrec", None, ["device=tpu"])
    for bad in ("tpu", "cuda:x", "cpu:0", "mps"):  # --device of evaluate, recommend and serve
        with pytest.raises(GsauError, match=f"device {bad}: expected auto, cpu, cuda or cuda:N"):
            resolve_device(bad)


def test_train_evaluate_recommend_take_a_device(tmp_path, capsys):
    rng = np.random.default_rng(0)
    seqs = [(rng.integers(4) + np.arange(6)) % 8 + 1 for _ in range(30)]
    Interactions("t", np.array([f"u{u}" for u in range(30)]), np.array([f"i{i}" for i in range(1, 9)]),
                 np.arange(0, 181, 6, dtype=np.int64), np.concatenate(seqs).astype(np.int64)).save(tmp_path / "data")
    args = ["train", "--model", "sasrec", "--dataset", str(tmp_path / "data"), "--epochs", "1", "--quiet",
            "--set", "embedding_dim=8", "--set", "batch_size=16", "--set", "max_len=5"]
    assert main(args + ["--out", str(tmp_path / "run"), "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]["train"]["device"] == "cpu"
    assert main(["evaluate", str(tmp_path / "run"), "--device", "auto", "--json"]) == 0
    capsys.readouterr()
    recommend = ["recommend", str(tmp_path / "run"), "--user", "u3", "-k", "4"]
    assert main(recommend) == 0
    default = capsys.readouterr().out
    assert main(recommend + ["--device", "cpu"]) == 0
    assert capsys.readouterr().out == default and len(default.splitlines()) == 4
    if not torch.cuda.is_available():
        assert main(args + ["--out", str(tmp_path / "gpu"), "--device", "cuda"]) == 2
        assert "no CUDA device is available" in capsys.readouterr().err
        assert not (tmp_path / "gpu").exists()
        assert main(recommend + ["--device", "cuda"]) == 2
        assert "no CUDA device is available" in capsys.readouterr().err


def test_bf16_autocast_trains_close_to_float32():
    """precision=bf16 runs the Transformer under bfloat16 autocast (CPU here, CUDA on a GPU);
    the objectives stay float32, so the loss moves by bfloat16 rounding only."""
    split = random_sequences_split(3, 40, 14, 30)
    losses = []
    for dtype in (None, torch.bfloat16):
        cfg = resolve("gsau-rec", None, NO_DROPOUT)
        model = build_model(cfg, split).train()
        model.autocast_dtype = dtype
        graph, seq = make_streams(cfg, split)
        rng = np.random.default_rng(0)
        torch.manual_seed(5)
        total, terms = model.loss(next(graph.batches(rng)), next(seq.batches(rng)))
        assert total.dtype == torch.float32
        losses.append(float(terms["L_CE"]))
    assert losses[0] == pytest.approx(losses[1], rel=2e-2)
    assert losses[0] != losses[1]  # autocast really ran in bfloat16


# -- several processes -------------------------------------------------------------------------------

def torchrun(*args, nproc=2, timeout=240):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                           *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout)


SAMPLED = ["sequence_loss=sampled_ce", "sampling=popularity", "sampled_negatives=7"]


@pytest.mark.parametrize("preset, sets", [("gsau-rec", []), ("lightgcn", []), ("gsau", []), ("gsau-rec", SAMPLED),
                                          ("gsau-items", [])],
                         ids=["gsau-rec", "lightgcn", "gsau", "gsau-rec-sampled-ce", "gsau-items"])
def test_two_processes_take_the_single_process_step(tmp_path, preset, sets):
    """Each rank trains on its half of the global batch; the averaged gradients and the updated
    weights equal one process training on the whole batch. With the sampled softmax every rank
    draws the same candidates and counts the whole batch's targets (the popularity buffer)."""
    proc = torchrun(TESTS / "ddp_step.py", preset, tmp_path / "ddp.pt", *NO_DROPOUT, *sets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)

    cfg = resolve(preset, None, NO_DROPOUT + sets)
    split = random_sequences_split(3, 40, 14, 30)
    model = build_model(cfg, split).train()
    model.pair_generator = torch.Generator().manual_seed(11)  # the ranks' pairs for L_SU
    graph, seq = make_streams(cfg, split)
    rng = np.random.default_rng(0)
    optimizer = make_optimizer(cfg, model)
    torch.manual_seed(5)
    train_step(model, optimizer, next(graph.batches(rng)) if graph else None, next(seq.batches(rng)) if seq else None)
    grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    assert set(ddp["grads"]) >= set(grads)
    for k, g in grads.items():
        torch.testing.assert_close(ddp["grads"][k], g, rtol=1e-4, atol=1e-6, msg=k)
    # Adam's first step moves each weight by about lr * sign(gradient): where a gradient is zero up
    # to rounding (the key projection's bias cannot change attention), the sign is noise.
    for k, p in model.named_parameters():
        if p.grad is not None:
            clear = p.grad.abs() > 1e-5
            torch.testing.assert_close(ddp["weights"][k][clear], p.detach()[clear], rtol=1e-4, atol=1e-6, msg=k)
    for k, b in model.named_buffers():
        torch.testing.assert_close(ddp["weights"][k], b, msg=k)


def chains(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    seqs = [c * 6 + (rng.integers(6) + np.arange(rng.integers(6, 10))) % 6 + 1 for c in rng.integers(0, 3, 120)]
    indptr = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    Interactions("chains", np.array([f"u{u}" for u in range(120)]), np.array([f"i{i}" for i in range(1, 19)]),
                 indptr, np.concatenate(seqs).astype(np.int64)).save(tmp_path / "data")
    return tmp_path / "data"


def gsau_train(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "gsau", "train", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


SETS = ["--set", "batch_size=32", "--set", "embedding_dim=16", "--set", "inner_size=32", "--set", "max_len=8",
        "--set", "n_layers=1", "--set", "patience=50", "--set", "hidden_dropout=0.2", "--set", "attn_dropout=0.2"]


def test_a_two_process_run_resumes_after_a_kill_to_the_same_end(tmp_path):
    data = chains(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    args = ["--model", "gsau-rec", "--dataset", data, "--epochs", 4, "--quiet", "--nproc", 2, *SETS]
    done = gsau_train(*args, "--out", a)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("config.yaml", "data.json", "log.jsonl", "best.pt", "last.pt", "metrics.json"):
        assert (a / name).exists(), name
    assert json.loads((a / "metrics.json").read_text())["epochs_run"] == 4
    assert checkpoint.load(a / "last.pt")["world_size"] == 2

    # The same run, killed (the launcher and both ranks) once its first epoch is checkpointed.
    proc = subprocess.Popen([sys.executable, "-m", "gsau", "train", *map(str, args), "--out", str(b)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 200
    while not (b / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if (b / "metrics.json").exists():
        pytest.skip("the run finished before it could be killed")
    refused = gsau_train("--resume", b, "--quiet")  # one process cannot continue a two-process run
    assert refused.returncode == 2 and "resume it with the same number (--nproc 2)" in refused.stderr
    resumed = gsau_train("--resume", b, "--quiet", "--nproc", 2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert ma["test"] == mb["test"] and ma["valid"] == mb["valid"] and ma["best_epoch"] == mb["best_epoch"]
    wa, wb = checkpoint.load(a / "last.pt")["model"], checkpoint.load(b / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


CLOSE_SCRIPT = """
import sys
from pathlib import Path
import torch
from gsau.distributed import from_environment
dist = from_environment("cpu")
assert dist.owns_group and torch.distributed.is_initialized()
dist.barrier()
dist.close()
Path(sys.argv[1], f"rank{dist.rank}").write_text(f"closed {not torch.distributed.is_initialized()}")
"""


def test_the_process_group_a_run_opens_is_closed_before_the_process_exits(tmp_path):
    """A process that exits with its gloo group alive can abort in gloo's threads ("terminate called
    without an active exception"), seen under load; from_environment's group is closed by close()."""
    script = tmp_path / "close.py"
    script.write_text(CLOSE_SCRIPT)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(script), str(tmp_path)], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["closed True", "closed True"]


def test_a_run_closes_its_own_group_on_success_and_on_failure_and_leaves_a_callers_alone(tmp_path, monkeypatch):
    from gsau import distributed
    from gsau.distributed import Dist
    from gsau.trainer import Trainer

    closed = []

    class Owned(Dist):
        def close(self):
            closed.append(self.owns_group)
            super().close()
    for owns in (True, False):
        monkeypatch.setattr(distributed, "from_environment", lambda spec, owns=owns: Owned(owns_group=owns))
        cfg = resolve("sasrec", None, ["embedding_dim=8", "max_len=5", "epochs=1"])
        random_interactions(owns, 40, 20, 8).save(tmp_path / f"data{owns}")
        cfg.data.dataset = str(tmp_path / f"data{owns}")
        trainer = Trainer(cfg, tmp_path / f"run{owns}", progress=False)
        trainer.run()
        assert trainer.model.dist.owns_group is False
        cfg.data.dataset = str(tmp_path / "absent")
        with pytest.raises(GsauError):
            Trainer(cfg, tmp_path / f"bad{owns}", progress=False).run()
    assert closed == [True, True]  # both runs of the group's owner; never the caller's group


def test_ranks_started_with_different_settings_are_refused(tmp_path):
    """Every rank runs the agreement check before touching the run directory; here rank 1's
    answer is faked, since torchrun starts every rank with the same command."""
    from gsau.distributed import Dist
    from gsau.trainer import Trainer

    class TwoRanks(Dist):
        def all_gather_object(self, obj):
            return [obj, obj.replace('"lr": 0.001', '"lr": 0.01')]
    trainer = Trainer(resolve("sasrec"), tmp_path / "run", progress=False)
    trainer.dist = TwoRanks(rank=0, world=2)
    with pytest.raises(GsauError, match="different settings \\(rank 0 vs rank 1\\)"):
        trainer._check_ranks_agree()
    trainer.dist = Dist()
    trainer._check_ranks_agree()  # one process: nothing to compare
    assert not (tmp_path / "run").exists()
