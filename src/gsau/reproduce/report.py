"""The report: results.csv and RESULTS.md, rebuilt from the run records on disk alone (no model is
loaded), with the paper's published figures (paper.yaml) and claims set beside our runs.

RESULTS.md depends only on the run records, the presets, paper.yaml and NOTES.md, never on an
optional package (matplotlib) being installed, so a committed report can be checked on any machine.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from gsau import __version__, checkpoint
from gsau.config import Config, resolve
from gsau.errors import GsauError
from gsau.metrics import DEFAULT_KS, METRICS
from gsau.reproduce import plot
from gsau.reproduce.grid import model_order, proposed
from gsau.runs import dataset_label

SHORT = {"recall": "R", "ndcg": "N", "mrr": "MRR"}
DASH = "—"


_PAPER = yaml.safe_load(resources.files("gsau.reproduce").joinpath("paper.yaml").read_text(encoding="utf-8"))
# The authors' logs, paper protocol: {(model, dataset): {metric: value}}.
PUBLISHED = {(model, dataset): figures for model, by_dataset in _PAPER["published"].items()
             for dataset, figures in by_dataset.items()}
# The paper's claim: GSAU's Recall@10 gain over its best baseline, SASRec (u), in percent.
CLAIMED_GAIN = _PAPER["claimed_gain"]
# eSASRec benchmark, seen items filtered: {name: {dataset: [test R@10, test N@10]}}.
MASKED_PUBLISHED = _PAPER["masked_published"]


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
            preset = resolve(run["model"]).to_dict()
        except GsauError:  # a custom preset that is no longer installed
            continue
        try:  # the record as this version reads it, so a value since renamed is no departure
            recorded = Config.from_dict(run["config"]).to_dict()
        except GsauError:  # an option since removed: compare the values as written
            recorded = run["config"]
        for section, values in run["config"].items():
            if not isinstance(values, dict):
                continue
            for k in values:  # the options the record holds; an option added since departs from nothing
                v = recorded.get(section, {}).get(k, values[k])
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
    metric_cols = [f"{stage}_{m}@{k}" for stage in ("test", "valid") for m in METRICS for k in DEFAULT_KS]
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
    proposals = proposed()
    baselines = [m for m in models if m not in proposals]
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
            f"except {', '.join(proposals)}; only those already run can count).\n\n" + markdown_table(header, rows))


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
    baselines = [m for m in models if m not in proposed()]
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


def curves_section(runs, models, datasets, path: Path) -> str:
    """The RESULTS.md lines about curves.png. They follow from the run records alone: where
    matplotlib is missing the figure is left as it was, and only the console says so."""
    if not plot.logged(runs):
        return "Figure skipped: no training logs yet.\n"
    if not plot.draw_curves(runs, models, datasets, path):
        logging.getLogger("gsau").warning("%s not redrawn: matplotlib is not installed (`pip install 'gsau[plot]'`)",
                                          path)
    name = path.name
    return f"Validation NDCG@20 per epoch ([{name}]({name})):\n\n![validation NDCG@20 per epoch]({name})\n"


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
              "## 6. Training curves\n", curves_section(runs, models, datasets, out / "curves.png"),
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
