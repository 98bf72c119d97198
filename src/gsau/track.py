"""Experiment tracking: `gsau train --track tensorboard|mlflow`.

Sinks are trainer callbacks fed the records log.jsonl and metrics.json hold (loss terms, learning
rate, validation metrics and seconds per epoch; the final report with the test metrics), so the
trackers show what the run directory records and log.jsonl stays the source of truth.

    tensorboard  event files in RUN_DIR/tensorboard (`tensorboard --logdir runs`); the `track` extra
    mlflow       a run in the tracking store MLFLOW_TRACKING_URI names (default ./mlruns); the
                 `mlflow` extra
"""

from __future__ import annotations

from pathlib import Path

import yaml

from gsau.config import Config
from gsau.errors import GsauError
from gsau.extras import need
from gsau.trainer import Callback

SINKS = ("tensorboard", "mlflow")


def flat_config(cfg: Config) -> dict[str, object]:
    """{"net.gamma": 0.1, ...}: the run's every option as scalars (lists as text), as trackers'
    parameter tables take them."""
    out: dict[str, object] = {"model": cfg.preset}
    for section, values in cfg.to_dict().items():
        if isinstance(values, dict):
            for key, value in values.items():
                out[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


def _group(key: str) -> str:
    """A record's key as a tracker tag: loss/L_CE, valid/ndcg@20, train/lr, time/seconds."""
    if key.startswith("L_"):
        return f"loss/{key}"
    if key.startswith("valid_"):
        return f"valid/{key[len('valid_'):]}"
    if key.endswith("seconds"):
        return f"time/{key}"
    return f"train/{key}"


class TensorBoardSink(Callback):
    """Scalars per epoch, the test metrics at the best epoch, the config as text and as hparams."""

    def __init__(self, cfg: Config, out: str | Path):
        tensorboard = need("torch.utils.tensorboard", "track", "--track tensorboard", package="tensorboard")
        self.cfg, self.log_dir = cfg, Path(out) / "tensorboard"
        self._writer_class = tensorboard.SummaryWriter
        self.writer = None  # opened at the first epoch: a run that fails to start leaves no event file

    def _open(self):
        if self.writer is None:
            self.writer = self._writer_class(log_dir=str(self.log_dir))
            config = yaml.safe_dump(self.cfg.to_dict(), sort_keys=False)
            self.writer.add_text("config", "```\n" + config + "```")  # markdown: keep the YAML's layout
        return self.writer

    def on_epoch_end(self, record: dict) -> None:
        writer = self._open()
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)):
                writer.add_scalar(_group(key), value, record["epoch"])
        writer.flush()

    def on_train_end(self, report: dict) -> None:
        writer = self._open()
        for key, value in report["test"].items():
            writer.add_scalar(f"test/{key}", value, report["best_epoch"])
        writer.add_hparams(flat_config(self.cfg), {f"hparam/test_{k}": v for k, v in report["test"].items()},
                           run_name="hparams")
        writer.close()


def _metric_name(tag: str) -> str:
    return tag.replace("@", "_at_")  # MLflow allows letters, digits, _ - . / and spaces in names


class MLflowSink(Callback):
    """One MLflow run per training: the config as parameters, the records as step metrics, the
    test metrics and metrics.json / config.yaml as artifacts when it ends."""

    def __init__(self, cfg: Config, out: str | Path):
        self.mlflow = need("mlflow", "mlflow", "--track mlflow")
        self.cfg, self.out = cfg, Path(out)
        self.run = None

    def _start(self):
        if self.run is None:
            self.run = self.mlflow.start_run(run_name=self.out.name, tags={"gsau.run_dir": str(self.out.resolve())})
            self.mlflow.log_params(flat_config(self.cfg))
        return self.run

    def on_epoch_end(self, record: dict) -> None:
        self._start()
        metrics = {_metric_name(_group(k)): float(v) for k, v in record.items()
                   if k != "epoch" and isinstance(v, (int, float))}
        self.mlflow.log_metrics(metrics, step=record["epoch"])

    def on_train_end(self, report: dict) -> None:
        self._start()
        self.mlflow.log_metrics({_metric_name(f"test/{k}"): float(v) for k, v in report["test"].items()},
                                step=report["best_epoch"])
        for name in ("metrics.json", "config.yaml", "log.jsonl"):
            if (self.out / name).exists():
                self.mlflow.log_artifact(str(self.out / name))
        self.mlflow.end_run()
        self.run = None


def sinks(names, cfg: Config, out: str | Path) -> list[Callback]:
    """The callbacks for `--track` names (each at most once)."""
    made = []
    for name in dict.fromkeys(names or []):
        if name not in SINKS:
            raise GsauError(f"--track must be {' or '.join(SINKS)}, not {name!r}")
        made.append((TensorBoardSink if name == "tensorboard" else MLflowSink)(cfg, out))
    return made
