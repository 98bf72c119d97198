"""Run directories: what they are called, what state they are in, and how a run is continued.

A run directory holds config.yaml, log.jsonl, best.pt, last.pt and metrics.json (see trainer.py).
Every command that names, inspects or resumes one goes through here, so the rules are written once.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import hashlib
import json
import os

import numpy as np
import yaml

from gsau.config import Config
from gsau.errors import ConfigError
from gsau.data.interactions import BUNDLED
from gsau.errors import GsauError

DATA_FILE = "data.json"  # a fingerprint of the dataset the run was trained on
RUN_FILES = ("config.yaml", DATA_FILE, "log.jsonl", "metrics.json", "masked.json", "best.pt", "last.pt")


def dataset_label(spec: str) -> str:
    """The dataset's name in run directories and tables: a bundled name, or the path's last part."""
    spec = str(spec)
    return spec.lower() if spec.lower() in BUNDLED else Path(spec).name


def dataset_spec(spec: str) -> str:
    """How a run records its dataset: a bundled name as is, a path made absolute, so the run can be
    evaluated and resumed from any working directory."""
    spec = str(spec)
    if spec.lower() in BUNDLED or not Path(spec).exists():
        return spec
    return str(Path(spec).resolve())


def run_name(model: str, dataset: str, seed: int) -> str:
    """`{preset}-{dataset}-{seed}`: the one naming rule for run directories."""
    return f"{model}-{dataset_label(dataset)}-{seed}"


def default_run_dir(cfg: Config, root: str | Path = "runs") -> Path:
    return Path(root) / run_name(cfg.preset, cfg.data.dataset, cfg.train.seed)


def run_state(path: str | Path) -> str:
    """"done" (metrics.json written), "resume" (a last.pt to continue from) or "todo"."""
    path = Path(path)
    if (path / "metrics.json").exists():
        return "done"
    return "resume" if (path / "last.pt").exists() else "todo"


def stranded(path: str | Path) -> bool:
    """Epochs on record (log.jsonl) but no checkpoint to continue from and no result: a run
    interrupted on another machine, whose weights (never committed) did not come along. Neither
    resumable nor to be trained over."""
    return run_state(path) == "todo" and (Path(path) / "log.jsonl").exists()


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


def check_same_run(saved: dict, cfg: Config, out: str | Path) -> None:
    """A resumed run continues under the settings its checkpoint was written with; only the
    resumable options may differ (epochs only under a constant rate). Both sides are read through
    Config, so an option newer than the checkpoint compares at its default, and a legacy value at
    today's name."""
    before, now = Config.from_dict(saved, "checkpoint").to_dict(), cfg.to_dict()
    free = {(section, name) for name, section in resumable_options().items()}
    if now["train"]["lr_schedule"] != "constant":
        free.discard(("train", "epochs"))
    diffs = [f"{section}.{k}: {before[section][k]!r} -> {v!r}"
             for section in Config.SECTIONS for k, v in now[section].items()
             if (section, k) not in free and before[section][k] != v]
    if before["model"] != now["model"]:
        diffs.insert(0, f"model: {before['model']!r} -> {now['model']!r}")
    if diffs:
        raise GsauError(f"{out}: cannot resume with different settings ({'; '.join(diffs)})")


def data_fingerprint(data) -> dict:
    """What identifies the processed dataset a run was trained on: its sizes and a digest of its
    id maps and interactions. A model's weights only make sense with the exact same data."""
    digest = hashlib.sha256()
    for array in (data.indptr, data.items):
        digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    for ids in (data.user_ids, data.item_ids):
        digest.update("\x00".join(map(str, ids.tolist())).encode("utf-8"))
    return {"dataset": data.name, "users": int(data.n_users), "items": int(data.n_items),
            "interactions": int(data.n_interactions), "sha256": digest.hexdigest()}


def check_data(run_dir: str | Path, data) -> None:
    """Refuse a dataset that differs from the one the run recorded (runs older than the record
    are not checked here; their weights' shapes still are, when loaded)."""
    path = Path(run_dir) / DATA_FILE
    if not path.exists():
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise GsauError(f"{path}: unreadable ({e})") from None
    now = data_fingerprint(data)
    if saved.get("sha256") != now["sha256"]:
        raise GsauError(f"{run_dir}: its dataset has changed since the run was trained "
                        f"({saved.get('users')} users, {saved.get('items')} items, {saved.get('interactions')} "
                        f"interactions then; {now['users']}, {now['items']}, {now['interactions']} now); "
                        "retrain, or restore the original data")


def make_run_dir(path: str | Path) -> None:
    """Create a run directory, or say in one line why it cannot be."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise GsauError(f"{path}: exists and is not a directory; pick another --out") from None
    except OSError as e:
        raise GsauError(f"{path}: cannot create the run directory ({e.strerror or e})") from None
    if not os.access(path, os.W_OK):
        raise GsauError(f"{path}: cannot write into the run directory (permission denied)")
