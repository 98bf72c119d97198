"""`gsau study SPEC`: the study's runs, in order, resumable, with several workers.

A spec (YAML; results/study/study.yaml is the issue's) lists cells: a preset with options, the
datasets and seeds to train it on, optionally a sweep over one option's values. Cells run in the
spec's order, question by question: within consecutive cells of one question, the first seed of
every cell before the next seed, so a session that can afford only a slice gets one seed of
everything important first.

    report: ../RESEARCH.md        # where the report goes, relative to the spec
    set: [lr=0.003, probe=256]    # options of every run
    datasets: [beauty, sports, toys]
    seeds: [2020]
    cells:
      - {name: shared, question: 1, model: gsau-rec, seeds: [2020, 2021, 2022]}
      - {name: gsau-gamma, question: 4, model: gsau, datasets: [toys], sweep: {gamma: [0, 0.5]}}

A run is `OUT/runs/{cell}[-{option}{value}]-{dataset}-{seed}/`, a `gsau train` run directory,
plus masked.json (the same weights scored with history masking, as `gsau reproduce` does) and
ranks.json.gz (per-user ranks for the buckets). Two cells that resolve to the same configuration
share one run. A dataset path that is not on this machine (Yelp: its terms forbid bundling it)
is skipped and reported as such. Workers share OUT through `gsau reproduce`'s claims: a finished
run is skipped, an interrupted one resumed, one another worker holds passed over.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from gsau.config import Config, read_yaml, resolve
from gsau.data.interactions import BUNDLED
from gsau.errors import GsauError
from gsau.reproduce.claims import claim, held
from gsau.reproduce.grid import masked_metrics
from gsau.research.buckets import RECORD, write_record
from gsau.runs import dataset_label, read_config, resumed_config, run_state, stranded
from gsau.trainer import Trainer

SPEC_KEYS = {"report", "set", "datasets", "seeds", "cells"}
CELL_KEYS = {"name", "question", "model", "set", "datasets", "seeds", "sweep", "reference"}
AFTER_TRAINING = ("masked.json", RECORD)  # written from the best weights once training has finished


@dataclass
class Cell:
    name: str
    question: int
    model: str
    overrides: list[str]
    datasets: list[str]
    seeds: list[int]
    sweep: tuple[str, list] | None = None  # (option, values)
    # Earlier records to set beside this cell's, e.g. "../runs/graphau-{dataset}-2020" (relative
    # to the spec; {dataset} is the dataset's name).
    reference: str | None = None


@dataclass
class Study:
    spec: Path
    report: Path
    overrides: list[str]
    cells: list[Cell]


@dataclass
class Run:
    cell: Cell
    dataset: str  # as the run reads it: a bundled name or an absolute path
    seed: int
    value: object  # the sweep value, None without a sweep
    name: str
    path: Path
    config: Config
    present: bool  # whether the dataset is on this machine (a path may not be: Yelp)
    same_as: str | None = None  # another cell's run with the same configuration

    @property
    def label(self) -> str:
        return short_label(self.dataset)


def short_label(dataset: str) -> str:
    """A dataset's name in run directories and tables: `beauty`, or a file's name without its
    format suffixes (`../shared/data/Yelp.txt.gz` -> `yelp`)."""
    return re.sub(r"(\.(txt|csv|tsv|inter|json))?(\.gz)?$", "", dataset_label(dataset)).lower()


def _strings(value, what: str, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise GsauError(f"{where}: {what} must be a list")
    return [str(v) for v in value]


def _seeds(value, where: str) -> list[int]:
    seeds = value if isinstance(value, list) else [value]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise GsauError(f"{where}: seeds must be a list of integers, not {value!r}")
    return seeds


def load_spec(path: str | Path) -> Study:
    """Read and check a spec; one-line errors name the file and the cell."""
    path = Path(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list) or not raw["cells"]:
        raise GsauError(f"{path}: a study spec is a mapping with a list of cells")
    unknown = set(raw) - SPEC_KEYS
    if unknown:
        raise GsauError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(SPEC_KEYS))})")
    datasets = _strings(raw.get("datasets", ["beauty", "sports", "toys"]), "datasets", str(path))
    seeds = _seeds(raw.get("seeds", [2020]), str(path))
    cells, names = [], set()
    for i, c in enumerate(raw["cells"], start=1):
        where = f"{path}: cell {i}"
        if not isinstance(c, dict):
            raise GsauError(f"{where}: a cell is a mapping (name, question, model, ...)")
        unknown = set(c) - CELL_KEYS
        if unknown:
            raise GsauError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(CELL_KEYS))})")
        name = str(c.get("name", ""))
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name) or name in names:
            raise GsauError(f"{where}: name must be unique, lower-case letters, digits and dashes, not {name!r}")
        names.add(name)
        where = f"{path}: cell {name}"
        if not isinstance(c.get("question"), int) or not isinstance(c.get("model"), str):
            raise GsauError(f"{where}: needs a question (a number) and a model (a preset)")
        sweep = c.get("sweep")
        if sweep is not None:
            if not (isinstance(sweep, dict) and len(sweep) == 1 and isinstance(next(iter(sweep.values())), list)
                    and next(iter(sweep.values()))):
                raise GsauError(f"{where}: sweep is one option and its values, e.g. {{gamma: [0, 0.5]}}")
            sweep = next(iter(sweep.items()))
        cells.append(Cell(name, c["question"], c["model"], _strings(c.get("set"), "set", where),
                          _strings(c.get("datasets"), "datasets", where) or datasets,
                          _seeds(c["seeds"], where) if "seeds" in c else seeds, sweep, c.get("reference")))
    report = Path(os.path.normpath(path.parent / str(raw.get("report", "RESEARCH.md"))))
    return Study(path, report, _strings(raw.get("set"), "set", str(path)), cells)


def ordered(cells: list[Cell]):
    """(cell, seed) in training order: consecutive cells of one question seed by seed."""
    groups: list[list[Cell]] = []
    for cell in cells:
        if groups and groups[-1][0].question == cell.question:
            groups[-1].append(cell)
        else:
            groups.append([cell])
    for group in groups:
        for rank in range(max(len(c.seeds) for c in group)):
            yield from ((c, c.seeds[rank]) for c in group if rank < len(c.seeds))


def _value_text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def dataset_path(study: Study, dataset: str) -> str:
    """A bundled name as is; a path, relative to the spec, made absolute."""
    if dataset.lower() in BUNDLED:
        return dataset.lower()
    return str((study.spec.parent / dataset).resolve())


def plan(study: Study, out: str | Path, epochs: int | None = None, overrides=(), threads: int = 0,
         questions: set[int] | None = None, device: str | None = None) -> list[Run]:
    """Every run of the study in training order, each with the config it trains under (resolved up
    front, so a bad option fails before hours of training rather than after)."""
    out = Path(out)
    runs, seen = [], {}
    for cell, seed in ordered(study.cells):
        for value in (cell.sweep[1] if cell.sweep else [None]):
            for dataset in cell.datasets:
                where = dataset_path(study, dataset)
                sweep = f"-{cell.sweep[0]}{_value_text(value)}" if cell.sweep else ""
                name = f"{cell.name}{sweep}-{short_label(dataset)}-{seed}"
                options = study.overrides + cell.overrides + list(overrides)
                options += [f"{cell.sweep[0]}={value}"] if cell.sweep else []
                try:
                    config = resolve(cell.model, None, options, dataset=where, epochs=epochs, seed=seed,
                                     threads=threads or None, device=device)
                except GsauError as e:
                    raise GsauError(f"{study.spec}: cell {cell.name}: {e}") from None
                run = Run(cell, where, seed, value, name, out / "runs" / name, config,
                          where in BUNDLED or Path(where).exists())
                key = json.dumps(config.to_dict(), sort_keys=True)
                if key in seen:  # the same training as an earlier cell's: share its run
                    run.same_as, run.path = seen[key].name, seen[key].path
                else:
                    seen[key] = run
                runs.append(run)
    if not questions:
        return runs
    # Only these questions' runs, and the runs of other questions they share (trained under their
    # first name, so the whole study later finds them where it looks).
    chosen = [r for r in runs if r.cell.question in questions]
    shared = {r.same_as for r in chosen if r.same_as}
    return [r for r in runs if r.cell.question in questions or r.name in shared]


def select(runs: list[Run], patterns: str) -> list[Run]:
    """The runs whose names match one of the comma-separated shell patterns (`sasrec-toys-*`), in
    the spec's order; a matched run trained under another cell's name brings that run along."""
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = {r.name for r in runs if any(fnmatch.fnmatchcase(r.name, p) for p in wanted)}
    if not chosen:
        raise GsauError(f"--runs {patterns}: no run of the spec has such a name (`--dry-run` lists them)")
    chosen |= {r.same_as for r in runs if r.name in chosen and r.same_as}
    return [r for r in runs if r.name in chosen]


def complete(path: Path) -> bool:
    return run_state(path) == "done" and all((path / f).exists() for f in AFTER_TRAINING)


# How a run was trained, not what: these may differ from the plan (the dataset is compared by name:
# a path, such as Yelp's, is absolute and differs between checkouts).
RUNTIME_OPTIONS = {("train", "threads"), ("train", "device"), ("train", "eval_batch_size"), ("data", "dataset")}


def differences(run: Run) -> list[str]:
    """Where the run directory's recorded config differs from the run's plan ("epochs 2, planned
    300"); [] when it holds this run or no run yet."""
    if not (run.path / "config.yaml").exists():
        return []
    recorded, planned = read_config(run.path).to_dict(), run.config.to_dict()
    found = [f"model {recorded['model']}, planned {planned['model']}"] if recorded["model"] != planned["model"] else []
    for section, options in planned.items():
        if not isinstance(options, dict):
            continue
        for name, value in options.items():
            if (section, name) not in RUNTIME_OPTIONS and recorded[section].get(name) != value:
                found.append(f"{name} {recorded[section].get(name)}, planned {value}")
    if short_label(recorded["data"]["dataset"]) != run.label:
        found.append(f"dataset {recorded['data']['dataset']}, planned {run.dataset}")
    return found


def finished(run: Run) -> bool:
    """A result of the study: trained to its end under the planned config, every record written."""
    return complete(run.path) and (run.path / "config.yaml").exists() and not differences(run)


def _refuse_other(run: Run) -> None:
    other = differences(run)
    if other:
        raise GsauError(f"{run.path} holds a run of another configuration ({'; '.join(other)}): move it away, or "
                        "give --out for a trial")


def state_of(run: Run) -> str:
    if not run.present:
        return "absent"
    if differences(run):
        return "other"
    if stranded(run.path):
        return "partial"
    return "done" if complete(run.path) else run_state(run.path)


def _kind(run: Run) -> tuple[tuple, str]:
    """What sets a run's pace: its model (preset, graph encoder, shared or separate tables, epoch
    budget) and its dataset. The tables count: separate ones train as the no-graph ranker does, for
    more epochs than the shared table (question 1), so a shared run's pace misleads them."""
    c = run.config
    return (c.preset, c.net.graph_encoder, c.net.shared_table, c.train.epochs), run.label


def _log(path: Path) -> list[dict]:
    file = path / "log.jsonl"
    out = []
    for number, line in enumerate(file.read_text().splitlines() if file.exists() else [], 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                raise GsauError(f"{file}:{number}: not a JSON record (a damaged log; move the run away)") from None
    return out


def _pace(runs: list[Run]) -> dict[tuple, tuple[list[float], list[int]]]:
    """Per kind (_kind) of the finished runs: each one's median seconds an epoch (validation included;
    a paused epoch does not move a median) and the epochs it ran."""
    pace: dict[tuple, tuple[list[float], list[int]]] = {}
    for run in runs:
        if run.present and not run.same_as and finished(run):
            seconds = [h["seconds"] for h in _log(run.path) if "seconds" in h]
            if seconds:
                per_epoch, epochs = pace.setdefault(_kind(run), ([], []))
                per_epoch.append(statistics.median(seconds))
                epochs.append(len(seconds))
    return pace


def _scaled(kind: tuple, pace: dict) -> tuple[float, float] | None:
    """(seconds an epoch, epochs) for a kind no finished run has, from its runs on other datasets:
    the same model finished on dataset B, and a bridge (any model finished on both this dataset and
    B) says how much slower an epoch is here: seconds(B) x bridge(here) / bridge(B).
    The epochs are B's (when to stop is more the model's than the data's). The median over every
    such pair; None where there is none."""
    model, label = kind
    guesses = []
    for (m, source), (per_epoch, epochs) in pace.items():
        if m != model or source == label:
            continue
        for (bridge, here), (bridge_here, _) in pace.items():
            there = pace.get((bridge, source))
            if here == label and there is not None and statistics.median(there[0]) > 0:  # 0 s: no ratio
                ratio = statistics.median(bridge_here) / statistics.median(there[0])
                guesses.append((statistics.median(per_epoch) * ratio, statistics.median(epochs)))
    if not guesses:
        return None
    return statistics.median(g[0] for g in guesses), statistics.median(g[1] for g in guesses)


def seconds_left(run: Run, pace: dict) -> float | None:
    """A run's training left at the pace of the finished runs of its kind: the median seconds an
    epoch times the median epochs run, less the epochs it has on record (at least one epoch); where
    none of its kind has finished, the same kind's pace on other data scaled to this one (_scaled);
    None where neither goes by. An estimate: a run stops when it stops."""
    if _kind(run) in pace:
        per_epoch, epochs = pace[_kind(run)]
        seconds, total = statistics.median(per_epoch), statistics.median(epochs)
    elif (scaled := _scaled(_kind(run), pace)) is not None:
        seconds, total = scaled
    else:
        return None
    return max(total - len(_log(run.path)), 1) * seconds


def _pending(run: Run) -> bool:
    return run.present and not run.same_as and state_of(run) not in ("done", "other")


def estimate(runs: list[Run], pace_from: list[Run] | None = None) -> tuple[float, int, int]:
    """(seconds of training left, runs estimated, runs without an estimate) for the runs neither done
    nor absent (seconds_left), at the pace of the finished runs among pace_from (default: runs)."""
    pace = _pace(runs if pace_from is None else pace_from)
    left, counted, unknown = 0.0, 0, 0
    for run in filter(_pending, runs):
        seconds = seconds_left(run, pace)
        if seconds is None:
            unknown += 1
        else:
            left, counted = left + seconds, counted + 1
    return left, counted, unknown


def _hours(seconds: float) -> str:
    """A duration as a person reads it: 40 s, 12 min, 1.3 h."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def parse_duration(text: str) -> float:
    """Seconds in '5400', '90m', '2h', '2h30m' or '1h5m30s'."""
    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or not match or not any(match.groups()):
        raise GsauError(f"--time-limit expects a duration such as 2h30m, 90m or 5400 (seconds), got {text!r}")
    h, m, sec = (float(g) if g else 0.0 for g in match.groups())
    seconds = h * 3600 + m * 60 + sec
    if seconds <= 0:
        raise GsauError(f"--time-limit must be longer than 0, got {text!r}")
    return seconds


def show(runs: list[Run], pace_from: list[Run] | None = None) -> None:
    """--dry-run: each run's state (done / resume / todo / absent / other: a run of another config
    in its directory / partial: epochs on record without the checkpoint to resume them), holder and,
    for one to train, the training it has left (seconds_left). Reads only."""
    counts: dict[str, int] = {}
    pace = _pace(runs if pace_from is None else pace_from)
    for run in runs:
        st = state_of(run)
        if not run.same_as:  # counted once, under the cell that trains it, as the report counts
            counts[st] = counts.get(st, 0) + 1
        holder = held(run.path) if st in ("todo", "resume") else None
        note = (f"  (same run as {run.same_as})" if run.same_as else "") + (f"  (held by {holder})" if holder else "")
        if st in ("todo", "resume") and not run.same_as:
            seconds = seconds_left(run, pace)
            scaled = "" if _kind(run) in pace else ", scaled from other data"
            note += f"  (about {_hours(seconds)} left{scaled})" if seconds is not None else "  (no estimate)"
        print(f"{st:<7} q{run.cell.question}  {run.name:<36} {run.path if run.present else run.dataset}{note}")
    reused = sum(bool(r.same_as) for r in runs)
    print(f"{len(runs) - reused} runs: " + ", ".join(f"{n} {st}" for st, n in counts.items())
          + (f"; {reused} more cell{'s' if reused > 1 else ''} reuse{'' if reused > 1 else 's'} one of them"
             if reused else ""))
    left, counted, unknown = estimate(runs, pace_from)
    if counted or unknown:
        print(f"estimate: about {left / 3600:.1f} worker-hours of training left for {counted} runs, at the pace of "
              "finished runs of the same preset, graph encoder, tables, dataset and epoch budget (median seconds an "
              "epoch x median epochs run; where none has finished, of the same on other data, its seconds an epoch "
              "scaled by another kind's finished on both)"
              + (f"; {unknown} runs have no such finished run to go by" if unknown else ""))


def _finish_records(path: Path) -> None:
    """The records written from a finished run's best weights, where missing."""
    if not (path / "masked.json").exists():
        masked_metrics(path)
    if not (path / RECORD).exists():
        write_record(path)


def _beyond(run: Run, deadline: float, pace_from: list[Run]) -> str | None:
    """Why a run is not to be started before the deadline (time.time()), or None to start it: one
    stopped by the deadline loses its last epoch and, where the disk does not outlast the job, all."""
    seconds = seconds_left(run, _pace(pace_from))  # read now: other workers' runs may have finished
    if seconds is None:
        return ("no finished run of its kind, here or on other data, gives an estimate of its length; train it "
                "without --time-limit")
    if time.time() + seconds > deadline:
        return f"about {_hours(seconds)} of training left, {_hours(max(deadline - time.time(), 0))} before --time-limit"
    return None


def work(runs: list[Run], max_runs: int | None = None, progress: bool = True, deadline: float | None = None,
         pace_from: list[Run] | None = None) -> int:
    """Train the runs in order; returns how many trainings this worker did. With a deadline
    (time.time()), a run is started or resumed only where its estimate (seconds_left, at the pace
    of the finished runs among pace_from, default runs) ends before it; later runs that fit still go."""
    trained = 0
    for i, run in enumerate(runs, start=1):
        tag = f"[{i}/{len(runs)}] {run.name}"
        if not run.present:
            print(f"{tag}: skipped, {run.dataset} is not on this machine")
            continue
        if run.same_as:
            continue  # trained (and reported) under the first cell that has it
        _refuse_other(run)
        if complete(run.path):
            print(f"{tag}: done, skipped")
            continue
        if stranded(run.path):
            print(f"{tag}: skipped, {run.path} has epochs on record but no checkpoint (last.pt) to resume; "
                  "move it away to train the run afresh")
            continue
        if run_state(run.path) != "done" and max_runs is not None and trained >= max_runs:
            print(f"stopping after {trained} trainings (--max-runs {max_runs})")
            break
        with claim(run.path) as mine:
            if not mine:
                print(f"{tag}: held by another worker ({held(run.path) or 'now released'}), skipped")
                continue
            _refuse_other(run)  # judged again under the claim: another worker may have started it
            if stranded(run.path):
                print(f"{tag}: skipped, {run.path} has epochs on record but no checkpoint (last.pt) to resume")
                continue
            st = run_state(run.path)
            t0 = time.perf_counter()
            if st != "done" and deadline is not None:
                why = _beyond(run, deadline, runs if pace_from is None else pace_from)
                if why:
                    print(f"{tag}: skipped, {why}")
                    continue
            if st != "done":
                cfg = run.config
                if st == "resume":  # as the run started (its config.yaml); threads, epochs, device: this worker's
                    cfg = resumed_config(run.path, {"threads": cfg.train.threads, "epochs": cfg.train.epochs,
                                                    "device": cfg.train.device})
                print(f"{tag}: {'resuming' if st == 'resume' else 'training'} -> {run.path}")
                # A directory with only the config and data fingerprint (stopped inside epoch 1) is
                # "resumed": the trainer starts it afresh there.
                resume = st == "resume" or (run.path / "config.yaml").exists()
                Trainer(cfg, run.path, progress=progress, echo=lambda line: print("  " + line)).run(resume=resume)
                trained += 1
            _finish_records(run.path)
        metrics = json.loads((run.path / "metrics.json").read_text())
        print(f"{tag}: finished ({time.perf_counter() - t0:.0f}s), best epoch {metrics['best_epoch']} | "
              f"test R@10 {metrics['test'].get('recall@10', float('nan')):.4f}")
    return trained


def spawn_workers(argv: list[str], workers: int) -> None:
    """Run `gsau study` `workers` times at once (each claims its runs), and wait for all of them."""
    processes = [subprocess.Popen([sys.executable, "-m", "gsau", *argv]) for _ in range(workers)]
    codes = [p.wait() for p in processes]
    failed = [f"worker {i + 1} (exit {c})" for i, c in enumerate(codes) if c != 0]
    if failed:
        raise GsauError(f"{', '.join(failed)} failed; the others' runs are on disk; rerun the command to resume")


def default_threads(workers: int) -> int:
    """Torch threads per worker when several share the machine (0: torch's default)."""
    return max(1, (os.cpu_count() or 1) // workers) if workers > 1 else 0
