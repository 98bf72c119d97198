"""`gsau train` / `--resume` / `evaluate` / `recommend` as a user runs them, and checkpoint safety.

One uninterrupted run (A) is shared by the module. Run B is the same command killed with SIGKILL
after its first checkpoint, then resumed; it must end exactly where A did.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import block_cycles

from gsau import checkpoint
from gsau.errors import GsauError

EPOCHS = 5
SETS = ["batch_size=64", "eval_batch_size=512", "patience=100", "ks=[5,10]", "metric=ndcg@10",
        "embedding_dim=64", "inner_size=64", "n_layers=1", "n_heads=2", "max_len=8",
        "hidden_dropout=0.1", "attn_dropout=0.1", "lr=0.005", "lr_schedule=cosine", "warmup_epochs=1"]
TIMING = {"seconds", "train_seconds"}
BLOCK, N_USERS = 15, 300

pytestmark = pytest.mark.usefixtures("one_thread")


def gsau_command() -> list[str]:
    script = Path(sys.executable).with_name("gsau")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gsau.cli"]


ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


def gsau(*args, check=True, timeout=300):
    proc = subprocess.run(gsau_command() + [str(a) for a in args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def successor(item: int) -> int:
    block, k = divmod(item - 1, BLOCK)
    return block * BLOCK + (k + 1) % BLOCK + 1


def train_args(data_dir, out):
    args = ["train", "--model", "gsau", "--dataset", data_dir, "--out", out, "--epochs", EPOCHS, "--seed", 3,
            "--threads", 1, "--quiet"]
    for s in SETS:
        args += ["--set", s]
    return args


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    data = block_cycles(N_USERS, 4, BLOCK, name="chains")  # users walk a cycle of 15 items in one of 4 blocks
    data.save(root / "data")
    gsau(*train_args(root / "data", root / "A"))
    return root, data


def read_log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_train_writes_a_complete_run(run_a):
    root, _ = run_a
    a = root / "A"
    for name in ("config.yaml", "log.jsonl", "best.pt", "last.pt", "metrics.json"):
        assert (a / name).exists(), name
    report = json.loads((a / "metrics.json").read_text())
    assert report["model"] == "gsau" and report["epochs_run"] == EPOCHS
    assert 1 <= report["best_epoch"] <= EPOCHS
    log = read_log(a / "log.jsonl")
    assert [h["epoch"] for h in log] == list(range(1, EPOCHS + 1))
    assert report["valid"]["ndcg@10"] == max(h["valid_ndcg@10"] for h in log)
    assert report["config"]["net"]["embedding_dim"] == 64 and report["config"]["train"]["seed"] == 3
    assert report["test"]["recall@10"] > 0.8  # the chains are learnt
    # Warm-up ends at full rate after epoch 1, then the cosine reaches 0 at the last step.
    assert log[0]["lr"] == pytest.approx(0.005)
    assert log[2]["lr"] == pytest.approx(0.005 * 0.5 * (1 + np.cos(np.pi * 0.5)), rel=0.05)
    assert 0 < log[-1]["lr"] < 0.005 * 1e-3  # the rate of the run's last step


def test_killed_run_resumes_to_the_same_result(run_a):
    root, _ = run_a
    b = root / "B"
    proc = subprocess.Popen(gsau_command() + [str(x) for x in train_args(root / "data", b)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    try:
        deadline = time.monotonic() + 300
        while not (b / "last.pt").exists():
            assert proc.poll() is None, f"run B ended before its first checkpoint: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (b / "metrics.json").exists(), "the run finished before it was killed; the test proves nothing"
    done = checkpoint.load(b / "last.pt")["epoch"] + 1
    assert 1 <= done < EPOCHS

    # Mark the checkpointed history (a timing field, which the comparison ignores): a resume keeps
    # it, a silent restart from scratch would not.
    state = checkpoint.load(b / "last.pt")
    state["history"][0]["seconds"] = 12345.0
    checkpoint.save(state, b / "last.pt")

    gsau("train", "--resume", b, "--quiet")
    assert read_log(b / "log.jsonl")[0]["seconds"] == 12345.0

    a_report = json.loads((root / "A" / "metrics.json").read_text())
    b_report = json.loads((b / "metrics.json").read_text())
    for key in ("test", "valid", "best_epoch", "epochs_run", "config"):
        assert b_report[key] == a_report[key], key
    a_log, b_log = read_log(root / "A" / "log.jsonl"), read_log(b / "log.jsonl")
    assert len(a_log) == len(b_log) == EPOCHS
    for ha, hb in zip(a_log, b_log):
        assert set(ha) == set(hb)
        assert {k: v for k, v in ha.items() if k not in TIMING} == {k: v for k, v in hb.items() if k not in TIMING}
    a_best, b_best = checkpoint.load(root / "A" / "best.pt"), checkpoint.load(b / "best.pt")
    assert a_best.keys() == b_best.keys()
    for k in a_best:
        assert torch.equal(a_best[k], b_best[k]), k


def test_training_into_an_existing_run_is_refused(run_a):
    root, _ = run_a
    before = (root / "A" / "metrics.json").read_text()
    proc = gsau(*train_args(root / "data", root / "A"), check=False)
    assert proc.returncode == 2
    assert "--resume" in proc.stderr and "Traceback" not in proc.stderr
    assert (root / "A" / "metrics.json").read_text() == before


def test_evaluate_reproduces_the_reported_metrics(run_a):
    root, _ = run_a
    report = json.loads((root / "A" / "metrics.json").read_text())
    proc = gsau("evaluate", root / "A", "--json")
    result = json.loads(proc.stdout)
    assert result["test"] == report["test"]
    assert result["valid"] == report["valid"]  # best.pt holds the best epoch's weights


def test_evaluate_with_and_without_history_masking(run_a):
    root, _ = run_a
    masked = json.loads(gsau("evaluate", root / "A", "--json", "--stage", "test", "--mask-history", "yes").stdout)
    plain = json.loads(gsau("evaluate", root / "A", "--json", "--stage", "test", "--mask-history", "no").stdout)
    assert set(masked) == set(plain) == {"test"}
    # Masking only removes competitors of the target: it never lowers a hit rate.
    for k in ("recall@5", "recall@10"):
        assert masked["test"][k] >= plain["test"][k]


def test_recommend_prints_k_items_in_external_ids(run_a):
    root, data = run_a
    user = 7
    proc = gsau("recommend", root / "A", "--user", data.user_ids[user - 1], "-k", 5)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 5, proc.stdout
    rows = [line.split("\t") for line in lines]
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5"]
    items = [r[1] for r in rows]
    assert set(items) <= set(data.item_ids.tolist()) and len(set(items)) == 5
    scores = [float(r[2]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    # The model learnt the communities: the top items come from the user's own block of 15.
    block = (int(data.sequence(user)[0]) - 1) // BLOCK
    own = set(data.item_ids[block * BLOCK: (block + 1) * BLOCK].tolist())
    assert set(items[:3]) <= own


def test_recommend_exclude_seen(run_a):
    root, data = run_a
    user = 12
    proc = gsau("recommend", root / "A", "--user", data.user_ids[user - 1], "-k", 20, "--exclude-seen")
    items = [line.split("\t")[1] for line in proc.stdout.strip().splitlines()]
    assert len(items) == 20
    seen = set(data.item_ids[data.sequence(user) - 1].tolist())
    assert not seen & set(items)


def test_recommendations_follow_the_chains_for_most_users(run_a):
    from gsau.serving import Recommendations
    root, data = run_a
    rec = Recommendations.from_run(root / "A")
    users = np.arange(1, data.n_users + 1)
    scores = rec.scores(users)
    assert scores.shape == (data.n_users, data.n_items + 1)
    scores[:, 0] = -torch.inf
    expected = np.array([successor(int(data.sequence(u)[-1])) for u in users])
    assert (scores.argmax(1).numpy() == expected).mean() > 0.9
    for u in users[:10]:  # top_k agrees with the bulk scores, in external ids
        (item, score), = rec.top_k(data.user_ids[u - 1], 1)
        assert item == data.item_ids[int(scores[u - 1].argmax()) - 1]
        assert score == pytest.approx(float(scores[u - 1].max()), rel=1e-5)


def test_recommend_unknown_user_is_a_clear_error(run_a):
    root, _ = run_a
    proc = gsau("recommend", root / "A", "--user", "nobody-42", "-k", 5, check=False)
    assert proc.returncode == 2
    assert "unknown user" in proc.stderr and "nobody-42" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_evaluate_a_directory_that_is_not_a_run(tmp_path):
    proc = gsau("evaluate", tmp_path, "--json", check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and str(tmp_path) in proc.stderr


# -- checkpoints never unpickle arbitrary objects --------------------------------------------------

def _side_effect(path):
    Path(path).write_text("code ran")
    return {"model": "pwned"}


class Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (_side_effect, (str(self.path),))


def test_checkpoint_with_a_pickled_object_is_refused(tmp_path):
    marker = tmp_path / "marker"
    bad = tmp_path / "evil.pt"
    torch.save({"model": Payload(marker)}, bad)
    with pytest.raises(GsauError, match="evil.pt"):
        checkpoint.load(bad)
    assert not marker.exists()
    # The same file through plain pickle runs the payload: the test would catch an unsafe load.
    torch.load(bad, weights_only=False)
    assert marker.exists()


def test_checkpoint_round_trip_of_tensors_and_plain_values(tmp_path):
    state = {"w": torch.arange(6.0).view(2, 3), "epoch": 3, "history": [{"a": 1.5}], "rng": torch.get_rng_state()}
    checkpoint.save(state, tmp_path / "ok.pt")
    back = checkpoint.load(tmp_path / "ok.pt")
    assert torch.equal(back["w"], state["w"]) and back["epoch"] == 3 and back["history"] == [{"a": 1.5}]


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all",
                                     b"PK\x03\x04 truncated zip"])
def test_garbage_checkpoint_is_a_gsau_error(tmp_path, content):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(GsauError, match="x.pt"):
        checkpoint.load(path)


def test_missing_checkpoint_is_a_gsau_error(tmp_path):
    with pytest.raises(GsauError, match="no checkpoint"):
        checkpoint.load(tmp_path / "absent.pt")


def test_cli_refuses_a_poisoned_best_checkpoint(run_a, tmp_path):
    root, data = run_a
    poisoned = tmp_path / "poisoned"
    shutil.copytree(root / "A", poisoned)
    marker = tmp_path / "marker"
    torch.save({"model": Payload(marker)}, poisoned / "best.pt")
    proc = gsau("recommend", poisoned, "--user", data.user_ids[0], check=False)
    assert proc.returncode == 2
    assert "best.pt" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()
