"""`gsau reproduce`: train every preset on every dataset and seed, then write the comparison.

    OUT/runs/{model}-{dataset}-{seed}/   one `gsau train` run directory each, plus masked.json
    OUT/results.csv                      one row per finished run
    OUT/RESULTS.md                       tables, published figures, the paper's claims checked
    OUT/curves.png                       validation NDCG@20 per epoch (needs matplotlib)

The grid is long (days on a CPU), so it is built to be run in slices: a finished run is skipped,
an interrupted one resumed, and --max-runs stops after that many trainings. Several workers may
share one OUT (more processes on a machine, or machines on a shared disk): each run is claimed
before it is trained, and a run another worker holds is passed over. The report is rewritten from
whatever is on disk after every call, so it is always current and never needs a model to be
loaded.

Two protocols. The paper's: sequential models rank every item, graph models mask the user's
training items (as in their own papers); the best epoch is always chosen on it. The masked one
re-scores those same best weights with every model masking the user's earlier items, which is
how recent sequential benchmarks report, so our figures can stand beside theirs.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

from gsau import __version__, checkpoint
from gsau.atomic import write_atomic
from gsau.config import Config, load_preset, resolve
from gsau.data.interactions import BUNDLED
from gsau.errors import GsauError
from gsau.evaluation import evaluate
from gsau.trainer import Trainer, load_run

DATASETS = ["beauty", "sports", "toys"]
SEEDS = [2020]
# Importance order: a session that can afford only a slice gets the paper's headline comparison first.
GROUPS = [["gsau-rec", "gsau", "sasrec-u", "sasrec"],
          ["lightgcn", "directau", "graphau"],
          ["gsau-bert4rec", "bert4rec-u", "bert4rec"]]
OURS = ["gsau", "gsau-rec", "gsau-bert4rec"]
MAIN = ["gsau-rec", "gsau", "sasrec-u", "sasrec"]
KS = [5, 10, 20, 50]
METRICS = ["recall", "ndcg", "mrr"]
SHORT = {"recall": "R", "ndcg": "N", "mrr": "MRR"}
DASH = "—"

# Published figures (test split). The authors' logs, paper protocol:
PUBLISHED = {
    ("gsau-rec", "toys"): {"recall@10": 0.0924, "ndcg@10": 0.0470, "recall@20": 0.1328, "ndcg@20": 0.0572},
    ("sasrec", "beauty"): {"recall@10": 0.0826, "ndcg@10": 0.0414, "recall@20": 0.1168, "ndcg@20": 0.0500},
}
# The paper's claim: GSAU's Recall@10 gain over its best baseline, SASRec (u), in percent.
CLAIMED_GAIN = {"beauty": 5.16, "sports": 13.40, "toys": 5.16}
# eSASRec benchmark (arXiv 2508.06450), seen items filtered: (test R@10, test N@10).
MASKED_PUBLISHED = {
    "SASRec+SS": {"beauty": (0.0921, 0.0531), "sports": (0.0569, 0.0314), "toys": (0.0970, 0.0580)},
    "eSASRec": {"beauty": (0.0928, 0.0523), "sports": (0.0560, 0.0323), "toys": (0.0939, 0.0538)},
}


# -- the grid -------------------------------------------------------------------------------------
def model_order(models: list[str]) -> list[str]:
    known = [m for group in GROUPS for m in group]
    return [m for m in known if m in models] + [m for m in models if m not in known]


def grid(models: list[str], datasets: list[str], seeds: list[int]) -> list[tuple[str, str, int]]:
    """(model, dataset, seed) cells in the order they are trained.

    Group by group; within a group the first seed everywhere before the next seed (one seed of
    every important cell beats three seeds of a few), then model-major, datasets as given.
    """
    known = {m for group in GROUPS for m in group}
    cells = []
    for group in GROUPS + [[m for m in models if m not in known]]:  # custom presets last
        for seed in seeds:
            cells += [(m, d, seed) for m in group if m in models for d in datasets]
    return cells


def dataset_label(spec: str) -> str:
    """The dataset's name in run directories and tables: a bundled name, or the path's last part."""
    return spec.lower() if spec.lower() in BUNDLED else Path(spec).name


def run_dir(out: Path, model: str, dataset: str, seed: int) -> Path:
    return out / "runs" / f"{model}-{dataset_label(dataset)}-{seed}"


def state(path: Path) -> str:
    if (path / "metrics.json").exists():
        return "done"
    return "resume" if (path / "last.pt").exists() else "todo"


CLAIM = ".claim"  # in a run directory: its lock, and who holds it
_unlocked_warned = False


@contextlib.contextmanager
def claim(path: Path):
    """Hold a run directory against other workers; yields False when another worker holds it.

    An advisory lock (flock) on path/.claim rather than the file's mere presence: the kernel drops
    it when its process ends, kill -9 included, so a crashed worker never leaves a run blocked.
    The file records the holder (host, pid, since) for people; it is not what is checked. Where
    flock is missing (Windows) runs are not claimed, and workers must be given disjoint grids.
    """
    try:
        import fcntl
    except ImportError:
        yield True
        return
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / CLAIM, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        locked = _lock(fd, path)
        if not locked:  # None: this filesystem has no locks; go on unclaimed, as warned
            yield locked is None
            return
        holder = f"{os.uname().nodename} pid {os.getpid()} since {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        try:
            yield True
        finally:
            os.ftruncate(fd, 0)  # unlocked below; an empty file means nobody holds the run
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _lock(fd: int, path: Path) -> bool | None:
    """Take the claim's lock: True, False when another worker holds it, None when the filesystem
    has no locks (some NFS, FUSE and cluster mounts)."""
    import fcntl
    for _ in range(5):  # a moment's retry: held() takes the lock briefly to look
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            time.sleep(0.02)
        except OSError as e:
            global _unlocked_warned
            if not _unlocked_warned:
                print(f"warning: {path.parent} cannot be locked ({e.strerror}); runs are not claimed, so run "
                      "only one worker on it")
                _unlocked_warned = True
            return None
    return False


def held(path: Path) -> str | None:
    """Who holds a run directory (the claim's text), or None if no live worker does. Read-only:
    creates nothing, so a dry run leaves no trace."""
    try:
        import fcntl
        fd = os.open(path / CLAIM, os.O_RDONLY)
    except (ImportError, FileNotFoundError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another worker"
    except OSError:  # no locks on this filesystem: nobody can be seen holding anything
        return None
    finally:
        os.close(fd)


def masked_metrics(path: Path) -> dict:
    """Best weights re-scored with every model masking the user's earlier items."""
    cfg, split, model = load_run(path)
    report = {stage: evaluate(model, split, stage, cfg.train.ks, mask_history=True,
                              batch_size=cfg.train.eval_batch_size) for stage in ("valid", "test")}
    checkpoint.write_json(path / "masked.json", report)
    return report


def reproduce(out, models, datasets, seeds, epochs=None, overrides=(), max_runs=None, dry_run=False,
              report_only=False, progress=True, command="gsau reproduce") -> None:
    out = Path(out)
    if report_only:
        return write_report(out, models, datasets, command)
    for d in datasets:
        if d.lower() not in BUNDLED and not Path(d).exists():
            raise GsauError(f"unknown dataset {d!r}: not a bundled name ({', '.join(BUNDLED)}) and no such path")
    cells = grid(models, datasets, seeds)
    # Resolve every config first, so a bad --set fails before hours of training rather than after.
    configs = [resolve(m, None, list(overrides), dataset=d, epochs=epochs, seed=s) for m, d, s in cells]
    if dry_run:
        counts = {"done": 0, "resume": 0, "todo": 0}
        held_by = 0
        for (m, d, s) in cells:
            path = run_dir(out, m, d, s)
            st = state(path)
            counts[st] += 1
            holder = held(path) if st != "done" else None
            held_by += holder is not None
            print(f"{st:<6}  {m:<14} {dataset_label(d):<10} {s}  {path}" + (f"  (held by {holder})" if holder else ""))
        print(f"{len(cells)} runs: {counts['done']} done, {counts['resume']} to resume, {counts['todo']} to train"
              + (f"; {held_by} held by other workers" if held_by else ""))
        return
    trained = 0
    try:
        for i, ((m, d, s), cfg) in enumerate(zip(cells, configs), start=1):
            path = run_dir(out, m, d, s)
            tag = f"[{i}/{len(cells)}] {m} {dataset_label(d)} seed {s}"
            first_look = state(path)
            if first_look == "done" and (path / "masked.json").exists():
                print(f"{tag}: done, skipped")  # no claim needed: a finished run only is read
                continue
            if first_look != "done" and max_runs is not None and trained >= max_runs:
                print(f"stopping after {trained} trainings (--max-runs {max_runs})")
                break
            with claim(path) as mine:
                if not mine:
                    print(f"{tag}: held by another worker ({held(path) or 'now released'}), skipped")
                    continue
                # Judged only now, under the claim: another worker may have finished it meanwhile.
                st = state(path)
                if st == "done":
                    if not (path / "masked.json").exists():  # interrupted between the test and the masked scores
                        print(f"{tag}: done; scoring the masked protocol")
                        masked_metrics(path)
                    else:
                        print(f"{tag}: done, skipped")
                    continue
                t0 = time.perf_counter()
                if st == "resume":
                    # Continue as the run started (its own config.yaml), as `gsau train --resume` does.
                    threads = cfg.train.threads  # how this worker runs, not what the run trains
                    cfg = Config.from_dict(yaml.safe_load((path / "config.yaml").read_text()))
                    cfg.train.threads = threads
                    if epochs:
                        cfg.train.epochs = epochs
                    print(f"{tag}: resuming {path}")
                else:
                    print(f"{tag}: training -> {path}")
                report = Trainer(cfg, path, progress=progress, echo=lambda line: print("  " + line)).run(resume=st == "resume")
                masked = masked_metrics(path)
            trained += 1
            r, mk = report["test"], masked["test"]
            print(f"{tag}: finished in {time.perf_counter() - t0:.0f}s, best epoch {report['best_epoch']} | "
                  f"test R@10 {r['recall@10']:.4f} N@10 {r['ndcg@10']:.4f} | "
                  f"masked R@10 {mk['recall@10']:.4f} N@10 {mk['ndcg@10']:.4f}")
    finally:
        # Also after a failure or Ctrl-C: whatever finished is reported.
        write_report(out, models, datasets, command)


# -- collecting finished runs ---------------------------------------------------------------------
def collect(out: Path) -> list[dict]:
    """Every run under OUT/runs: its identity, and metrics/masked/log where they exist."""
    runs = []
    for path in sorted((out / "runs").glob("*/config.yaml")):
        path = path.parent
        cfg = yaml.safe_load((path / "config.yaml").read_text())
        run = {"path": path, "model": cfg["model"], "dataset": dataset_label(cfg["data"]["dataset"]),
               "seed": cfg["train"]["seed"], "config": cfg, "metrics": None, "masked": None, "log": []}
        for key, name in (("metrics", "metrics.json"), ("masked", "masked.json")):
            if (path / name).exists():
                run[key] = json.loads((path / name).read_text())
        if (path / "log.jsonl").exists():
            run["log"] = [json.loads(line) for line in (path / "log.jsonl").read_text().splitlines() if line.strip()]
        runs.append(run)
    return runs


# Settings that say how a run was executed, not what was trained.
_EXECUTION = {("train", "threads"), ("train", "epochs"), ("train", "seed"), ("train", "eval_batch_size"),
              ("data", "dataset")}


def settings_section(runs: list[dict]) -> str:
    """Every setting in which a finished run departs from its preset, with the runs it applies to,
    so a table built with overrides (e.g. a learning rate) says so."""
    seen: dict[tuple, list[str]] = {}
    for run in runs:
        if run["metrics"] is None:
            continue
        try:
            preset = Config(model=run["model"])
            preset.update(load_preset(run["model"]))
            preset = preset.to_dict()
        except GsauError:  # a custom preset that is no longer installed
            continue
        for section, values in run["config"].items():
            if not isinstance(values, dict):
                continue
            for k, v in values.items():
                default = preset.get(section, {}).get(k, v)
                if (section, k) not in _EXECUTION and v != default:
                    seen.setdefault((section, k, repr(v), repr(default)), []).append(f"{run['model']}/{run['dataset']}")
    finished = sum(r["metrics"] is not None for r in runs)
    if not seen:
        return "Every finished run uses its preset's settings unchanged.\n"
    lines = ["Settings that differ from the presets (`gsau config MODEL` shows a preset):\n"]
    for (section, k, v, default), where in sorted(seen.items()):
        scope = f"all {finished} finished runs" if len(where) == finished else ", ".join(where)
        lines.append(f"- `{section}.{k}` = {v} (preset: {default}) in {scope}")
    return "\n".join(lines) + "\n"


def csv_columns() -> list[str]:
    metric_cols = [f"{stage}_{m}@{k}" for stage in ("test", "valid") for m in METRICS for k in KS]
    return (["model", "dataset", "seed", "best_epoch", "epochs_run", "train_seconds", "seconds_per_epoch"]
            + metric_cols + [f"masked_{c}" for c in metric_cols])


def csv_rows(runs: list[dict]) -> list[dict]:
    rows = []
    for run in runs:
        m = run["metrics"]
        if m is None:
            continue
        row = {"model": run["model"], "dataset": run["dataset"], "seed": run["seed"]}
        row.update({k: m[k] for k in ("best_epoch", "epochs_run", "train_seconds", "seconds_per_epoch")})
        for stage in ("test", "valid"):
            row.update({f"{stage}_{k}": v for k, v in m[stage].items()})
            if run["masked"]:
                row.update({f"masked_{stage}_{k}": v for k, v in run["masked"][stage].items()})
        rows.append(row)
    return rows


# -- the report -----------------------------------------------------------------------------------
class Table:
    """Per (model, dataset) the values of one metric over seeds."""

    def __init__(self, runs, metric, protocol="metrics", stage="test"):
        self.values: dict[tuple[str, str], list[float]] = {}
        for run in runs:
            result = run[protocol]
            if result and metric in result[stage]:
                self.values.setdefault((run["model"], run["dataset"]), []).append(result[stage][metric])

    def mean(self, model, dataset):
        v = self.values.get((model, dataset))
        return float(np.mean(v)) if v else None

    def cell(self, model, dataset) -> str:
        v = self.values.get((model, dataset))
        if not v:
            return DASH
        if len(v) == 1:
            return f"{v[0]:.4f}"
        return f"{np.mean(v):.4f} ± {np.std(v, ddof=1):.4f} (n={len(v)})"

    def best(self, models, dataset):
        scored = [(self.mean(m, dataset), m) for m in models if self.mean(m, dataset) is not None]
        return max(scored)[1] if scored else None


def gain(ours, base) -> float:
    return 100.0 * (ours / base - 1.0)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def bold_best(t: Table, models, dataset, model) -> str:
    c = t.cell(model, dataset)
    best = t.best(models, dataset)
    return f"**{c}**" if c != DASH and t.mean(model, dataset) == t.mean(best, dataset) else c


def metric_table(runs, models, datasets, metric) -> str:
    t = Table(runs, metric)
    return markdown_table(["model"] + datasets, [[m] + [bold_best(t, models, d, m) for d in datasets] for m in models])


def improvement_section(runs, models, datasets) -> str:
    baselines = [m for m in models if m not in OURS]
    tables = {metric: Table(runs, metric) for metric in ("recall@10", "ndcg@10")}
    header = ["model"] + [f"{d} {SHORT[metric.split('@')[0]]}@10" for d in datasets for metric in tables]
    rows = []
    for ours in ("gsau", "gsau-rec"):
        row = [ours]
        for d in datasets:
            for t in tables.values():
                base = t.best(baselines, d)
                mine = t.mean(ours, d)
                row.append(DASH if mine is None or base is None else
                           f"{gain(mine, t.mean(base, d)):+.2f}% vs {base}")
        rows.append(row)
    return (f"Relative test improvement over the best baseline run on each dataset (baselines: every preset "
            f"except {', '.join(OURS)}; only those already run can count).\n\n" + markdown_table(header, rows))


def published_section(runs) -> str:
    rows = []
    for (model, dataset), figures in PUBLISHED.items():
        for metric, published in figures.items():
            ours = Table(runs, metric).mean(model, dataset)
            rows.append([model, dataset, f"{SHORT[metric.split('@')[0]]}@{metric.split('@')[1]}", f"{published:.4f}",
                         DASH if ours is None else f"{ours:.4f}",
                         DASH if ours is None else f"{gain(ours, published):+.1f}%"])
    return ("Published figures (authors' logs, test, paper protocol) beside ours:\n\n"
            + markdown_table(["model", "dataset", "metric", "published", "ours", "ours vs published"], rows))


def claims_section(runs, models, datasets) -> str:
    t = Table(runs, "recall@10")
    baselines = [m for m in models if m not in OURS]
    lines = ["The paper reports that GSAU improves test Recall@10 over the best baseline, SASRec (u), by "
             + ", ".join(f"{g:.2f}% on {d.capitalize()}" for d, g in CLAIMED_GAIN.items()) + ". Each line "
             "checks that against our sasrec-u run, then against the strongest baseline that ran here "
             "(if a different one), since a claim stated against a weak baseline run proves little.\n"]
    for d in datasets:
        claimed = CLAIMED_GAIN.get(d)
        paper = f"paper: +{claimed:.2f}%" if claimed is not None else "no published figure for this data"
        against = ["sasrec-u"]
        strongest = t.best(baselines, d)
        if strongest is not None and strongest != "sasrec-u":
            against.append(strongest)
        parts = []
        for base_name in against:
            base = t.mean(base_name, d)
            if base is None:
                parts.append(f"not run yet ({base_name} has no finished run; {paper})")
                continue
            note = paper if base_name == "sasrec-u" else "the strongest baseline run here"
            verdicts = []
            for ours in ("gsau-rec", "gsau"):
                mine = t.mean(ours, d)
                if mine is None:
                    verdicts.append(f"{ours} not run yet")
                else:
                    verdict = "beats it" if mine > base else "ties" if mine == base else "does not beat it"
                    verdicts.append(f"{ours} R@10 {mine:.4f} {verdict}, {gain(mine, base):+.2f}%")
            parts.append(f"against {base_name} R@10 {base:.4f} ({note}): " + ", ".join(verdicts))
        lines.append(f"- **{d}**: " + "; ".join(parts) + ".")
    lines.append("\n" + _claims_verdict(t, baselines, datasets))
    return "\n".join(lines) + "\n"


def _claims_verdict(t: "Table", baselines, datasets) -> str:
    """One plain sentence per model of ours: on how many datasets it beats the strongest baseline."""
    sentences = []
    for ours in ("gsau-rec", "gsau"):
        gains = {}
        for d in datasets:
            strongest, mine = t.best(baselines, d), t.mean(ours, d)
            if strongest is not None and mine is not None:
                gains[d] = (gain(mine, t.mean(strongest, d)), strongest)
        if not gains:
            continue
        wins = [d for d, (g, _) in gains.items() if g > 0]
        detail = ", ".join(f"{d} {g:+.2f}% vs {base}" for d, (g, base) in gains.items())
        sentences.append(f"{ours} beats the strongest baseline on test R@10 on {len(wins)} of {len(gains)} "
                         f"datasets ({detail})")
    if not sentences:
        return "In short: no model of ours and baseline have both run on one dataset yet."
    single = any(len(t.values[(m, d)]) == 1 for (m, d) in t.values if d in datasets)
    caveat = (" Cells with one seed: gaps of a few percent there are within what a rerun can move."
              if single else "")
    return "In short: " + "; ".join(sentences) + "." + caveat


def masked_section(runs, models, datasets) -> str:
    # The published columns always show, as the authors' figures in section 3 do, run or not.
    datasets = list(dict.fromkeys(datasets + [d for f in MASKED_PUBLISHED.values() for d in f]))
    recall, ndcg = Table(runs, "recall@10", "masked"), Table(runs, "ndcg@10", "masked")
    header = ["model"] + [f"{d} {s}@10" for d in datasets for s in ("R", "N")]
    rows = []
    for m in models:
        row = [m]
        for d in datasets:
            row += [bold_best(t, models, d, m) for t in (recall, ndcg)]
        rows.append(row)
    for name, figures in MASKED_PUBLISHED.items():
        row = [f"*{name} (published)*"]
        for d in datasets:
            row += [f"*{v:.4f}*" for v in figures[d]] if d in figures else [DASH, DASH]
        rows.append(row)
    lines = []
    for d in datasets:
        best = recall.best(models, d)
        if best is None:
            lines.append(f"- **{d}**: no masked scores yet.")
            continue
        r, n = recall.mean(best, d), ndcg.mean(best, d)
        ours = f"our best, {best}, reaches R@10 {r:.4f} / N@10 {n:.4f}"
        if not any(d in f for f in MASKED_PUBLISHED.values()):
            lines.append(f"- **{d}**: {ours}; there are no published figures for this data.")
            continue
        top_r = max((f[d][0], name) for name, f in MASKED_PUBLISHED.items() if d in f)
        top_n = max((f[d][1], name) for name, f in MASKED_PUBLISHED.items() if d in f)
        where = "above" if r > top_r[0] else "below"
        lines.append(f"- **{d}**: {ours}, {where} the strongest published R@10 ({top_r[1]} {top_r[0]:.4f}, "
                     f"{gain(r, top_r[0]):+.1f}%); N@10 {gain(n, top_n[0]):+.1f}% vs {top_n[1]} {top_n[0]:.4f}.")
    return ("Every model masks the user's earlier items when ranking; weights are the ones chosen on the paper "
            "protocol. Published rows: eSASRec benchmark (arXiv 2508.06450), seen items filtered, test.\n\n"
            + markdown_table(header, rows) + "\n" + "\n".join(lines) + "\n")


def plot_curves(runs, models, datasets, path: Path) -> str:
    """Validation NDCG@20 per epoch, one panel per dataset; returns the RESULTS.md line about it."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # no display on training machines
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return "Figure skipped: matplotlib is not installed (`pip install 'gsau[plot]'`).\n"
    logged = [r for r in runs if any("valid_ndcg@20" in h for h in r["log"])]
    if not logged:
        return "Figure skipped: no training logs yet.\n"
    shown = [d for d in datasets if any(r["dataset"] == d for r in logged)]
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 4), squeeze=False)
    order = [m for m in MAIN if m in models] + [m for m in models if m not in MAIN]
    colors = {m: f"C{i % 10}" for i, m in enumerate(order)}
    for ax, d in zip(axes[0], shown):
        for m in order:
            mine = [r for r in logged if r["dataset"] == d and r["model"] == m]
            for k, r in enumerate(mine):  # every seed, one colour per model
                points = [(h["epoch"], h["valid_ndcg@20"]) for h in r["log"] if "valid_ndcg@20" in h]
                ax.plot(*zip(*points), color=colors[m], lw=2 if m in MAIN else 1, label=m if k == 0 else None)
        ax.set(title=d, xlabel="epoch", ylabel="valid NDCG@20")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, dpi=120, format="png"))  # workers may write it at once
    plt.close(fig)
    return f"Validation NDCG@20 per epoch ([{path.name}]({path.name})):\n\n![validation NDCG@20 per epoch]({path.name})\n"


def write_report(out: Path, models, datasets, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    runs = collect(out)
    # Requested cells always appear (as "—" until run); anything else found on disk is added.
    models = model_order(list(dict.fromkeys(list(models) + [r["model"] for r in runs])))
    datasets = list(dict.fromkeys([dataset_label(d) for d in datasets] + [r["dataset"] for r in runs]))

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=csv_columns(), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(csv_rows(runs))
    checkpoint.write_text(out / "results.csv", buf.getvalue())

    finished = sum(r["metrics"] is not None for r in runs)
    seeds = sorted({r["seed"] for r in runs if r["metrics"]})
    parts = [
        "# GSAU reproduction (arXiv 2412.04276)\n",
        f"{finished} finished run{'s' * (finished != 1)} over {len(models)} models x {len(datasets)} datasets, seeds "
        f"{', '.join(map(str, seeds)) or DASH}. {DASH} marks a run not finished yet. "
        "Several seeds show mean ± std. Per-run numbers: [results.csv](results.csv).\n",
        "Protocol: leave-one-out by time, full ranking over all items. The paper protocol (sections 1-4): "
        "sequential models rank every item, graph models (lightgcn, directau, graphau) mask training items. "
        "Model selection is always on the paper protocol (validation NDCG@20); section 5 re-scores the same "
        "weights with history masking.\n",
        settings_section(runs),
        "## 1. Test results, paper protocol\n",
    ]
    for metric in ("recall@10", "ndcg@10", "recall@20", "ndcg@20"):
        name, k = metric.split("@")
        parts += [f"### {SHORT[name]}@{k}\n", metric_table(runs, models, datasets, metric)]
    parts += ["## 2. Improvement over the best baseline\n", improvement_section(runs, models, datasets),
              "## 3. Published figures\n", published_section(runs),
              "## 4. The paper's claims\n", claims_section(runs, models, datasets),
              "## 5. History-masked protocol\n", masked_section(runs, models, datasets),
              "## 6. Training curves\n", plot_curves(runs, models, datasets, out / "curves.png"),
              "## 7. Provenance\n",
              f"Written by `{command}` (gsau {__version__}) on "
              f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. Each run keeps its full settings, "
              "every epoch's losses, validation metrics and seconds, and its final metrics in "
              "runs/MODEL-DATASET-SEED/ (config.yaml, log.jsonl, metrics.json, masked.json).\n"]
    notes = out / "NOTES.md"
    if notes.exists():  # findings written by hand beside the generated tables
        parts += ["## 8. Notes\n", notes.read_text()]
    checkpoint.write_text(out / "RESULTS.md", "\n".join(parts))
    print(f"wrote {out / 'RESULTS.md'} and {out / 'results.csv'} ({finished} finished runs)")
