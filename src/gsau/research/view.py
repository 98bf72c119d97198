"""The study's planned runs looked up by cell, dataset and sweep value, and the tables every
answer of RESEARCH.md is built from (a metric per cell, differences of cells, seeds, what is
pending and how to train it)."""

from __future__ import annotations

import logging
from pathlib import Path

from gsau.data.interactions import BUNDLED
from gsau.reproduce.report import markdown_table
from gsau.research.stats import DASH, METRIC, Records, difference, spread, verdicts
from gsau.research.study import Run, Study, short_label

NO_RUNS = "The spec has no runs for this question.\n"
# How the cells read in tables; a cell of another spec shows its own name.
LABELS = {"shared": "shared table (gsau-rec)", "separate": "separate tables", "no-graph": "no graph",
          "sasrec": "sasrec", "sage": "GraphSAGE", "gat": "GAT", "no-graph-gamma0": "no graph, gamma 0 (no L_SU)"}


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
        by_dataset: dict[str, list[int]] = {}
        for r in view.finished(view.of(c)):
            by_dataset.setdefault(r.label, []).append(r.seed)
        if not by_dataset:
            continue
        seeds = {d: ", ".join(map(str, sorted(v))) for d, v in by_dataset.items()}
        if len(set(seeds.values())) == 1 and len(seeds) == len(view.cell_datasets(c)):
            parts.append(f"{LABELS.get(c, c)} {next(iter(seeds.values()))}")  # the same seeds everywhere
        else:
            parts.append(f"{LABELS.get(c, c)}: " + " / ".join(f"{d} {v}" for d, v in seeds.items()))
    return f"Seeds of the finished runs: {'; '.join(parts)}.\n" if parts else ""


def comparison_table(view: View, pairs: list[tuple[str, str]], datasets: list[str],
                     labels: dict | None = None) -> tuple[str, list[str]]:
    """A table of differences (rows: a - b) and one verdict clause per pair."""
    labels = {**LABELS, **(labels or {})}
    rows, clauses = [], []
    cells = list(dict.fromkeys(c for pair in pairs for c in pair))
    values = {d: {c: view.values(c, d) for c in cells} for d in datasets}
    for a, b in pairs:
        diffs = {d: difference(view.records, view.of(a, d), view.of(b, d),
                               others=[v for c, v in values[d].items() if c not in (a, b)]) for d in datasets}
        rows.append([f"{labels.get(a, a)} − {labels.get(b, b)}"] + [DASH if x is None else x.cell() for x in diffs.values()])
        clause = verdicts(f"{labels.get(a, a)} vs {labels.get(b, b)}", diffs)
        if clause:
            clauses.append(clause)
    return markdown_table(["test R@10 difference"] + datasets, rows), clauses


def opening(clauses: list[str], missing: str) -> str:
    if not clauses:
        return f"Not measured yet: {missing}.\n"
    return "Test R@10, " + "; ".join(clauses) + ".\n"


def _drawn(drawn: bool, figure: Path) -> None:
    if not drawn:
        logging.getLogger("gsau").warning("%s not redrawn: matplotlib is not installed (pip install 'gsau[plot]')",
                                          figure)
