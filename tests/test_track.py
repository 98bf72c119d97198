"""`gsau train --track`: the TensorBoard (and, when installed, MLflow) sinks hold exactly the
records of log.jsonl and metrics.json; a missing tracker is a one-line error before training."""

import json
import sys

import pytest
import yaml

from app_runs import TINY, tiny_dataset, tiny_sets

from gsau.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def train_args(data, out, *extra):
    return ["train", "--model", "gsau-rec", "--dataset", str(data), "--out", str(out), "--epochs", str(TINY["epochs"]),
            "--quiet", *tiny_sets(), *extra]


def test_tensorboard_holds_what_log_jsonl_holds(tmp_path_factory, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path / "run"
    assert main(train_args(tiny_dataset(tmp_path_factory), out, "--track", "tensorboard")) == 0
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    for tag, key in (("loss/L_CE", "L_CE"), ("loss/L_SU", "L_SU"), ("valid/ndcg@10", "valid_ndcg@10"),
                     ("train/lr", "lr"), ("time/seconds", "seconds")):
        logged = [(e.step, e.value) for e in events.Scalars(tag)]
        assert logged == [(h["epoch"], pytest.approx(h[key], rel=1e-6)) for h in log], tag
    report = json.loads((out / "metrics.json").read_text())
    for metric, value in report["test"].items():
        assert [(e.step, e.value) for e in events.Scalars(f"test/{metric}")] == [(report["best_epoch"], pytest.approx(value, rel=1e-6))]
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert yaml.safe_load(text.strip("`\n")) == report["config"]


def test_mlflow_holds_what_log_jsonl_holds(tmp_path_factory, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    out = tmp_path / "run"
    assert main(train_args(tiny_dataset(tmp_path_factory), out, "--track", "mlflow")) == 0
    client = mlflow.tracking.MlflowClient()
    run = client.search_runs([client.get_experiment_by_name("Default").experiment_id])[0]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    history = client.get_metric_history(run.info.run_id, "valid/ndcg_at_10")
    assert [(m.step, m.value) for m in history] == [(h["epoch"], pytest.approx(h["valid_ndcg@10"])) for h in log]
    assert run.data.params["net.gamma"] == str(json.loads((out / "metrics.json").read_text())["config"]["net"]["gamma"])


def test_a_missing_tracker_is_one_line_before_training(tmp_path_factory, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if tensorboard were not installed
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    out = tmp_path / "run"
    assert main(train_args(tiny_dataset(tmp_path_factory), out, "--track", "tensorboard")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["gsau: error: --track tensorboard needs tensorboard (not installed): "
                   "pip install 'gsau[track]'"]
    assert not out.exists()
