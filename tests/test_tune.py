"""`gsau tune`: trials are ordinary runs, pruned on the validation metric, shared by workers through
one storage, and the best config retrains to the same result with `gsau train --config`."""

import json
import subprocess

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from app_runs import ENV, TINY, gsau_command, tiny_dataset, tiny_sets  # noqa: E402

from gsau.cli import main  # noqa: E402
from gsau.config import resolve  # noqa: E402
from gsau.errors import ConfigError, GsauError  # noqa: E402
from gsau.trainer import Trainer  # noqa: E402
from gsau.tune import Pruning, read_space, tune  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SPACE = {"lr": {"low": 0.003, "high": 0.03, "log": True}, "hidden_dropout": [0.1, 0.2]}


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    return path


def test_best_config_retrains_to_the_best_trial(tmp_path_factory, tmp_path, space, capsys):
    data = tiny_dataset(tmp_path_factory)
    args = ["tune", "--model", "gsau-rec", "--dataset", str(data), "--space", str(space), "--trials", "3",
            "--out", str(tmp_path / "tune"), "--epochs", str(TINY["epochs"]), "--quiet", *tiny_sets()]
    assert main(args) == 0
    out = capsys.readouterr().out
    best_file = tmp_path / "tune" / f"gsau-rec-{data.name}" / "best.yaml"
    assert f"wrote {best_file}" in out
    study = optuna.load_study(study_name=f"gsau-rec-{data.name}", storage=f"sqlite:///{tmp_path / 'tune' / ('gsau-rec-' + data.name + '.db')}")
    assert len(study.trials) == 3
    best = study.best_trial
    trial_metrics = json.loads((tmp_path / "tune" / f"gsau-rec-{data.name}" / f"trial-{best.number:04d}" / "metrics.json").read_text())
    assert trial_metrics["valid"]["ndcg@10"] == best.value  # the objective is validation, never test
    assert main(["train", "--model", "gsau-rec", "--dataset", str(data), "--config", str(best_file),
                 "--out", str(tmp_path / "again"), "--quiet"]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["config"] == trial_metrics["config"]
    assert again["valid"] == trial_metrics["valid"] and again["test"] == trial_metrics["test"]
    # The study already holds its trials: running it again adds none.
    assert main(args) == 0 and len(study.trials) == len(optuna.load_study(study_name=study.study_name, storage=study._storage).trials)


def test_two_workers_share_one_study(tmp_path_factory, tmp_path, space):
    data = tiny_dataset(tmp_path_factory)
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    command = gsau_command() + ["tune", "--model", "gsau-rec", "--dataset", str(data), "--space", str(space),
                                "--trials", "4", "--storage", storage, "--study", "shared", "--out", str(tmp_path),
                                "--epochs", "1", "--quiet", *tiny_sets()]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    assert 4 <= len(trials) <= 5  # a worker may start one trial while the other finishes the 4th
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(p.name for p in (tmp_path / "shared").glob("trial-*")) == [f"trial-{t.number:04d}" for t in trials]


def test_a_trial_behind_is_pruned_after_its_epoch(tmp_path_factory, tmp_path):
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))  # NDCG < 2: always
    trial = study.ask()
    cfg = resolve("gsau-rec", None, [f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in TINY.items()],
                  dataset=str(tiny_dataset(tmp_path_factory)))
    with pytest.raises(optuna.TrialPruned, match="valid ndcg@10 .* at epoch 1"):
        Trainer(cfg, tmp_path / "run", progress=False, callbacks=[Pruning(trial, "ndcg@10")]).run()
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 1  # stopped after the first epoch
    assert trial.storage.get_trial(trial._trial_id).intermediate_values.keys() == {1}


def test_a_bad_space_is_named_before_any_trial(tmp_path_factory, tmp_path):
    data = str(tiny_dataset(tmp_path_factory))
    bad = tmp_path / "bad.yaml"
    for text, says in (("gama: [0.1, 0.2]", "unknown option 'gama'"), ("lr: {low: 0.1, high: 0.01}", "low < high"),
                       ("lr: {low: 0, high: 1, log: true}", "log range needs low > 0"), ("lr: 0.1", "expected {low"),
                       ("- lr", "expected a mapping")):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=says):
            tune("gsau-rec", data, bad, 1, out=tmp_path / "never")
    assert not (tmp_path / "never").exists()
    assert read_space_of("n_layers: {low: 1, high: 3}", tmp_path)["n_layers"]["int"]
    with pytest.raises(GsauError, match="--trials must be at least 1"):
        tune("gsau-rec", data, bad, 0)
    bad.write_text("lr: [0.001]")
    with pytest.raises(GsauError, match="--storage nosuch://x: cannot open study 'gsau-rec-.*' \\(Can't load plugin"):
        tune("gsau-rec", data, bad, 1, out=tmp_path / "t", storage="nosuch://x")


def read_space_of(text, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return read_space(path)
