"""Run directories: what they are called, what state they are in, and how a run is continued.

A run directory holds config.yaml, log.jsonl, best.pt, last.pt and metrics.json (see trainer.py).
Every command that names, inspects or resumes one goes through here, so the rules are written once.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from gsau.config import Config, ConfigError
from gsau.data.interactions import BUNDLED
from gsau.errors import GsauError

RUN_FILES = ("config.yaml", "log.jsonl", "metrics.json", "masked.json", "best.pt", "last.pt")


def dataset_label(spec: str) -> str:
    """The dataset's name in run directories and tables: a bundled name, or the path's last part."""
    spec = str(spec)
    return spec.lower() if spec.lower() in BUNDLED else Path(spec).name


def run_name(model: str, dataset: str, seed: int) -> str:
    """`{preset}-{dataset}-{seed}`: the one naming rule for run directories."""
    return f"{model}-{dataset_label(dataset)}-{seed}"


def default_run_dir(cfg: Config, root: str | Path = "runs") -> Path:
    return Path(root) / run_name(cfg.model, cfg.data.dataset, cfg.train.seed)


def run_state(path: str | Path) -> str:
    """"done" (metrics.json written), "resume" (a last.pt to continue from) or "todo"."""
    path = Path(path)
    if (path / "metrics.json").exists():
        return "done"
    return "resume" if (path / "last.pt").exists() else "todo"


def resumable_options() -> dict[str, str]:
    """{flat option name: section} of the options a resumed run may change."""
    return {f.name: section for section in Config.SECTIONS
            for f in fields(getattr(Config(), section)) if f.metadata.get("resumable")}


def read_config(run_dir: str | Path) -> Config:
    """A run directory's recorded config.yaml."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise GsauError(f"{run_dir}: not a gsau run directory (no config.yaml)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise GsauError(f"{path}: cannot read ({e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise GsauError(f"{where}: not a valid config file ({getattr(e, 'problem', None) or type(e).__name__})") from None
    if not isinstance(raw, dict) or not raw:
        raise GsauError(f"{path}: empty or not a mapping of options; this run's record is damaged")
    try:
        return Config.from_dict(raw)
    except ConfigError as e:
        raise GsauError(f"{path}: {e}") from None


def resumed_config(run_dir: str | Path, changes: dict[str, Any] | None = None) -> Config:
    """The config a resumed run continues under: its recorded config.yaml with `changes` applied.

    Only options declared resumable (epochs, threads) may change; any other option, or a change of
    epochs under a decaying learning-rate schedule (laid over `epochs`), is refused by name rather
    than silently dropped. None values mean "not given"."""
    cfg = read_config(run_dir)
    allowed = resumable_options()
    refused = []
    for key, value in (changes or {}).items():
        if value is None:
            continue
        name = key.split(".", 1)[-1]
        if name not in allowed:
            refused.append(name)
            continue
        before = getattr(getattr(cfg, allowed[name]), name)
        cfg.set(name, value, source="--resume")
        if (name == "epochs" and cfg.train.lr_schedule != "constant"
                and getattr(cfg.train, name) != before):
            raise GsauError(f"{run_dir}: cannot change epochs on resume under lr_schedule="
                            f"{cfg.train.lr_schedule} (the schedule is laid over the run's {before} epochs)")
    if refused:
        raise GsauError(f"{run_dir}: --resume continues the run as it was configured; cannot change "
                        f"{', '.join(sorted(set(refused)))} (only {', '.join(sorted(allowed))} may change)")
    cfg.validate()
    return cfg
