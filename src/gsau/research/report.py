"""RESEARCH.md: the study's answers, from the spec and the run records on disk alone (config,
log.jsonl, metrics.json, masked.json, ranks.json.gz); no model is loaded and nothing depends on
which datasets or optional packages this machine has, so a committed report can be checked
anywhere (tests/test_research_committed.py). Figures are drawn beside the runs where matplotlib
is installed; the text never depends on them.

Each answer opens with one plain sentence computed from the numbers, then its tables. Where runs
are missing, the section names them and the command that trains them.

Spread and significance: a cell of several seeds shows mean ± sample std (n). A difference
between two cells on one dataset is the difference of their seed means, with (a) a 95% paired
bootstrap interval over test users of the per-user metric averaged over each cell's seeds, and
(b) the seed-level standard error sqrt(s_a^2/n_a + s_b^2/n_b) where both cells have 2+ seeds. It
is called significant when the interval excludes 0 and, where (b) exists, |difference| > 2 SE.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from gsau import __version__, checkpoint
from gsau.config import resolve
from gsau.reproduce.report import markdown_table
from gsau.research import buckets, plot
from gsau.data.interactions import BUNDLED
from gsau.research.study import Run, Study, differences, finished, plan, short_label
from gsau.runs import read_config

DASH = "—"
NO_RUNS = "The spec has no runs for this question.\n"
METRIC = "recall@10"
QUESTIONS = {
    1: "Shared table or joint training?",
    2: "Where does the graph help?",
    3: "Training dynamics",
    4: "gamma",
    5: "Why does L_SA collapse, and what makes the paper's GSAU train?",
    6: "Other graph encoders",
    7: "Another domain: Yelp",
    8: "GraphAU as the authors' code computes it",
}
# How the cells read in tables; a cell of another spec shows its own name.
LABELS = {"shared": "shared table (gsau-rec)", "separate": "separate tables", "no-graph": "no graph",
          "sasrec": "sasrec", "sage": "GraphSAGE", "gat": "GAT"}
# Question 3's runs: the first seed of these cells (at the preset's own gamma for the sweep).
DYNAMICS = (("shared", None), ("separate", None), ("gsau", resolve("gsau").net.gamma))
RISING = 0.003  # a screen's gain in valid R@10 over its last epoch above which it is read as cut short
CONVERGES = 0.01  # a rise of the probe's cross-encoder similarity, epoch 1 -> best, read as converging
PROBE_FIELDS = (("probe_user_cos", "user cos"), ("probe_item_cka", "item CKA"),
                ("probe_seq_unif_user", "seq unif"), ("probe_graph_unif_user", "graph unif"))


# -- reading the records ----------------------------------------------------------------------------
class Records:
    """The records of a study's runs, each file read once."""

    def __init__(self):
        self._cache: dict = {}

    def _read(self, path: Path, kind: str):
        key = (path, kind)
        if key not in self._cache:
            if kind == "ranks":
                value = buckets.read_record(path)
            elif kind == "log":
                file = path / "log.jsonl"
                value = [json.loads(line) for line in file.read_text().splitlines() if line.strip()] if file.exists() else []
            else:
                file = path / f"{kind}.json"
                value = json.loads(file.read_text()) if file.exists() else None
            self._cache[key] = value
        return self._cache[key]

    def metrics(self, run: Run):
        """The run's metrics.json, or None unless it is a result: trained to its end under the
        planned config with every record written (a run cut short, of other options, or with its
        ranks still being written is no result)."""
        key = (run.path, "finished")
        if key not in self._cache:
            self._cache[key] = finished(run)
        return self._read(run.path, "metrics") if self._cache[key] else None

    def masked(self, run: Run):
        return self._read(run.path, "masked")

    def log(self, run: Run) -> list[dict]:
        return self._read(run.path, "log")

    def ranks(self, run: Run):
        return self._read(run.path, "ranks")

    def value(self, run: Run, metric: str = METRIC, protocol: str = "metrics"):
        result = self.metrics(run) if protocol == "metrics" else self.masked(run)
        return None if result is None else result["test"].get(metric)

    def best_record(self, run: Run) -> dict | None:
        """The log.jsonl record of the run's best epoch."""
        metrics = self.metrics(run)
        if metrics is None:
            return None
        return next((h for h in self.log(run) if h["epoch"] == metrics["best_epoch"]), None)


# -- numbers into words and cells -------------------------------------------------------------------
def spread(values: list[float]) -> str:
    if not values:
        return DASH
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f} (n={len(values)})"


@dataclass
class Difference:
    value: float  # mean of a's seeds - mean of b's seeds
    low: float | None  # paired bootstrap interval over users (None without both cells' ranks)
    high: float | None
    se: float | None  # seed-level standard error (None with one seed a side)

    @property
    def significant(self) -> bool:
        if self.low is None or (self.low <= 0 <= self.high):
            return False
        return self.se is None or abs(self.value) > 2 * self.se

    @property
    def verdict(self) -> str:
        if not self.significant:
            return "no significant difference"
        return "significant gain" if self.value > 0 else "significant loss"

    def cell(self) -> str:
        interval = f" [{self.low:+.4f}, {self.high:+.4f}]" if self.low is not None else ""
        se = f", seed SE {self.se:.4f}" if self.se is not None else ""
        return f"{self.value:+.4f}{interval}{se}" + (" *" if self.significant else "")


def seed_error(va: list[float], vb: list[float]) -> float | None:
    """The standard error of mean(va) - mean(vb) from the seeds' spread: sqrt(s_a^2/n_a + s_b^2/n_b),
    a one-seed side taken to vary across seeds as the other side does; None with one seed a side."""
    var_a = np.var(va, ddof=1) if len(va) >= 2 else None
    var_b = np.var(vb, ddof=1) if len(vb) >= 2 else None
    if var_a is None and var_b is None:
        return None
    var_a = var_b if var_a is None else var_a
    var_b = var_a if var_b is None else var_b
    return float(math.sqrt(var_a / len(va) + var_b / len(vb)))


def difference(records: Records, a: list[Run], b: list[Run], metric: str = METRIC) -> Difference | None:
    """a's finished runs against b's (one dataset): None unless both have one."""
    va, vb = ([records.value(r, metric) for r in side if records.metrics(r)] for side in (a, b))
    if not va or not vb:
        return None
    se = seed_error(va, vb)
    ranks_a = [records.ranks(r) for r in a if records.metrics(r)]
    ranks_b = [records.ranks(r) for r in b if records.metrics(r)]
    low = high = None
    if all(ranks_a) and all(ranks_b):
        overall = buckets.bucket_table(ranks_a, metric, against=ranks_b, overall_only=True)[0]
        low, high = overall["low"], overall["high"]
    return Difference(float(np.mean(va) - np.mean(vb)), low, high, se)


def verdicts(name: str, diffs: dict[str, Difference | None]) -> str | None:
    """"name: significant gain on beauty (+0.0012), no significant difference on toys (+0.0003)"."""
    parts = [f"{d.verdict} on {dataset} ({d.value:+.4f})" for dataset, d in diffs.items() if d is not None]
    return f"{name}: " + ", ".join(parts) if parts else None


# -- the study's runs, by cell ----------------------------------------------------------------------
class View:
    """The planned runs of a study, looked up by cell, dataset and sweep value."""

    def __init__(self, study: Study, runs: list[Run], records: Records, command: str):
        self.study, self.runs, self.records, self.command = study, runs, records, command
        self.cells = {c.name: c for c in study.cells}
        self.datasets = list(dict.fromkeys(r.label for r in runs))

    def of(self, cell: str, dataset: str | None = None, value=None, first_seed: bool = False) -> list[Run]:
        found = [r for r in self.runs if r.cell.name == cell and (dataset is None or r.label == dataset)
                 and (value is None or r.value == value)]
        if first_seed and found:
            found = [r for r in found if r.seed == found[0].seed]
        return found

    def finished(self, runs: list[Run]) -> list[Run]:
        return [r for r in runs if self.records.metrics(r) is not None]

    def values(self, cell: str, dataset: str, metric: str = METRIC, protocol: str = "metrics", value=None) -> list[float]:
        return [v for r in self.of(cell, dataset, value) if (v := self.records.value(r, metric, protocol)) is not None]

    def cell_datasets(self, cell: str) -> list[str]:
        return list(dict.fromkeys(r.label for r in self.of(cell)))

    def all_of(self, cells: list[str]) -> list[Run]:
        return [r for c in cells for r in self.of(c)]

    def pending(self, runs: list[Run]) -> str:
        """Which of these runs have no record yet, and how to train them."""
        runs = [r for r in runs if not r.same_as]
        missing = [r for r in runs if self.records.metrics(r) is None]
        if not runs:
            return ""
        if not missing:
            return f"Every run of this answer has finished ({len(runs)}).\n"
        absent = sorted({d for r in missing for d in r.cell.datasets
                         if short_label(d) == r.label and d.lower() not in BUNDLED})
        questions = sorted({r.cell.question for r in missing})
        where = (f" The data of {', '.join(absent)} (relative to the spec) is not bundled: those runs need it on "
                 "the machine and are skipped where it is absent." if absent else "")
        return (f"Pending: {len(missing)} of {len(runs)} runs ({', '.join(r.name for r in missing)}). Train them "
                f"with `{self.command} --questions {','.join(map(str, questions))}` (resumes where it stopped; "
                f"`--workers N` trains N at once).{where}\n")


def metric_table(view: View, cells: list[str], datasets: list[str], metric: str = METRIC,
                 protocol: str = "metrics") -> str:
    """One row a cell, or a cell with a sweep one row a swept value: its runs differ in that value,
    so they are not seeds of one spread."""
    rows = []
    for c in cells:
        cell = next((x for x in view.study.cells if x.name == c), None)
        if cell is not None and cell.sweep:
            option, swept = cell.sweep
            rows += [[f"{LABELS.get(c, c)} ({option}={v})"] + [spread(view.values(c, d, metric, protocol, v))
                                                              for d in datasets] for v in swept]
        else:
            rows.append([LABELS.get(c, c)] + [spread(view.values(c, d, metric, protocol)) for d in datasets])
    return markdown_table(["variant"] + datasets, rows)


def seeds_line(view: View, cells: list[str]) -> str:
    parts = []
    for c in cells:
        seeds = sorted({r.seed for r in view.finished(view.of(c))})
        if seeds:
            parts.append(f"{LABELS.get(c, c)} {', '.join(map(str, seeds))}")
    return f"Seeds of the finished runs: {'; '.join(parts)}.\n" if parts else ""


def comparison_table(view: View, pairs: list[tuple[str, str]], datasets: list[str],
                     labels: dict | None = None) -> tuple[str, list[str]]:
    """A table of differences (rows: a - b) and one verdict clause per pair."""
    labels = {**LABELS, **(labels or {})}
    rows, clauses = [], []
    for a, b in pairs:
        diffs = {d: difference(view.records, view.of(a, d), view.of(b, d)) for d in datasets}
        rows.append([f"{labels.get(a, a)} − {labels.get(b, b)}"] + [DASH if x is None else x.cell() for x in diffs.values()])
        clause = verdicts(f"{labels.get(a, a)} vs {labels.get(b, b)}", diffs)
        if clause:
            clauses.append(clause)
    return markdown_table(["test R@10 difference"] + datasets, rows), clauses


def opening(clauses: list[str], missing: str) -> str:
    if not clauses:
        return f"Not measured yet: {missing}.\n"
    return "Test R@10, " + "; ".join(clauses) + ".\n"


# -- the questions ------------------------------------------------------------------------------------
def q1(view: View) -> str:
    cells = [c for c in ("shared", "separate", "no-graph") if c in view.cells]
    if "shared" not in cells or len(cells) < 2:
        return NO_RUNS
    datasets = [d for d in view.datasets if any(view.of(c, d) for c in cells)]
    # sasrec (question 2's runs) as a reference row: no graph - sasrec is what gsau-rec's sequence
    # terms do without a graph, so a large shared - no graph gap can be read against plain sasrec.
    shown = cells + (["sasrec"] if "no-graph" in cells and "sasrec" in view.cells else [])
    pairs = [(a, b) for a, b in (("shared", "no-graph"), ("shared", "separate"), ("separate", "no-graph"),
                                 ("no-graph", "sasrec")) if a in shown and b in shown]
    table, clauses = comparison_table(view, pairs, datasets)
    reference = ("\nsasrec is the reference (question 2's runs: cross-entropy on inner products, no L_SU); no graph "
                 "is gsau-rec's sequence terms alone (cross-entropy on the normalised representation, plus gamma "
                 "L_SU), so no graph − sasrec is what those terms do without a graph.\n" if "sasrec" in shown else "")
    null = ("\nWith separate tables no term of L reads both encoders (L_GA and L_GU read the graph's tables, L_CE "
            "and L_SU the sequence encoder and item_table; tests/test_research_separate_tables.py checks that no "
            "gradient crosses), so the separate-table ranker trains as the no-graph one does, up to its random "
            "draws: separate tables − no graph measures noise, and the shared table is the only channel through "
            "which the graph can reach the ranker.\n" if {"separate", "no-graph"} <= set(cells) else "")
    return (opening(clauses, "no two of its cells have finished runs on the same dataset") + "\nTest R@10 (paper protocol), mean ± std over seeds:\n\n"
            + metric_table(view, shown, datasets) + "\nDifferences of the seed means, [95% bootstrap interval "
            "over test users], seed SE; * significant:\n\n" + table + reference + null + "\n" + seeds_line(view, shown)
            + view.pending(view.all_of(cells)))


def bucket_rows(view: View, a: str, b: str, dataset: str) -> tuple[str, list[str]] | None:
    """The bucket table of a's runs against b's on one dataset, and the buckets where the paired
    difference is significant; None unless both have finished runs with per-user ranks."""
    ra = [view.records.ranks(r) for r in view.finished(view.of(a, dataset))]
    rb = [view.records.ranks(r) for r in view.finished(view.of(b, dataset))]
    if not ra or not rb or not all(ra) or not all(rb):
        return None
    rows = buckets.bucket_table(ra, METRIC, against=rb)
    where = [f"{r['bucket']} ({r['difference']:+.4f})" for r in rows if r["kind"] != "all" and buckets.excludes_zero(r)]
    return buckets.markdown(rows, "R@10", (LABELS.get(a, a), LABELS.get(b, b))), where


def q2(view: View) -> str:
    if "shared" not in view.cells or not {"no-graph", "sasrec"} & set(view.cells):
        return NO_RUNS
    parts, clauses = [], []
    for other in [c for c in ("no-graph", "sasrec") if c in view.cells]:
        for d in view.datasets:
            found = bucket_rows(view, "shared", other, d)
            if found is None:
                continue
            table, where = found
            clauses.append(f"vs {LABELS.get(other, other)} on {d}: " + (", ".join(where) or "no bucket"))
            parts.append(f"**{d}: {LABELS['shared']} vs {LABELS.get(other, other)}** (per-user R@10 averaged over "
                         f"seeds; history length = the user's interactions; popularity = the test item's training "
                         f"count, head/torso/tail at 1/3 and 2/3 of training interactions):\n\n{table}")
    head = ("Buckets where the shared table's test R@10 differs significantly (95% bootstrap interval over the "
            f"bucket's users excludes 0; {len(buckets.GROUPS) - 1} buckets a comparison, not adjusted for testing "
            "that many): " + "; ".join(clauses) + ".\n") if clauses else \
        "Not measured yet: no dataset has finished runs of both models with their per-user ranks.\n"
    cells = [c for c in ("shared", "no-graph", "sasrec") if c in view.cells]
    return head + "\n" + "\n".join(parts) + ("\n" if parts else "") + view.pending(view.all_of(cells))


def dynamics_runs(view: View) -> list[Run]:
    """Question 3's planned runs: the first seed of each DYNAMICS cell, on every dataset."""
    runs = []
    for cell, value in DYNAMICS:
        if cell in view.cells:
            sweep = view.cells[cell].sweep
            runs += [r for d in view.cell_datasets(cell)
                     for r in view.of(cell, d, value=value if sweep else None, first_seed=True)]
    return runs


def _drawn(drawn: bool, figure: Path) -> None:
    if not drawn:
        logging.getLogger("gsau").warning("%s not redrawn: matplotlib is not installed (pip install 'gsau[plot]')",
                                          figure)


def q3(view: View, figure: Path) -> str:
    planned = dynamics_runs(view)
    if not planned:
        return NO_RUNS
    # Finished runs only: a run still training would make the report depend on when it was written.
    runs = [r for r in view.finished(planned) if any(k.startswith("probe_") for h in view.records.log(r) for k in h)]
    if not runs:
        return ("Not measured yet: no run with the probe (train.probe) has finished; the runs of questions 1 and 4 "
                "log it.\n\n" + view.pending(planned))
    rows, clauses, moves = [], [], {"user cos": [], "item CKA": []}
    for r in runs:
        log, best = view.records.log(r), view.records.best_record(r)
        first = log[0]
        cells = []
        for key, _ in PROBE_FIELDS:
            a, b = first.get(key), best.get(key) if best else None  # no best epoch's record: no value
            cells.append(DASH if a is None or b is None else f"{a:.3f} → {b:.3f}")
        rows.append([r.name, str(len(log))] + cells)
        parts = []
        for key, label in (("probe_user_cos", "user cos"), ("probe_item_cka", "item CKA")):
            a, b = first.get(key), best.get(key) if best else None
            if a is not None and b is not None:
                moves[label].append(b - a)
                parts.append(f"{label} {a:.2f} → {b:.2f}")
        if parts:
            clauses.append(f"{r.name} " + ", ".join(parts))
    if clauses:
        def count(label: str, what: str) -> str:
            d = moves[label]
            up = sum(x > CONVERGES for x in d)
            return f"{what} converge in {up} of {len(d)} finished runs" if d else ""
        said = [c for c in (count("user cos", "the user views"), count("item CKA", "the item views")) if c]
        said = " and ".join(said)
        opening_line = (f"Do the two encoders' views converge? {said[:1].upper() + said[1:]} (epoch 1 → best "
                        f"epoch, a rise of more than {CONVERGES:g} counted; user cos: mean cosine between a user's "
                        "graph embedding and sequence representation; item CKA: linear CKA of the two encoders' item "
                        "views): " + "; ".join(clauses) + ".\n")
    else:
        opening_line = "Only single-encoder runs have the probe so far: no cross-encoder similarity yet.\n"
    _drawn(plot.draw_dynamics({r.name: view.records.log(r) for r in runs}, figure), figure)
    picture = f"\n![probe fields per epoch]({figure.name})\n"  # the text never depends on matplotlib
    return (opening_line + "\nProbe fields (256 fixed users and items; research/dynamics.py), epoch 1 → best epoch:\n\n"
            + markdown_table(["run", "epochs"] + [label for _, label in PROBE_FIELDS], rows) + picture
            + "\n" + view.pending(planned))


def q4(view: View, figure: Path) -> str:
    cells = [c for c in ("gsau-rec", "gsau") if c in view.cells and view.cells[c].sweep]
    if not cells:
        return NO_RUNS
    values = sorted({v for c in cells for v in view.cells[c].sweep[1]})
    dataset = view.cell_datasets(cells[0])[0]
    rows, peaks, series = [], [], {}
    for v in values:
        row = [f"{v:g}"]
        for c in cells:
            runs = view.finished(view.of(c, dataset, value=v))
            r10 = [view.records.value(r) for r in runs]
            unif = [b["probe_seq_unif_user"] for r in runs if (b := view.records.best_record(r))
                    and b.get("probe_seq_unif_user") is not None]
            row += [spread(r10), spread(unif)]
            if r10:
                series.setdefault(c, []).append((v, float(np.mean(r10)), float(np.mean(unif)) if unif else None))
        rows.append(row)
    for c, points in series.items():
        best = max(points, key=lambda p: p[1])
        swept = len(view.cells[c].sweep[1])
        peaks.append(f"{c} is highest at gamma = {best[0]:g} ({best[1]:.4f}, {len(points)} of {swept} values run)"
                     if len(points) > 1 else
                     f"{c} has run at gamma = {best[0]:g} alone so far ({best[1]:.4f}, 1 of {swept} values)")
    header = ["gamma"] + [f"{c} {what}" for c in cells for what in ("R@10", "seq unif")]
    picture = ""
    if any(len(points) > 1 for points in series.values()):  # a curve needs two values
        _drawn(plot.draw_gamma(series, figure), figure)
        _drawn(plot.draw_gamma(series, figure), figure)
        picture = f"\n![test R@10 and uniformity against gamma]({figure.name})\n"
    head = (f"On {dataset}, test R@10 of " + "; ".join(peaks) + ".\n") if peaks else \
        "Not measured yet: no run of the gamma sweep has finished.\n"
    return (head + f"\nTest R@10 and the uniformity of the sequence representations (probe, best epoch; about -3.9 "
            f"spread at random over the sphere, 0 collapsed) on {dataset}:\n\n" + markdown_table(header, rows) + picture + "\n"
            + view.pending(view.all_of(cells)))


def _at_epoch(log: list[dict], epoch: int) -> dict | None:
    return next((h for h in log if h["epoch"] == epoch), None)


def _su_path(log: list[dict]) -> str:
    """L_SU at epoch 1 -> its highest (least uniform) -> the last epoch."""
    values = [(h["epoch"], h["L_SU"]) for h in log if h.get("L_SU") is not None]
    if not values:
        return DASH
    peak = max(values, key=lambda v: v[1])
    return f"{values[0][1]:.2f} → {peak[1]:.2f} (epoch {peak[0]}) → {values[-1][1]:.2f}"


def _probe_path(log: list[dict], key: str = "probe_seq_unif_user") -> str:
    values = [h[key] for h in log if h.get(key) is not None]
    return f"{values[0]:.2f} → {values[-1]:.2f}" if values else DASH


def _goes(before: float, after: float) -> str:
    return "rises" if after > before else "falls" if after < before else "stays"


def _mechanism(view: View, screens: list[Run], at: int, reference_log: list[dict] | None) -> str:
    """The collapse and its cure in measured terms: the screens keyed by what they change."""
    records = view.records

    def key(r: Run):
        n = r.config.net
        return (n.gamma, n.su_negatives, n.cosine_scores, n.su_t, n.su_mask_hits, n.su_unique_items)
    by, rising = {}, {}
    for r in screens:
        h, log = _at_epoch(records.log(r), at), records.log(r)
        if h is not None:
            by[key(r)] = (h["valid_recall@10"], log[0].get("probe_seq_unif_user"), log[0].get("probe_seq_unif_item"))
            before = _at_epoch(log, at - 1)
            if before is not None:
                rising[key(r)] = h["valid_recall@10"] - before["valid_recall@10"]  # its last epoch's gain
    out = []
    low, high = by.get((0.1, "shuffled", True, 2.0, False, False)), by.get((0.5, "shuffled", True, 2.0, False, False))
    if low and low[1] is not None:
        items = ""
        if low[2] is not None:
            items = (f", while the items stay more spread ({low[2]:.2f})" if low[2] < low[1]
                     else f", and the items are no more spread ({low[2]:.2f})")
        text = (f"The collapse: at the published gamma 0.1 the probe's sequence uniformity is {low[1]:.2f} after one "
                f"epoch (about -3.9 for directions spread at random over the 64-dimensional sphere, 0 one point){items}. L_SA only pulls each "
                "representation towards its own target; crowding every history's representation into one region "
                "of the sphere lowers it on average without telling histories apart, and gamma L_SU, with one "
                "shuffled item a sample, is too weak to stop that")
        if reference_log and len(reference_log) > 1 and reference_log[0].get("L_SU") is not None:
            su, sa = (reference_log[0]["L_SU"], reference_log[1]["L_SU"]), (reference_log[0]["L_SA"], reference_log[1]["L_SA"])
            text += (f" (the published run's L_SU {_goes(*su)} from {su[0]:.2f} to {su[1]:.2f} in epoch 2, L_SA "
                     f"{_goes(*sa)} from {sa[0]:.2f} to {sa[1]:.2f})")
        out.append(text + ".")
    if low and high and high[1] is not None:
        spread_ = "keeps the representations more spread" if high[1] < low[1] else "leaves the representations no more spread"
        lifts = "lifts" if high[0] > low[0] else "lowers"
        out.append(f"The weight: gamma 0.5 {spread_} ({high[1]:.2f} after one epoch) and {lifts} "
                   f"valid R@10 at epoch {at} from {low[0]:.4f} to {high[0]:.4f}.")
    b_low, b_high = by.get((0.1, "batch", True, 2.0, False, False)), by.get((0.5, "batch", True, 2.0, False, False))
    if b_low and b_high and low and high:
        helps = {(False, True): "helps only with that weight", (True, True): "helps at both weights",
                 (True, False): "helps only at gamma 0.1", (False, False): "does not help"}[
            (b_low[0] > low[0], b_high[0] > high[0])]
        out.append(f"Every other target of the batch as a negative (su_negatives=batch) {helps}: "
                   f"{b_low[0]:.4f} against {low[0]:.4f} at gamma 0.1, {b_high[0]:.4f} against {high[0]:.4f} at "
                   "gamma 0.5.")
    dot = by.get((0.5, "shuffled", False, 2.0, False, False))
    if dot and high:
        out.append(f"Ranking by cosine rather than the inner product (training unchanged): {high[0]:.4f} against "
                   f"{dot[0]:.4f} at gamma 0.5.")
    heavier = [(g, by[(g, "batch", True, 2.0, False, False)][0]) for g in sorted({k[0] for k in by}) if g > 0.5
               and (g, "batch", True, 2.0, False, False) in by]
    if heavier and b_high:
        out.append("Heavier uniformity weights with batch negatives: " + ", ".join(
            f"{v:.4f} at gamma {g:g}" for g, v in heavier) + f", against {b_high[0]:.4f} at gamma 0.5.")
    rows_ = by.get((0.5, "rows", True, 2.0, False, False))
    if rows_ and b_high:
        out.append(f"The batch term's log-mean-exp per sample (su_negatives=rows) instead of over the whole batch: "
                   f"{rows_[0]:.4f} against {b_high[0]:.4f} at gamma 0.5.")
    def balanced(negatives: str) -> list[tuple[float, float, float | None]]:
        return [(k[3], by[k][0], rising.get(k)) for k in sorted(by, key=lambda k: k[3])
                if k[1] == negatives and k[2] and not (k[4] or k[5]) and abs(k[0] * k[3] - 1) < 1e-9]

    def listed(points) -> str:
        # A screen still gaining fast at its last epoch is cut short, not beaten: say so.
        return ", ".join(f"{v:.4f} at t {t:g} (gamma {1 / t:g}" + (
            f"; still rising by {gain:.4f} an epoch" if gain is not None and gain > RISING else "") + ")"
            for t, v, gain in points)
    rows_t, items_t = balanced("rows"), balanced("items")
    if len(rows_t) > 1:
        out.append("With su_negatives=rows and gamma t = 1, L_SA + gamma L_SU's representation-item term is, per "
                   "sample, a decoupled InfoNCE with the batch's other targets as negatives at temperature 1/(2t) "
                   "(-2 cos(s, p) + gamma log mean_j exp(2t cos(s, p_j)), up to constants; the published gamma 0.1 "
                   f"at t 2 weighs the negatives a fifth of that): {listed(rows_t)}: valid R@10 at epoch {at}.")
    if items_t:
        out.append("Every item of the catalogue but the target as the negatives (su_negatives=items: at gamma t = 1 "
                   "the softmax over all items on cosines, at temperature 1/(2t), that sasrec's cross-entropy takes "
                   f"on inner products): {listed(items_t)}"
                   + (f", against {listed(rows_t)} with the batch's targets" if rows_t else "") + ".")
    sharp = by.get((0.5, "batch", True, 5.0, False, False))
    if sharp and b_high:
        out.append(f"A sharper kernel (su_t 5 instead of 2, with batch negatives at gamma 0.5): {sharp[0]:.4f} against "
                   f"{b_high[0]:.4f}.")
    hits, unmasked = by.get((1.0, "batch", True, 2.0, True, False)), by.get((1.0, "batch", True, 2.0, False, False))
    if hits and unmasked:
        out.append(f"Leaving accidental hits out of the batch term (su_mask_hits: a sample's own item, as another "
                   f"sample's target, is no negative for it), at gamma 1: {hits[0]:.4f} against {unmasked[0]:.4f}.")
    unique = by.get((1.0, "batch", True, 2.0, False, True))
    if unique and unmasked:
        out.append(f"Each distinct item of the batch weighing 1 among the negatives, its copies sharing it "
                   f"(su_unique_items, so popular targets are not the negatives most pushed from), at gamma 1: "
                   f"{unique[0]:.4f} against {unmasked[0]:.4f}.")
    return (" ".join(out) + "\n") if out else ""


def _changes(cell) -> str:
    return cell.model + "".join(f", {o}" for o in cell.overrides)


def _model_of(run_dir: Path) -> str | None:
    file = run_dir / "config.yaml"
    return (yaml.safe_load(file.read_text()) or {}).get("model") if file.exists() else None


def _against_sasrec(view: View, runs: list[Run], dataset: str, reference: Path | None):
    """(sasrec's test R@10 values, what they are, the difference of runs against them, whether they
    are the study's own runs): the
    study's own sasrec cell (question 2: several seeds with per-user ranks, so an interval) where
    it has finished runs on the dataset, else the cell's reference run (one seed, no ranks)."""
    records = view.records
    sasrec = view.finished(view.of("sasrec", dataset)) if "sasrec" in view.cells else []
    if sasrec:
        return [records.value(r) for r in sasrec], "sasrec", difference(records, runs, sasrec), True
    if reference is None or not (reference / "metrics.json").exists() or _model_of(reference) != "sasrec":
        return None
    target = json.loads((reference / "metrics.json").read_text())["test"][METRIC]
    va = [records.value(r) for r in runs]
    return [target], reference.name, Difference(float(np.mean(va)) - target, None, None, seed_error(va, [target])), False


def _full_runs(view: View, cells: list, published: float | None) -> tuple[str, str]:
    """Question 5's changes trained to early stopping, each against sasrec on its dataset: the
    opening sentence (the best change by its difference from sasrec) and one table row a cell and
    dataset."""
    rows, found = [], []
    for c in cells:
        for d in view.cell_datasets(c.name):
            done = [r for r in view.finished(view.of(c.name, d)) if r.config.train.epochs >= 300]
            if not done:
                continue
            reference = view.study.spec.parent / c.reference.format(dataset=d) if c.reference else None
            against = _against_sasrec(view, done, d, reference)
            values = [view.records.value(r) for r in done]
            ndcg = [view.records.value(r, "ndcg@10") for r in done]
            rows.append([f"{c.name} ({_changes(c)})", d, spread(values), spread(ndcg),
                         DASH if against is None else spread(against[0]), DASH if against is None else against[2].cell()])
            if against is not None:
                found.append((float(np.mean(values)), c, d, values, against))
    table = ("\nEach change trained to early stopping against sasrec (test R@10 difference of the seed means, [95% "
             "bootstrap interval over test users] where both sides have per-user ranks, seed SE; * significant):\n\n"
             + markdown_table(["change", "dataset", "test R@10", "test N@10", "sasrec R@10", "difference"], rows)) if rows else ""
    if not found:
        return "No change has been trained to early stopping against sasrec yet; the screens below read it.\n", table
    # The best by its difference from sasrec on its own dataset, so datasets of other levels do not decide.
    mean, c, d, values, (target, source, diff, own) = max(found, key=lambda f: f[4][2].value)
    if diff.low is None:  # RESULTS.md's one sasrec run, or runs without per-user ranks
        caveat = " (no per-user ranks: no interval)" if own else \
            " (against one sasrec run without per-user ranks: no interval)"
    elif diff.significant:
        caveat = f" (a significant {'gain' if diff.value > 0 else 'loss'}: {diff.cell()})"
    else:
        caveat = f", not a significant difference ({diff.cell()})"
    verdict = ("at least sasrec's, the issue's bar" if mean >= float(np.mean(target))
               else f"below it by {float(np.mean(target)) - mean:.4f}") + caveat
    chosen = f" (the best of {len(found)} changes: not adjusted for that choice)" if len(found) > 1 else ""
    head = (f"The best change trained to early stopping, {c.name} ({_changes(c)}), reaches test R@10 {spread(values)} "
            f"on {d} against {source}'s {spread(target)}: {verdict}{chosen}"
            + (f"; the published gsau: {published:.4f}" if published is not None else "") + ".\n")
    return head, table


def q5(view: View, figure: Path | None = None) -> str:
    """The published gsau against one change at a time: the changes trained to early stopping
    against sasrec (the opening sentence and their table), the mechanism read from the 12-epoch
    screens (valid R@10 at the screens' last epoch, set against the reference runs' logs at that
    epoch), and every run's row."""
    cells = [c for c in view.study.cells if c.question == 5]
    if not cells:
        return NO_RUNS
    records = view.records
    runs = [r for c in cells for r in view.of(c.name)]
    finished = view.finished(runs)
    screen_epochs = sorted({len(records.log(r)) for r in finished if r.config.train.epochs < 300})
    at = screen_epochs[0] if screen_epochs else 12
    references = {}
    for c in cells:
        for d in view.cell_datasets(c.name):
            if c.reference:
                path = view.study.spec.parent / c.reference.format(dataset=d)
                if (path / "metrics.json").exists():
                    references[path.name] = path
    rows, reference_log, published = [], None, None
    for name, path in references.items():
        log = [json.loads(x) for x in (path / "log.jsonl").read_text().splitlines() if x.strip()]
        test = json.loads((path / "metrics.json").read_text())["test"]
        if reference_log is None and log and "L_SA" in log[0]:
            reference_log, published = log, test[METRIC]  # the published gsau's
        h = _at_epoch(log, at)
        rows.append([f"{name} (RESULTS.md, inner product)", str(len(log)),
                     DASH if h is None else f"{h['valid_recall@10']:.4f}", f"{test[METRIC]:.4f}",
                     f"{test['ndcg@10']:.4f}", _su_path(log), _probe_path(log)])
    for r in runs:
        metrics = records.metrics(r)
        log = records.log(r) if metrics is not None else []  # a run still training shows nothing yet
        h = _at_epoch(log, at)
        scoring = "cosine" if r.config.net.cosine_scores else "inner product"
        rows.append([f"{r.name} ({scoring})", str(len(log)) if log else DASH,
                     DASH if h is None else f"{h['valid_recall@10']:.4f}",
                     DASH if metrics is None else f"{metrics['test'][METRIC]:.4f}",
                     DASH if metrics is None else f"{metrics['test']['ndcg@10']:.4f}", _su_path(log), _probe_path(log)])
    head, full_table = _full_runs(view, cells, published)
    curves = {name: [json.loads(x) for x in (path / "log.jsonl").read_text().splitlines() if x.strip()]
              for name, path in references.items()}
    curves.update({r.name: records.log(r) for r in finished if r.config.train.epochs >= 300})
    if figure is not None and len(curves) > len(references):
        _drawn(plot.draw_validation(curves, figure), figure)
        full_table += f"\n![validation R@10 per epoch of the full runs and the references]({figure.name})\n"
    mechanism = _mechanism(view, [r for r in finished if r.config.train.epochs < 300], at, reference_log)
    return (head + full_table + ("\n" + mechanism if mechanism else "")
            + "\nEvery run: one change at a time (one seed each unless the cell says) against the published gsau "
            "(its L_SA: alignment of the L2-normalised sequence representation with its target, gamma L_SU: "
            f"uniformity of the representations, of the targets, and of representation-item pairs). Screens stop at "
            f"epoch {at}; the test metrics of a screen are those of its best epoch so far. L_SU is the epoch mean "
            "(more negative: more spread over the sphere; 0: every vector in one place). Seq unif is the uniformity "
            "of the sequence representations of 256 fixed users (the probe, research/dynamics.py; about -3.9 spread "
            "at random over the sphere, 0 collapsed), epoch 1 → last.\n\n"
            + markdown_table(["run", "epochs", f"valid R@10 at epoch {at}", "test R@10", "test N@10",
                              "L_SU epoch 1 → highest → last", "seq unif"], rows) + "\n" + view.pending(runs))


def q6(view: View) -> str:
    cells = [c for c in ("shared", "sage", "gat") if c in view.cells]
    if "shared" not in cells or len(cells) < 2:
        return NO_RUNS
    datasets = [d for d in view.datasets if any(view.of(c, d) for c in ("sage", "gat"))]
    table, clauses = comparison_table(view, [(c, "shared") for c in ("sage", "gat") if c in view.cells], datasets,
                                      {"shared": "LightGCN"})
    return (opening(clauses, "no run of GraphSAGE or GAT has finished beside a LightGCN run on its dataset") + "\nTest R@10 of gsau-rec with each graph encoder "
            "(LightGCN: the shared-table runs of question 1):\n\n" + markdown_table(
                ["graph encoder"] + datasets,
                [[{"shared": "LightGCN"}.get(c, LABELS.get(c, c))] + [spread(view.values(c, d)) for d in datasets]
                 for c in cells])
            + "\nDifferences against LightGCN:\n\n" + table + "\nBoth are plain torch sparse products over "
            "LightGCN's training graph (encoders/sage.py, gat.py), not PyTorch Geometric: the graph is one fixed CSR "
            "matrix, so the mean aggregator is a product with D^-1 A and attention a gather and two index_adds; "
            "no extra dependency, and the same last-layer-at-the-batch fast path as LightGCN.\n\n"
            + seeds_line(view, cells) + view.pending(view.all_of([c for c in ("sage", "gat") if c in view.cells])))


def q7(view: View) -> str:
    cells = [c.name for c in view.study.cells if c.question == 7]
    if not cells:
        return NO_RUNS
    datasets = list(dict.fromkeys(d for c in cells for d in view.cell_datasets(c)))
    rows = [[c] + [spread(view.values(c, d, METRIC, p)) for d in datasets for p in ("metrics", "masked")] for c in cells]
    header = ["run"] + [f"{d} R@10 {p}" for d in datasets for p in ("paper", "masked")]
    clauses = []
    pair = [c for c in cells if c.endswith("gsau-rec")] + [c for c in cells if c.endswith("sasrec")]
    if len(pair) == 2:
        for d in datasets:
            diff = difference(view.records, view.of(pair[0], d), view.of(pair[1], d))
            if diff is not None:
                clauses.append(f"gsau-rec vs sasrec on {d}: {diff.verdict} ({diff.value:+.4f})")
    masking = "".join(_masking(view, cells, d) for d in datasets)
    return (opening(clauses, "gsau-rec and sasrec have not both finished runs on this data") + "\nTest R@10 under both protocols (paper: sequential models "
            "rank every item, graph-scored models (lightgcn, directau, graphau) mask the user's earlier items; masked: every model takes the user's "
            "earlier items out of the ranking, the target itself kept, so a repeat visit stays rankable):\n\n"
            + markdown_table(header, rows) + "\n" + masking + seeds_line(view, cells) + view.pending(view.all_of(cells)))


def _masking(view: View, cells: list[str], dataset: str) -> str:
    """What history masking does on a dataset with repeat visits: test R@10 of the users whose
    target repeats an earlier item and of the others, under each protocol, from the per-user
    records (the seeds averaged per user); and R@10 where masking also drops a repeated target."""
    rows, share = [], None
    for c in cells:
        recs = [view.records.ranks(r) for r in view.finished(view.of(c, dataset))]
        recs = [x for x in recs if x and "masked_rank" in x and "target_repeats" in x]
        if not recs:
            continue
        repeat = np.asarray(recs[0]["target_repeats"], dtype=bool)
        share = (int(repeat.sum()), len(repeat))
        paper = np.mean([buckets.per_user(x, METRIC) for x in recs], axis=0)
        masked = np.mean([buckets.per_user({"rank": x["masked_rank"]}, METRIC) for x in recs], axis=0)

        def mean(values, where) -> str:
            return f"{values[where].mean():.4f}" if where.any() else DASH
        rows.append([c, str(len(recs)), mean(paper, repeat), mean(masked, repeat), mean(paper, ~repeat),
                     mean(masked, ~repeat), f"{paper.mean():.4f}", f"{masked.mean():.4f}",
                     f"{np.where(repeat, 0.0, masked).mean():.4f}"])
    if not rows:
        return ""
    k, n = share
    return (f"\nHistory masking on {dataset}: {k} of {n} test targets ({k / n:.1%}) repeat an earlier item of the "
            "user's. Masking only takes items out of the ranking, so no rank gets worse. A protocol that masks a repeated target "
            "with the history (as scoring every history item -inf before ranking does) makes each repeat visit a "
            "miss: the last column. Test R@10 by user group (the seeds averaged per user):\n\n"
            + markdown_table(["run", "seeds", "repeat: paper", "repeat: masked", "others: paper", "others: masked",
                              "all: paper", "all: masked", "all: masked, repeats missed"], rows) + "\n")


def q8(view: View) -> str:
    cells = [c for c in view.study.cells if c.question == 8]
    if not cells:
        return NO_RUNS
    rows, clauses = [], []
    for cell in cells:
        for d in view.cell_datasets(cell.name):
            before = None
            if cell.reference:
                path = view.study.spec.parent / cell.reference.format(dataset=d) / "metrics.json"
                before = json.loads(path.read_text())["test"][METRIC] if path.exists() else None
            after = view.values(cell.name, d)
            rows.append([cell.name, d, DASH if before is None else f"{before:.4f}", spread(after)])
            if before is not None and after:
                clauses.append(f"{d} {before:.4f} → {np.mean(after):.4f}")
    head = ("GraphAU's test R@10 before → after aligning layer 0 also with the final embedding: " + ", ".join(clauses)
            + " (one run each; the old runs have no per-user ranks, so no interval).\n") if clauses else \
        "Not measured yet: no run with the corrected GraphAU loss has finished.\n"
    return (head + "\nThe corrected loss aligns each layer-0 node with its partner's layers 1..K and its final "
            "(mean-of-layers) embedding, the sum divided by 2(K + 1), as the authors' code does "
            "(objectives.graphau_terms); the earlier runs (the cells' reference, RESULTS.md's graphau runs until "
            "this fix) used layers 1..K alone. RESULTS.md's graphau cells now hold these corrected runs.\n\n"
            + markdown_table(["cell", "dataset", "R@10 before (old loss)", "R@10 after"], rows) + "\n"
            + view.pending(view.all_of([c.name for c in cells])))


def other_cells(view: View, used: set[str]) -> str:
    cells = [c.name for c in view.study.cells if c.name not in used]
    if not cells:
        return ""
    return ("## Other cells\n\n" + metric_table(view, cells, view.datasets) + "\n" + view.pending(view.all_of(cells)))


def _left_out(names: list[str]) -> str:
    if not names:
        return ""
    return (f" ({len(names)} left out: {', '.join(names)} hold runs of another configuration than the spec's; "
            "`--dry-run` says how they differ)")


def write_report(study: Study, out: str | Path, command: str, report: str | Path | None = None,
                 figures: str | Path | None = None, links_from: str | Path | None = None) -> Path:
    """Write the report into `report` (default: the spec's `report`) and its figures into `figures`
    (default OUT). Links are relative to `links_from` (default: the report's folder); a copy that
    must read as the committed one (tests/test_research_committed.py) passes the spec's report's."""
    out = Path(out)
    report = Path(report) if report is not None else study.report
    figures = Path(figures) if figures is not None else out
    home = Path(links_from) if links_from is not None else report.parent

    def link(path: Path) -> str:
        return os.path.relpath(path, home).replace(os.sep, "/")
    runs = plan(study, out)
    view = View(study, runs, Records(), command)
    unique = [r for r in runs if not r.same_as]
    done = sum(view.records.metrics(r) is not None for r in unique)
    other = [r.name for r in unique if differences(r)]
    on_gpu = sum(view.records.metrics(r) is not None and read_config(r.path).train.device.startswith("cuda")
                 for r in unique)
    dyn, gam, val = figures / "dynamics.png", figures / "gamma.png", figures / "validation.png"
    sections = {1: q1(view), 2: q2(view), 3: q3(view, dyn), 4: q4(view, gam), 5: q5(view, val), 6: q6(view),
                7: q7(view), 8: q8(view)}
    rel = link(out)  # figures are linked where `gsau study` draws them, beside the runs
    sections = {q: s.replace("](dynamics.png)", f"]({rel}/dynamics.png)").replace("](gamma.png)", f"]({rel}/gamma.png)")
                .replace("](validation.png)", f"]({rel}/validation.png)") for q, s in sections.items()}
    used = {"shared", "separate", "no-graph", "sasrec", "gsau-rec", "gsau", "sage", "gat"}
    used |= {c.name for c in study.cells if c.question in (7, 8)}
    parts = [
        "# GSAU research: why it works and where it does not (issue #18)\n",
        f"{done} of {len(unique)} runs finished{_left_out(other)}. Every number below is computed from the run records under "
        f"[{link(out)}/runs]({link(out)}/runs) and the spec "
        f"[{study.spec.name}]({link(study.spec)}); `{command}` trains what is missing "
        "in the spec's order, resumes where it stopped (`--dry-run` shows each run's state, `--workers N` trains N "
        "at once), and rewrites this file; on a lent GPU, `python benchmarks/gpu_study.py` trains them there and "
        "brings their records back"
        + (f" ({on_gpu} of the finished runs were trained on a GPU: train.device in their config.yaml)" if on_gpu
           else "") + ".\n",
        "Protocol: as RESULTS.md (leave-one-out by time, full ranking over all items, best epoch on validation "
        "NDCG@20, the test split reported; the runs use the grid's lr 0.003). A cell of several seeds shows mean "
        "± std (n). A difference of two cells is that of their seed means, with a 95% paired bootstrap interval "
        "over test users (1000 resamples, seeded) and, where a cell has 2+ seeds, the seed-level standard error "
        "(a one-seed cell taken to vary across seeds as the other does); it is marked significant (*) when the "
        "interval excludes 0 and it exceeds twice that error. With one seed a side the interval alone decides, "
        "which leaves the seeds' variance untested.\n",
    ]
    for q, title in QUESTIONS.items():
        parts += [f"## {q}. {title}\n", sections[q]]
    extra = other_cells(view, used)
    if extra:
        parts.append(extra)
    parts.append(f"Written by `{command}` (gsau {__version__}).\n")  # no clock: the same records, the same bytes
    checkpoint.write_text(report, "\n".join(parts))
    logging.getLogger("gsau").info("wrote %s (%d of %d runs finished)", report, done, len(unique))
    return report
