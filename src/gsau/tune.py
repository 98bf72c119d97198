"""`gsau tune`: hyper-parameter search on Optuna (the `tune` extra).

Each trial is an ordinary run (`gsau.trainer.Trainer`) in OUT/STUDY/trial-NNNN, so it can be
evaluated, served or resumed like any other. Trials report their validation metric (the run's
early-stopping metric, ndcg@20 by default) every epoch, and Optuna's median pruner stops those
that fall behind the trials before them at the same epoch. The study lives in an Optuna storage
(default sqlite:///OUT/STUDY.db): several `gsau tune` processes given the same storage and study
share it, each taking the next trial, until the study holds --trials finished or pruned trials.
The best trial's full config is written to OUT/STUDY/best.yaml, which `gsau train --config` retrains.

A search space is a YAML mapping of option names (any `gsau config MODEL` lists) to ranges:

    lr: {low: 0.0003, high: 0.01, log: true}     # a float range (log scale)
    n_layers: {low: 1, high: 3}                   # an int range (both ends whole numbers)
    gamma: {low: 0.05, high: 0.5, step: 0.05}     # a float range on a grid
    hidden_dropout: [0.2, 0.3, 0.5]               # one of these values
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import yaml

from gsau import checkpoint, runs
from gsau.config import Config, read_yaml, resolve
from gsau.errors import ConfigError, GsauError
from gsau.extras import need
from gsau.trainer import Callback, Trainer

log = logging.getLogger("gsau")


def read_space(path: str | Path) -> dict[str, dict]:
    """The search space of a YAML file as {option: {"choices": [...]} or {"low", "high", "log",
    "step", "int"}}, every option and range checked (an unknown option is named)."""
    raw = read_yaml(path)
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: expected a mapping of option names to ranges or lists of values")
    space = {}
    for name, spec in raw.items():
        if isinstance(spec, list):
            if not spec:
                raise ConfigError(f"{path}: {name}: an empty list of values")
            space[name] = {"choices": spec}
        elif isinstance(spec, dict) and {"low", "high"} <= set(spec) and set(spec) <= {"low", "high", "log", "step"}:
            low, high = spec["low"], spec["high"]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low >= high:
                raise ConfigError(f"{path}: {name}: low and high must be numbers with low < high, not {low!r}, {high!r}")
            if spec.get("log") and low <= 0:
                raise ConfigError(f"{path}: {name}: a log range needs low > 0")
            whole = isinstance(low, int) and isinstance(high, int) and isinstance(spec.get("step", 1), int)
            space[name] = {"low": low, "high": high, "log": bool(spec.get("log", False)), "step": spec.get("step"),
                           "int": whole}
        else:
            raise ConfigError(f"{path}: {name}: expected {{low: .., high: ..[, log: true][, step: ..]}} or a list "
                              f"of values, not {spec!r}")
    return space


def suggest(trial, space: dict[str, dict]) -> dict:
    values = {}
    for name, spec in space.items():
        if "choices" in spec:
            values[name] = trial.suggest_categorical(name, spec["choices"])
        elif spec["int"]:
            values[name] = trial.suggest_int(name, spec["low"], spec["high"], step=spec["step"] or 1, log=spec["log"])
        else:
            values[name] = trial.suggest_float(name, spec["low"], spec["high"], step=spec["step"], log=spec["log"])
    return values


class Pruning(Callback):
    """Reports the validation metric to Optuna each epoch; raises TrialPruned when it says to stop."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric = trial, metric
        self.optuna = need("optuna", "tune", "gsau tune")

    def on_epoch_end(self, record: dict) -> None:
        self.trial.report(record[f"valid_{self.metric}"], step=record["epoch"])
        if self.trial.should_prune():
            raise self.optuna.TrialPruned(f"valid {self.metric} {record[f'valid_{self.metric}']:.4f} "
                                          f"at epoch {record['epoch']}")


def open_study(optuna, name: str, storage: str):
    """The study, created by whichever worker comes first. Workers started together race to create
    the storage's tables and schema version (a database error for the losers); those are retried."""
    from sqlalchemy.exc import DBAPIError  # optuna's storage layer; an error of the database itself
    for attempt in range(8):
        try:
            return optuna.create_study(study_name=name, storage=storage, load_if_exists=True, direction="maximize",
                                       pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2))
        except DBAPIError as e:
            error = e
            time.sleep(0.05 * (attempt + 1) * (1 + random.random()))
        except Exception as e:  # noqa: BLE001 (a bad URL, a missing driver: one line, not a traceback)
            error = e
            break
    first = (str(error).splitlines() or [type(error).__name__])[0]
    raise GsauError(f"--storage {storage}: cannot open study {name!r} ({first})") from None


def tune(model: str, dataset: str, space_path: str | Path, trials: int, out: str | Path = "tune",
         storage: str | None = None, study: str | None = None, config_file: str | None = None,
         overrides: list[str] | None = None, epochs: int | None = None, progress: bool = False,
         echo=None) -> dict:
    """Run trials until the study holds `trials` finished or pruned ones; returns the best trial's
    {"number", "value", "params", "run_dir", "config_file"}."""
    optuna = need("optuna", "tune", "gsau tune")
    echo = echo or log.info
    if trials < 1:
        raise GsauError(f"--trials must be at least 1, not {trials}")
    space = read_space(space_path)
    base = resolve(model, config_file, overrides, dataset=runs.dataset_spec(dataset), epochs=epochs)
    for name, spec in space.items():  # every option and value of the space, checked before a trial runs
        for value in spec["choices"] if "choices" in spec else (spec["low"], spec["high"]):
            check = Config.from_dict(base.to_dict())
            check.set(name, value, source=str(space_path))
    metric = base.train.metric
    study_name = study or f"{model}-{runs.dataset_label(dataset)}"
    root = Path(out) / study_name
    runs.make_run_dir(root)
    storage = storage or f"sqlite:///{(Path(out) / (study_name + '.db')).resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # gsau's own lines say what each trial did
    shared = open_study(optuna, study_name, storage)
    done_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

    def objective(trial):
        values = suggest(trial, space)
        cfg = Config.from_dict(base.to_dict())
        for name, value in values.items():
            cfg.set(name, value, source=str(space_path))
        try:
            cfg.validate()
        except ConfigError as e:  # e.g. embedding_dim not a multiple of n_heads: this point is not a model
            raise optuna.TrialPruned(f"invalid combination: {e}") from None
        run_dir = root / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("config", cfg.to_dict())
        echo(f"trial {trial.number}: {', '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in values.items())} -> {run_dir}")
        try:
            report = Trainer(cfg, run_dir, progress=progress, echo=lambda line: None,
                             callbacks=[Pruning(trial, metric)]).run()
        except GsauError as e:  # e.g. diverged at this lr: a failed trial, in one line, and the study goes on
            echo(f"trial {trial.number}: failed: {e}")
            return float("nan")  # Optuna records a NaN objective as a failed trial
        echo(f"trial {trial.number}: valid {metric} {report['valid'][metric]:.4f} (best epoch {report['best_epoch']})")
        return report["valid"][metric]  # the validation metric: test stays untouched by the search

    def enough(study_, trial):
        if trial.state == optuna.trial.TrialState.PRUNED:
            echo(f"trial {trial.number}: pruned")
        if len(study_.get_trials(deepcopy=False, states=done_states)) >= trials:
            study_.stop()

    if len(shared.get_trials(deepcopy=False, states=done_states)) < trials:
        shared.optimize(objective, n_trials=trials, callbacks=[enough])
    completed = shared.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        raise GsauError(f"study {study_name}: no trial finished (all pruned or failed); widen the space or raise --epochs")
    best = shared.best_trial
    best_file = root / "best.yaml"
    checkpoint.write_text(best_file, f"# best of study {study_name}: trial {best.number}, valid {metric} {best.value:.4f}\n"
                          f"# retrain: gsau train --model {model} --dataset {dataset} --config {best_file}\n"
                          + yaml.safe_dump(best.user_attrs["config"], sort_keys=False))
    return {"number": best.number, "value": best.value, "params": best.params, "run_dir": best.user_attrs["run_dir"],
            "config_file": str(best_file), "trials": len(shared.get_trials(deepcopy=False, states=done_states))}
