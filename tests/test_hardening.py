"""Never a wrong number, never a lost record, never a traceback (issue #15): each case of the
bad-input sweep as a user meets it on the command line. Every test here failed on the code before
the fix it names."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
import yaml

from gsau import checkpoint
from gsau.cli import main
from gsau.data.interactions import Interactions
from gsau.metrics import ranking_metrics, target_ranks

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--set", "batch_size=16", "--set", "embedding_dim=8", "--set", "inner_size=16", "--set", "max_len=5",
        "--set", "n_layers=1", "--set", "eval_batch_size=64", "--set", "patience=50"]


def blocks(n_users=40, n_items=12) -> Interactions:
    """Users cycle through items of one of three blocks: enough structure to learn in an epoch."""
    rng = np.random.default_rng(1)
    seqs = [(rng.integers(0, 3) * 4 + (rng.integers(4) + np.arange(rng.integers(5, 8))) % 4 + 1) for _ in range(n_users)]
    indptr = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    return Interactions("blocks", np.array([f"u{u}" for u in range(n_users)]),
                        np.array([f"i{i}" for i in range(1, n_items + 1)]), indptr,
                        np.concatenate(seqs).astype(np.int64))


def cli(capsys, *args):
    """(exit code, stdout, stderr) of `gsau ARGS` run in this process."""
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def data_dir(tmp_path):
    blocks().save(tmp_path / "data")
    return tmp_path / "data"


def train(capsys, data_dir, out, *more, model="sasrec", epochs=1):
    return cli(capsys, "train", "--model", model, "--dataset", data_dir, "--out", out, "--epochs", epochs,
               "--quiet", *TINY, *more)


def files(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


# -- 1. a diverged model is never scored as perfect ------------------------------------------------

def test_nan_and_infinite_scores_never_rank_a_target_first():
    scores = torch.tensor([[0.0, float("nan"), 0.2, 0.1],   # NaN elsewhere: counts against the target
                           [0.0, 0.5, float("nan"), 0.1],   # the target's own score is NaN: ranks last
                           [0.0, float("inf"), 0.3, 0.1],   # +inf elsewhere beats it
                           [0.0, 0.3, float("-inf"), 0.9]]) # the target at -inf: last
    targets = torch.tensor([2, 2, 2, 2])
    assert target_ranks(scores, targets).tolist() == [2, 3, 2, 3]
    everything_nan = torch.full((3, 6), float("nan"))
    metrics = ranking_metrics(everything_nan, torch.tensor([1, 2, 3]), ks=(1, 3))
    assert metrics["recall@1"] == 0.0 and metrics["recall@3"] == 0.0  # was 1.0: a "perfect" score


def test_training_stops_at_the_first_non_finite_loss_and_keeps_the_last_checkpoint(capsys, data_dir, tmp_path):
    out = tmp_path / "run"
    assert train(capsys, data_dir, out)[0] == 0
    before = files(out)
    # Resuming for one more epoch at lr 1e30 (only as a fresh run can set it): start one instead.
    rc, stdout, err = train(capsys, data_dir, tmp_path / "diverged", "--set", "lr=1e30", epochs=3)
    assert rc == 2 and "Traceback" not in err
    assert "epoch 2, step 1" in err or "epoch 1, step" in err, err
    assert "L_CE" in err and "not finite" in err
    assert not (tmp_path / "diverged" / "metrics.json").exists()  # no report of a diverged model
    assert files(out) == before  # the other run untouched


def test_a_divergence_after_the_first_epoch_keeps_that_epochs_checkpoint(capsys, data_dir, tmp_path, monkeypatch):
    """The step's loss goes NaN in epoch 2: training stops there; last.pt and best.pt stay as
    epoch 1 wrote them, and the log holds epoch 1 only."""
    from gsau import model as model_module
    real = model_module.Recommender.loss
    calls = {"n": 0}

    def loss(self, *args):
        total, terms = real(self, *args)
        calls["n"] += 1
        if calls["n"] > 3 and self.training:  # epoch 1 has 3 steps at this size (checked below)
            terms = dict(terms, L_CE=torch.tensor(float("nan")))
            total = total * float("nan")
        return total, terms
    monkeypatch.setattr(model_module.Recommender, "loss", loss)
    out = tmp_path / "run"
    rc, _, err = train(capsys, data_dir, out, "--set", "batch_size=64", epochs=3)
    assert rc == 2 and "epoch 2, step 1" in err and "L_CE" in err and "last.pt" in err, err
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in log] == [1]
    state = checkpoint.load(out / "last.pt")
    assert state["epoch"] == 0 and all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.parametrize("command", [["evaluate"], ["recommend", "--user", "u1"]])
def test_evaluate_and_recommend_refuse_non_finite_weights(capsys, data_dir, tmp_path, command):
    out = tmp_path / "run"
    assert train(capsys, data_dir, out)[0] == 0
    weights = checkpoint.load(out / "best.pt")
    weights["item_table.weight"][3, 2] = float("nan")
    checkpoint.save(weights, out / "best.pt")
    rc, stdout, err = cli(capsys, command[0], out, *command[1:])
    assert rc == 2 and "not finite" in err and "diverged" in err and "Traceback" not in err
    assert "1.0000" not in stdout


@pytest.mark.parametrize("value, message", [("inf", "finite"), ("nan", "finite"), ("-0.5", "gamma must be >= 0"),
                                            ("1e999", "finite")])
def test_gamma_must_be_a_finite_non_negative_number(capsys, data_dir, tmp_path, value, message):
    rc, _, err = train(capsys, data_dir, tmp_path / "run", "--set", f"gamma={value}", model="gsau")
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


# -- 2. --resume applies or refuses every option ---------------------------------------------------

@pytest.fixture
def stopped_run(capsys, data_dir, tmp_path):
    """A run of 1 epoch out of a constant-rate run that can be continued."""
    out = tmp_path / "run"
    assert train(capsys, data_dir, out)[0] == 0
    return out


@pytest.mark.parametrize("args, named", [
    (["--set", "lr=0.01"], "lr"),
    (["--set", "gamma=0.3"], "gamma"),
    (["--model", "lightgcn"], "--model"),
    (["--dataset", "toys"], "--dataset"),
    (["--config", "x.yaml"], "--config"),
    (["--seed", "7"], "seed"),
])
def test_resume_refuses_options_it_cannot_apply_by_name(capsys, stopped_run, args, named):
    before = files(stopped_run)
    rc, _, err = cli(capsys, "train", "--resume", stopped_run, "--quiet", *args)
    assert rc == 2 and named in err and "Traceback" not in err, err
    assert files(stopped_run) == before


def test_resume_applies_the_options_that_may_change(capsys, stopped_run):
    rc, _, err = cli(capsys, "train", "--resume", stopped_run, "--quiet", "--epochs", "3", "--threads", "1",
                     "--set", "threads=1")
    assert rc == 0, err
    report = json.loads((stopped_run / "metrics.json").read_text())
    assert report["epochs_run"] == 3 and report["config"]["train"]["epochs"] == 3


def test_resume_with_the_same_model_and_dataset_is_no_change(capsys, stopped_run, data_dir):
    rc, _, err = cli(capsys, "train", "--resume", stopped_run, "--quiet", "--model", "sasrec", "--dataset", data_dir,
                     "--epochs", "2")
    assert rc == 0, err


# -- 3. records are never overwritten --------------------------------------------------------------

def _record_only(capsys, data_dir, tmp_path):
    """A finished run's record without weights, as results/runs/* keep them."""
    out = tmp_path / "record"
    assert train(capsys, data_dir, out)[0] == 0
    for name in ("best.pt", "last.pt"):
        (out / name).unlink()
    (out / "masked.json").write_text("{}\n")
    return out


def test_train_refuses_a_directory_holding_a_record(capsys, data_dir, tmp_path):
    out = _record_only(capsys, data_dir, tmp_path)
    before = files(out)
    rc, _, err = train(capsys, data_dir, out)
    assert rc == 2 and "already holds a run" in err and "metrics.json" in err
    assert files(out) == before


def test_resume_of_a_record_without_checkpoint_refuses_instead_of_retraining(capsys, data_dir, tmp_path):
    out = _record_only(capsys, data_dir, tmp_path)
    before = files(out)
    rc, _, err = cli(capsys, "train", "--resume", out, "--quiet")
    assert rc == 2 and "nothing to resume" in err and "Traceback" not in err
    assert files(out) == before


def test_a_failed_start_leaves_no_run_directory(capsys, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n2 x 4\n")
    rc, _, err = cli(capsys, "train", "--model", "sasrec", "--dataset", bad, "--out", tmp_path / "run", "--quiet")
    assert rc == 2 and "bad.txt:2" in err
    assert not (tmp_path / "run" / "config.yaml").exists()


# -- 4. tracebacks become one-line errors ----------------------------------------------------------

def one_line_error(rc, err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    return rc == 2 and len(lines) == 1 and lines[0].startswith("gsau: error:") and "Traceback" not in err


def test_out_on_an_existing_file_or_an_impossible_path(capsys, data_dir, tmp_path):
    existing = tmp_path / "file"
    existing.write_text("keep me")
    rc, _, err = train(capsys, data_dir, existing)
    assert one_line_error(rc, err) and "not a directory" in err
    assert existing.read_text() == "keep me"
    rc, _, err = train(capsys, data_dir, "/proc/gsau-cannot-exist/run")
    assert one_line_error(rc, err) and "cannot create" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_out_in_a_read_only_directory(capsys, data_dir, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        rc, _, err = train(capsys, data_dir, ro / "run")
    finally:
        ro.chmod(0o700)
    assert one_line_error(rc, err)


def test_best_pt_of_another_model_is_refused(capsys, data_dir, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert train(capsys, data_dir, a)[0] == 0
    assert train(capsys, data_dir, b, model="lightgcn")[0] == 0
    shutil.copy(b / "best.pt", a / "best.pt")
    rc, _, err = cli(capsys, "evaluate", a)
    assert one_line_error(rc, err) and "do not fit" in err


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("model: [unclosed\n", "config.yaml:2: not a valid config file"),
    ("model: !!python/object/apply:os.system ['echo pwned']\n", "config.yaml"),
])
def test_damaged_config_yaml_is_a_one_line_error(capsys, data_dir, tmp_path, text, message):
    out = tmp_path / "run"
    assert train(capsys, data_dir, out)[0] == 0
    (out / "config.yaml").write_text(text)
    for command in (["evaluate", out], ["recommend", out, "--user", "u1"], ["train", "--resume", out, "--quiet"]):
        rc, stdout, err = cli(capsys, *command)
        assert one_line_error(rc, err) and message in err, (command, err)
        assert "pwned" not in stdout


def test_a_dataset_changed_after_training_is_named(capsys, tmp_path):
    blocks().save(tmp_path / "data")
    out = tmp_path / "run"
    assert train(capsys, tmp_path / "data", out)[0] == 0
    blocks(n_items=12, n_users=41).save(tmp_path / "data")  # one more user: the tables no longer fit
    for command in (["evaluate", out], ["recommend", out, "--user", "u1"]):
        rc, _, err = cli(capsys, *command)
        assert one_line_error(rc, err) and "dataset has changed" in err, err


@pytest.mark.parametrize("k", ["-5", "0"])
def test_recommend_refuses_k_below_one(capsys, stopped_run, k):
    with pytest.raises(SystemExit) as e:
        main(["recommend", str(stopped_run), "--user", "u1", "-k", k])
    assert e.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


# -- 5. unclear or silent -------------------------------------------------------------------------

@pytest.mark.parametrize("epochs", ["0", "-1"])
def test_epochs_below_one_says_so(capsys, data_dir, tmp_path, epochs):
    rc, _, err = train(capsys, data_dir, tmp_path / "run", epochs=epochs)
    assert one_line_error(rc, err) and f"epochs must be at least 1, not {epochs}" in err
    assert "warmup" not in err


def test_a_run_on_a_relative_dataset_path_evaluates_from_anywhere(capsys, tmp_path, monkeypatch):
    blocks().save(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    assert train(capsys, "data", tmp_path / "run")[0] == 0
    recorded = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]["dataset"]
    assert recorded == str(tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rc, stdout, err = cli(capsys, "evaluate", tmp_path / "run")
    assert rc == 0 and "test:" in stdout, err


def test_a_missing_dataset_names_the_run(capsys, data_dir, tmp_path):
    out = tmp_path / "run"
    assert train(capsys, data_dir, out)[0] == 0
    shutil.rmtree(data_dir)
    rc, _, err = cli(capsys, "evaluate", out)
    assert one_line_error(rc, err) and str(out) in err and "dataset" in err


@pytest.mark.parametrize("dataset", ["0123", "yes", "my data #2.csv"])
def test_dataset_names_are_kept_as_typed(dataset):
    from gsau.config import resolve
    assert resolve("sasrec", None, [f"dataset={dataset}"]).data.dataset == dataset


def test_cut_offs_without_10_train_and_report(capsys, data_dir, tmp_path):
    """The epoch line showed recall@10 whatever the cut-offs: ks=[1,5] crashed with a KeyError."""
    rc, stdout, err = train(capsys, data_dir, tmp_path / "run", "--set", "ks=[1,5]", "--set", "metric=ndcg@5")
    assert rc == 0, err
    assert "valid ndcg@5" in stdout and "test recall@1 " in stdout and "ndcg@5 " in stdout
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"].keys() >= {"recall@1", "ndcg@5"}


def test_a_write_that_fails_is_a_one_line_error_and_leaves_the_old_file(tmp_path, monkeypatch):
    """Disk full or a read-only directory while a run writes (root ignores permissions, so the
    failure is injected): the error names the file and the file it replaces is intact."""
    from gsau import atomic
    from gsau.errors import GsauError
    target = tmp_path / "metrics.json"
    target.write_text("old\n")

    def full(path, write):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(checkpoint, "write_atomic", full)
    with pytest.raises(GsauError, match="metrics.json: cannot write \\(No space left on device\\)"):
        checkpoint.write_json(target, {"x": 1})
    assert target.read_text() == "old\n"
    assert atomic.write_atomic is not full


def test_a_run_that_keeps_its_data_loads_after_being_moved(capsys, tmp_path):
    """gsau.Model keeps a DataFrame's data inside its run directory; config.yaml names it by
    absolute path, so a moved directory reads its own copy."""
    run = tmp_path / "run"
    blocks().save(tmp_path / "keep")
    assert train(capsys, tmp_path / "keep", run)[0] == 0
    shutil.move(str(tmp_path / "keep"), str(run / "data"))
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["dataset"] = str(run / "data")
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    moved = tmp_path / "elsewhere"
    shutil.move(str(run), str(moved))
    rc, stdout, err = cli(capsys, "evaluate", moved)
    assert rc == 0 and "test:" in stdout, err


def test_a_closed_pipe_is_not_a_traceback():
    """`gsau models | head -1`: the reader leaves early; gsau stops quietly."""
    import subprocess
    import sys
    proc = subprocess.run(f"{sys.executable} -m gsau models | head -1", shell=True, capture_output=True, text=True)
    assert proc.stdout.startswith("gsau ") and "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_one_set_takes_several_options_as_study_does(capsys, data_dir, tmp_path):
    rc, _, err = train(capsys, data_dir, tmp_path / "run", "--set", "gamma=0.3", "hidden_dropout=0.1")
    assert rc == 0, err
    net = json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]["net"]
    assert (net["gamma"], net["hidden_dropout"]) == (0.3, 0.1)
