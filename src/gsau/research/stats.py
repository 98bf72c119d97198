"""The run records of a study and the statistics over them: each file read once; a cell of
several seeds as mean ± std; a difference of two cells as the difference of their seed means with
(a) a 95% paired bootstrap interval over test users of the per-user metric averaged over each
cell's seeds and (b) the seed-level standard error sqrt(s_a^2/n_a + s_b^2/n_b) with
Satterthwaite degrees of freedom, where s^2 is a cell's own seed variance when it has 2+ seeds
and otherwise the variance pooled over the table's cells of 2+ seeds on that dataset. It is called
significant when the interval excludes 0 and, where (b) exists, |difference| > t(0.975, df) SE:
with 2-3 seeds a side the variance is itself known only roughly, and t (4.30 at 2 df, 2.78 at 4)
says how roughly."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gsau.research import buckets
from gsau.research.study import Run, finished

DASH = "—"
METRIC = "recall@10"
# Student's t at 0.975 for 1..30 degrees of freedom (standard tables); beyond, interpolated in 1/df
# towards the normal's 1.96. Kept here rather than taking scipy into the core for one quantile.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


def t975(df: float) -> float:
    """The two-sided 95% critical value of Student's t; a fractional df (Welch) rounds down, the
    conservative side."""
    if df < 1:
        raise ValueError(f"t975 needs df >= 1, got {df}")
    whole = int(math.floor(df + 1e-9))
    if whole <= len(T975):
        return T975[whole - 1]
    return 1.96 + (T975[-1] - 1.96) * len(T975) / whole


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
def _four(x: float) -> str:
    """x to 4 decimals, a value that rounds to zero printed 0.0000, not -0.0000 (a collapsed run's
    uniformity is a hair below 0)."""
    text = f"{x:.4f}"
    return "0.0000" if text == "-0.0000" else text


def spread(values: list[float]) -> str:
    if not values:
        return DASH
    if len(values) == 1:
        return _four(values[0])
    return f"{_four(float(np.mean(values)))} ± {np.std(values, ddof=1):.4f} (n={len(values)})"


@dataclass
class Difference:
    value: float  # mean of a's seeds - mean of b's seeds
    low: float | None  # paired bootstrap interval over users (None without both cells' ranks)
    high: float | None
    se: float | None  # seed-level standard error (None where the seeds give no spread: seed_error)
    df: float | None = None  # its degrees of freedom (Satterthwaite)

    @property
    def significant(self) -> bool:
        if self.low is None or (self.low <= 0 <= self.high):
            return False
        return self.se is None or abs(self.value) > t975(self.df) * self.se

    @property
    def verdict(self) -> str:
        if not self.significant:
            return "no significant difference"
        return "significant gain" if self.value > 0 else "significant loss"

    def worded(self) -> str:
        """The value with, where it is not significant, which test holds it back: with 1-2 df the
        seeds' spread alone can ask for a gap several times the one measured, which "no significant
        difference" alone would let a reader take for no effect."""
        if self.significant:
            return f"{self.value:+.4f}"
        if self.low is None:
            why = "no per-user ranks to test it with"
        elif self.low <= 0 <= self.high:
            why = "the users' interval holds 0"
        else:
            why = f"the seeds' spread asks for more than {t975(self.df) * self.se:.4f} at {self.df:.3g} df"
        return f"{self.value:+.4f}: {why}"

    def cell(self) -> str:
        interval = f" [{self.low:+.4f}, {self.high:+.4f}]" if self.low is not None else ""
        se = f", seed SE {self.se:.4f}, {self.df:.3g} df" if self.se is not None else ""
        return f"{self.value:+.4f}{interval}{se}" + (" *" if self.significant else "")


def seed_error(va: list[float], vb: list[float], others: list[list[float]] = ()) -> tuple[float, float] | None:
    """(SE, df): the standard error of mean(va) - mean(vb) from the seeds' spread,
    sqrt(s_a^2/n_a + s_b^2/n_b), and its Satterthwaite degrees of freedom.

    A side of 2+ seeds uses its own variance (the variants need not vary alike: Welch). A one-seed
    side has none, so it takes the variance pooled over every cell of 2+ seeds in the comparison,
    its own table's `others` (the other cells' seed values on this dataset) and the two sides,
    sum((n_k - 1) s_k^2) / sum(n_k - 1). SE^2 is then a sum of the independent cell variances,
    sum(c_k s_k^2), and Satterthwaite's df over those terms, (sum c_k s_k^2)^2 / sum (c_k s_k^2)^2 /
    (n_k - 1), counts each cell's seeds once: a pool that holds the other side's seeds, or that one
    cell dominates, knows no more than that cell does. With 2+ seeds a side and no borrowing this
    is Welch's test. None where the seeds give no spread to weigh: no cell of 2+ seeds, or every
    such cell's seeds equal."""
    cells = [va, vb, *others]
    df_pool = sum(len(g) - 1 for g in cells if len(g) >= 2)
    coef = [0.0] * len(cells)  # c_k: the weight of cell k's variance in SE^2
    for side, values in enumerate((va, vb)):
        if len(values) >= 2:
            coef[side] += 1 / len(values)
        elif not df_pool:
            return None
        else:
            for k, g in enumerate(cells):
                if len(g) >= 2:
                    coef[k] += (len(g) - 1) / df_pool / len(values)
    terms = [(coef[k] * float(np.var(g, ddof=1)), len(g) - 1) for k, g in enumerate(cells) if len(g) >= 2 and coef[k]]
    total = sum(t for t, _ in terms)
    if total == 0:
        return None
    return math.sqrt(total), total ** 2 / sum(t * t / df for t, df in terms if t)


def difference(records: Records, a: list[Run], b: list[Run], metric: str = METRIC,
               others: list[list[float]] = ()) -> Difference | None:
    """a's finished runs against b's (one dataset): None unless both have one. `others`: the
    `metric` values of the seeds of the table's other cells on this dataset, whose spread a one-seed
    side borrows with the two sides' (seed_error)."""
    va, vb = ([records.value(r, metric) for r in side if records.metrics(r)] for side in (a, b))
    if not va or not vb:
        return None
    se, df = seed_error(va, vb, others) or (None, None)
    ranks_a = [records.ranks(r) for r in a if records.metrics(r)]
    ranks_b = [records.ranks(r) for r in b if records.metrics(r)]
    low = high = None
    if all(ranks_a) and all(ranks_b):
        overall = buckets.bucket_table(ranks_a, metric, against=ranks_b, overall_only=True)[0]
        low, high = overall["low"], overall["high"]
    return Difference(float(np.mean(va) - np.mean(vb)), low, high, se, df)


def verdicts(name: str, diffs: dict[str, Difference | None]) -> str | None:
    """"name: significant gain on beauty (+0.0012), no significant difference on toys (+0.0003: the
    users' interval holds 0)"."""
    parts = [f"{d.verdict} on {dataset} ({d.worded()})" for dataset, d in diffs.items() if d is not None]
    return f"{name}: " + ", ".join(parts) if parts else None
