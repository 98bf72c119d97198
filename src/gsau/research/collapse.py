"""Question 5 of RESEARCH.md: why the published gsau (L_SA) collapses and which change makes it
train. The changes trained to early stopping are set against sasrec on their dataset; the
12-epoch screens, one change at a time, are read into the mechanism in measured terms."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import yaml

from gsau.config import resolve
from gsau.reproduce.report import markdown_table
from gsau.research import plot
from gsau.research.dynamics import random_uniformity
from gsau.research.stats import DASH, METRIC, Difference, difference, seed_error, spread
from gsau.research.study import Run
from gsau.research.view import NO_RUNS, View, _drawn

RISING = 0.003  # a screen's gain in valid R@10 over its last epoch above which it is read as cut short


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


def _seed_noise(view: View, full: list[Run], at: int) -> tuple[str, list[float]] | None:
    """How far seeds of one configuration part at epoch `at`: the full-run cell with the most
    finished seeds and its valid R@10 there, so one-seed screens can be read against it."""
    by_cell: dict[tuple[str, str], list[float]] = {}
    for r in full:
        h = _at_epoch(view.records.log(r), at)
        if h is not None:
            by_cell.setdefault((r.cell.name, r.label), []).append(h["valid_recall@10"])
    found = [(name, values) for (name, _), values in by_cell.items() if len(values) >= 2]
    return max(found, key=lambda f: len(f[1])) if found else None


def _mechanism(view: View, screens: list[Run], at: int, reference_log: list[dict] | None,
               noise: tuple[str, list[float]] | None = None) -> str:
    """The collapse and its cure in measured terms: the screens keyed by what they change. A gain
    counts as help only beyond the seed noise at that epoch, where it has been measured."""
    records = view.records
    # Two one-seed runs differ by seed noise of standard deviation sqrt(2) s, s the seeds' own standard
    # deviation: a gap within 1.96 sqrt(2) s is read as noise (s from 2-3 seeds: a rough bar).
    margin = 1.96 * math.sqrt(2) * float(np.std(noise[1], ddof=1)) if noise else 0.0

    def key(r: Run):
        n = r.config.net
        return (n.gamma, n.su_negatives, n.cosine_scores, n.su_t, n.su_mask_hits, n.su_unique_items)
    by, rising = {}, {}
    for r in screens:
        h, log = _at_epoch(records.log(r), at), records.log(r)
        if h is not None:
            by[key(r)] = (h["valid_recall@10"], log[0].get("probe_seq_unif_user"), log[0].get("probe_seq_unif_item"),
                          h.get("probe_seq_unif_user"))
            before = _at_epoch(log, at - 1)
            if before is not None:
                rising[key(r)] = h["valid_recall@10"] - before["valid_recall@10"]  # its last epoch's gain
    out = []
    low, high = by.get((0.1, "shuffled", True, 2.0, False, False)), by.get((0.5, "shuffled", True, 2.0, False, False))
    if low and low[1] is not None:
        items = ""
        if low[2] is not None:
            items = (f", while the items stay more spread ({low[2]:.2f} after one epoch)" if low[2] < low[1]
                     else f", and the items are no more spread ({low[2]:.2f} after one epoch)")
        d = screens[0].config.net.embedding_dim
        recovered = f" and {low[3]:.2f} by epoch {at}" if low[3] is not None else ""
        text = (f"The collapse: at the published gamma 0.1 the probe's sequence uniformity is {low[1]:.2f} after one "
                f"epoch{recovered} (about {random_uniformity(d):.1f} for directions spread at random over the "
                f"{d}-dimensional sphere, 0 one point){items}. That is consistent with this reading, which the screens "
                "that follow test one change at a time: L_SA only pulls each representation towards its own target, so "
                "crowding every history's representation into one region of the sphere lowers it on average "
                "without telling histories apart, and gamma L_SU, with one shuffled item a sample, does not hold "
                "that back in the first epochs")
        if reference_log and len(reference_log) > 1 and reference_log[0].get("L_SU") is not None:
            su, sa = (reference_log[0]["L_SU"], reference_log[1]["L_SU"]), (reference_log[0]["L_SA"], reference_log[1]["L_SA"])
            text += (f" (the published run's L_SU {_goes(*su)} from {su[0]:.2f} to {su[1]:.2f} in epoch 2, L_SA "
                     f"{_goes(*sa)} from {sa[0]:.2f} to {sa[1]:.2f}; by its last epoch, {len(reference_log)}, L_SU "
                     f"is {reference_log[-1]['L_SU']:.2f} and L_SA {reference_log[-1]['L_SA']:.2f})")
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
            (b_low[0] > low[0] + margin, b_high[0] > high[0] + margin)]
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
    if out and noise:
        name, values = noise
        out.append(f"Each screen is one seed: the {len(values)} seeds of {name} span {min(values):.4f}-{max(values):.4f} "
                   f"at epoch {at} (standard deviation {np.std(values, ddof=1):.4f}), so two screens' valid R@10 differ "
                   f"by seed noise alone by up to about 1.96 × √2 × that = {margin:.4f} (a rough bar, from "
                   f"{len(values)} seeds of another configuration); a smaller difference is read as noise, and "
                   "\"helps\" above needs more. The cosine and inner-product screens share one training (the same "
                   "seed, losses equal epoch by epoch; only the ranking differs), so no seed noise lies between them.")
    return (" ".join(out) + "\n") if out else ""


def _changes(cell) -> str:
    return cell.model + "".join(f", {o}" for o in cell.overrides)


def _option(value) -> str:
    """A config value as `--set` spells it: true, 1, batch."""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def _glossary(cells: list) -> str:
    """What the options the changes set mean, and what each research preset among them sets
    against gsau (read from the presets, so it cannot go stale)."""
    presets = []
    base = dataclasses.asdict(resolve("gsau").net)
    for model in dict.fromkeys(c.model for c in cells if c.model != "gsau"):
        net = dataclasses.asdict(resolve(model).net)
        changed = ", ".join(f"{k}={_option(v)}" for k, v in net.items() if base.get(k) != v)
        presets.append(f"{model} is gsau with {changed}")
    return ("Options: su_negatives sets the negatives of L_SU's representation-item term: shuffled (the paper's: "
            "one other sample's target a sample), batch (every other sample's target, one log-mean-exp over the "
            "batch), rows (the same, a log-mean-exp per sample), items (every item of the catalogue but the "
            "sample's own target); su_t is t in L_SU's kernel exp(−t‖x − y‖²) (2 in the paper); cosine_scores "
            "ranks by cosine instead of the inner product; su_mask_hits leaves accidental hits (a sample's own "
            "item as another sample's target) out of its negatives; su_unique_items weighs each distinct item of "
            "the batch 1 among the negatives, its copies sharing it."
            + (" Presets: " + "; ".join(presets) + "." if presets else ""))


def _model_of(run_dir: Path) -> str | None:
    file = run_dir / "config.yaml"
    return (yaml.safe_load(file.read_text()) or {}).get("model") if file.exists() else None


def _against_sasrec(view: View, runs: list[Run], dataset: str, reference: Path | None,
                    others: list[list[float]] = ()):
    """(sasrec's test R@10 values, what they are, the difference of runs against them, whether they
    are the study's own runs): the
    study's own sasrec cell (question 2: several seeds with per-user ranks, so an interval) where
    it has finished runs on the dataset, else the cell's reference run (one seed, no ranks).
    `others`: the seed values of the other changes on the dataset, whose spread a one-seed side
    borrows with the two sides' (stats.seed_error)."""
    records = view.records
    sasrec = view.finished(view.of("sasrec", dataset)) if "sasrec" in view.cells else []
    if sasrec:
        return [records.value(r) for r in sasrec], "sasrec", difference(records, runs, sasrec, others=others), True
    if reference is None or not (reference / "metrics.json").exists() or _model_of(reference) != "sasrec":
        return None
    target = json.loads((reference / "metrics.json").read_text())["test"][METRIC]
    va = [records.value(r) for r in runs]
    se, df = seed_error(va, [target], others) or (None, None)
    return [target], reference.name, Difference(float(np.mean(va)) - target, None, None, se, df), False


def _full_runs(view: View, cells: list, published: float | None) -> tuple[str, str]:
    """Question 5's changes trained to early stopping, each against sasrec on its dataset: the
    opening sentence (the best change by its difference from sasrec) and one table row a cell and
    dataset."""
    rows, found = [], []

    full = {(c.name, d): done for c in cells for d in view.cell_datasets(c.name)
            if (done := [r for r in view.finished(view.of(c.name, d)) if r.config.train.epochs >= 300])}
    values_of: dict = {}  # dataset -> change -> the seed values of the change trained to early stopping
    for (name, d), done in full.items():
        values_of.setdefault(d, {})[name] = [view.records.value(r) for r in done]
    for c in cells:
        for d in view.cell_datasets(c.name):
            done = full.get((c.name, d))
            if not done:
                continue
            reference = view.study.spec.parent / c.reference.format(dataset=d) if c.reference else None
            others = [v for name, v in values_of[d].items() if name != c.name]
            against = _against_sasrec(view, done, d, reference, others)
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
    noise = _seed_noise(view, [r for r in finished if r.config.train.epochs >= 300], at)
    mechanism = _mechanism(view, [r for r in finished if r.config.train.epochs < 300], at, reference_log, noise)
    probe, dim = runs[0].config.train.probe, runs[0].config.net.embedding_dim
    kernels = sorted({r.config.net.su_t for r in runs} | {2.0})
    at_random = ", ".join(f"{3 * random_uniformity(dim, t):.1f} at t {t:g}" for t in kernels)
    return (head + full_table + ("\n" + mechanism if mechanism else "")
            + "\nEvery run: one change at a time (one seed each unless the cell says) against the published gsau "
            "(its L_SA: alignment of the L2-normalised sequence representation with its target, gamma L_SU: "
            f"uniformity of the representations, of the targets, and of representation-item pairs). Screens stop at "
            f"epoch {at}; the test metrics of a screen are those of its best epoch so far. L_SU is the epoch mean "
            "(more negative: more spread over the sphere; 0: every vector in one place); it sums three uniformity "
            f"terms, so for directions spread at random it is about {at_random}: compare it between runs of one "
            "t. " + _glossary(cells) + " Seq unif is the uniformity "
            f"of the sequence representations of {probe} fixed users (the probe, research/dynamics.py; about "
            f"{random_uniformity(dim):.1f} spread at random over the sphere, 0 collapsed), epoch 1 → last.\n\n"
            + markdown_table(["run", "epochs", f"valid R@10 at epoch {at}", "test R@10", "test N@10",
                              "L_SU epoch 1 → highest → last", "seq unif"], rows) + "\n" + view.pending(runs))
