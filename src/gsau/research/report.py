"""RESEARCH.md: the study's answers, from the spec and the run records on disk alone (config,
log.jsonl, metrics.json, masked.json, ranks.json.gz); no model is loaded and nothing depends on
which datasets or optional packages this machine has, so a committed report can be checked
anywhere (tests/test_research_committed.py). Figures are drawn beside the runs where matplotlib
is installed; the text never depends on them.

Each answer opens with one plain sentence computed from the numbers, then its tables. Where runs
are missing, the section names them and the command that trains them. The statistics (spreads,
differences, significance) are in stats.py, the tables in view.py, question 5 in collapse.py.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from gsau import __version__, checkpoint
from gsau.config import resolve
from gsau.reproduce.report import markdown_table
from gsau.research import buckets, plot
from gsau.research.dynamics import linear_cka, random_uniformity
from gsau.research.collapse import q5
from gsau.research.stats import DASH, METRIC, Records, difference, spread
from gsau.research.study import Run, Study, differences, plan
from gsau.research.view import (LABELS, NO_RUNS, View, _drawn, comparison_table, metric_table, opening,
                                seeds_line)
from gsau.runs import read_config

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
# Question 3's runs: the first seed of these cells (at the preset's own gamma for the sweep).
DYNAMICS = (("shared", None), ("separate", None), ("gsau", resolve("gsau").net.gamma))
CONVERGES = 0.01  # a rise of the probe's cross-encoder similarity, epoch 1 -> best, read as converging
PROBE_FIELDS = (("probe_user_cos", "user cos"), ("probe_item_cka", "item CKA"),
                ("probe_seq_unif_user", "seq unif"), ("probe_graph_unif_user", "graph unif"))


# -- the questions ------------------------------------------------------------------------------------
def q1(view: View) -> str:
    cells = [c for c in ("shared", "separate", "no-graph") if c in view.cells]
    if "shared" not in cells or len(cells) < 2:
        return NO_RUNS
    datasets = [d for d in view.datasets if any(view.of(c, d) for c in cells)]
    # sasrec (question 2's runs) as a reference row: no graph - sasrec is what gsau-rec's sequence
    # terms do without a graph, so a large shared - no graph gap can be read against plain sasrec.
    shown = cells + (["sasrec"] if "no-graph" in cells and "sasrec" in view.cells else [])
    # shared - no graph = (shared - sasrec) + (sasrec - no graph): the last two rows say which part
    # of a gain over the control is a gain over plain sasrec.
    pairs = [(a, b) for a, b in (("shared", "no-graph"), ("shared", "separate"), ("separate", "no-graph"),
                                 ("shared", "sasrec"), ("no-graph", "sasrec")) if a in shown and b in shown]
    table, clauses = comparison_table(view, pairs, datasets)
    reference = ("\nsasrec is the reference (question 2's runs: cross-entropy on inner products, no L_SU); no graph "
                 "is gsau-rec's sequence terms alone (cross-entropy on the normalised representation, plus gamma "
                 "L_SU, from gsau-rec's Xavier-normal initialisation where sasrec keeps the encoder's default), "
                 "so no graph − sasrec is what those terms and that start do without a graph; shared − no graph = (shared − sasrec) − "
                 "(no graph − sasrec), so the two sasrec rows say how much of the graph's gain over the control is a "
                 "gain over plain sasrec.\n" if "sasrec" in shown else "")
    null = ("\nWith separate tables no term of L reads both encoders (L_GA and L_GU read the graph's tables, L_CE "
            "and L_SU the sequence encoder and item_table; tests/test_research_separate_tables.py checks that no "
            "gradient crosses), so the separate-table ranker trains as the no-graph one does, up to its random "
            "draws: separate tables − no graph measures noise, and the shared table is the only channel through "
            "which the graph can reach the ranker.\n" if {"separate", "no-graph"} <= set(cells) else "")
    return (opening(clauses, "no two of its cells have finished runs on the same dataset") + "\nTest R@10 (paper protocol), mean ± std over seeds:\n\n"
            + metric_table(view, shown, datasets) + "\nDifferences of the seed means, [95% bootstrap interval "
            "over test users], seed SE; * significant:\n\n" + table + reference + null + "\n" + seeds_line(view, shown)
            + view.pending(view.all_of(cells)))


def bucket_rows(view: View, a: str, b: str, dataset: str) -> tuple[str, list[str], list[dict]] | None:
    """The bucket table of a's runs against b's on one dataset, the buckets where the paired
    difference is significant, and the table's rows; None unless both have finished runs with
    per-user ranks."""
    ra = [view.records.ranks(r) for r in view.finished(view.of(a, dataset))]
    rb = [view.records.ranks(r) for r in view.finished(view.of(b, dataset))]
    if not ra or not rb or not all(ra) or not all(rb):
        return None
    rows = buckets.bucket_table(ra, METRIC, against=rb)
    where = [f"{r['bucket']} ({r['difference']:+.4f})" for r in rows if r["kind"] != "all" and buckets.excludes_zero(r)]
    return buckets.markdown(rows, "R@10", (LABELS.get(a, a), LABELS.get(b, b)), star_all=False), where, rows


def _popularity_pattern(found: dict[str, dict[str, list[dict]]]) -> str:
    """One sentence on the popularity buckets whose interval excludes 0, gathered across datasets:
    "against sasrec the shared table gains on head targets (beauty, sports) ... and loses on tail
    targets (beauty)", so the pattern reads without going through every table."""
    parts = []
    for other, by_dataset in found.items():
        gains, losses = {}, {}
        for d, rows in by_dataset.items():
            for r in rows:
                if r["kind"] == "popularity" and buckets.excludes_zero(r):
                    (gains if r["difference"] > 0 else losses).setdefault(r["bucket"], []).append(d)
        order = ("head", "torso", "tail")

        def listed(side: dict) -> str:
            named = [f"{b} ({', '.join(side[b])})" for b in order if b in side]
            return (", ".join(named[:-1]) + " and " if len(named) > 1 else "") + named[-1] + " targets"
        said = [f"{verb} on {listed(side)}" for verb, side in (("gains", gains), ("loses", losses)) if side]
        parts.append(f"against {LABELS.get(other, other)} the shared table "
                     + (" and ".join(said) if said else "differs in no popularity bucket"))
    return ("By target popularity, " + "; ".join(parts) + ".\n") if parts else ""


def q2(view: View) -> str:
    if "shared" not in view.cells or not {"no-graph", "sasrec"} & set(view.cells):
        return NO_RUNS
    parts, clauses, pattern = [], [], {}
    for other in [c for c in ("no-graph", "sasrec") if c in view.cells]:
        for d in view.datasets:
            found = bucket_rows(view, "shared", other, d)
            if found is None:
                continue
            table, where, rows = found
            pattern.setdefault(other, {})[d] = rows
            clauses.append(f"vs {LABELS.get(other, other)} on {d}: " + (", ".join(where) or "no bucket"))
            parts.append(f"**{d}: {LABELS['shared']} vs {LABELS.get(other, other)}**\n\n{table}")
    head = ("Buckets where the shared table's test R@10 differs beyond the users' noise (its 95% bootstrap "
            "interval over the bucket's users excludes 0; a bucket has no seed-level error, so the seeds' own "
            "spread is not in it: read these against question 1's overall verdicts; "
            f"{len(buckets.GROUPS) - 1} buckets a comparison, not adjusted for testing that many): "
            + "; ".join(clauses) + ".\n\n" + _popularity_pattern(pattern)) if clauses else \
        "Not measured yet: no dataset has finished runs of both models with their per-user ranks.\n"
    legend = ("\nIn each table: a user's R@10 is averaged over the cell's seeds; history length counts all of the "
              "user's interactions, the test item included (at test time the model reads the other n − 1); "
              "popularity is the test item's count in the training split, head/torso/tail cut at 1/3 and 2/3 of "
              "the training interactions; * marks a bucket whose interval excludes 0 (a bucket has no seed-level "
              "error); the all row is question 1's difference, judged there with the seeds' spread too.\n"
              if parts else "")
    cells = [c for c in ("shared", "no-graph", "no-graph-gamma0", "sasrec") if c in view.cells]
    return (head + _recommended(view, cells) + legend + "\n" + "\n".join(parts) + ("\n" if parts else "")
            + view.pending(view.all_of(cells)))


def _recommended(view: View, cells: list[str]) -> str:
    """What each cell puts in its top 10, by the popularity of the items: the share of the list's
    slots that head and tail items fill (users and seeds averaged), beside the share of test targets
    that are head and tail items, from the records that keep it (ranks.json.gz's top_popularity)."""
    rows, clauses = [], []
    for d in view.datasets:
        shares, targets = {}, None
        for c in cells:
            records = [x for r in view.finished(view.of(c, d)) if (x := view.records.ranks(r)) and "top_popularity" in x]
            if not records:
                continue
            k = records[0]["top_popularity"]["k"]
            heads = [float(np.mean(x["top_popularity"]["head"])) / k for x in records]
            tail = float(np.mean([np.mean(x["top_popularity"]["tail"]) / k for x in records]))
            # The seeds' range beside the mean: seeds of one model can differ by more than two models do.
            seeds = f" (seeds {min(heads):.0%}–{max(heads):.0%})" if len(heads) > 1 else ""
            shares[c] = (float(np.mean(heads)), tail, len(records), float(np.mean(view.values(c, d))), seeds)
            if targets is None:
                counts, cuts = np.asarray(records[0]["target_train_count"]), records[0]["popularity_cuts"]
                targets = (float(np.mean(counts >= cuts["head"])), float(np.mean(counts < cuts["torso"])))
        if not shares:
            continue
        rows.append([d, "test targets", f"{targets[0]:.0%}", f"{1 - targets[0] - targets[1]:.0%}", f"{targets[1]:.0%}",
                     DASH, DASH])
        rows += [[d, LABELS.get(c, c), f"{h:.0%}{seeds}", f"{1 - h - t:.0%}", f"{t:.0%}", f"{r10:.4f}", str(n)]
                 for c, (h, t, n, r10, seeds) in shares.items()]
        clauses.append(f"on {d}, " + ", ".join(f"{LABELS.get(c, c)} {h:.0%}{seeds}"
                                                for c, (h, _, _, _, seeds) in shares.items())
                       + f" (test targets {targets[0]:.0%})")
    if not rows:
        return ""
    return ("\nWhat the models recommend: the share of the top 10 that head items fill " + "; ".join(clauses)
            + ". Share of the top-10 slots (under each run's own protocol) filled by head, torso and tail items, "
            "the users and seeds averaged, beside the test targets' own shares:\n\n"
            + markdown_table(["dataset", "list", "head", "torso", "tail", "test R@10", "seeds"], rows))


def dynamics_runs(view: View) -> list[Run]:
    """Question 3's planned runs: the first seed of each DYNAMICS cell, on every dataset."""
    runs = []
    for cell, value in DYNAMICS:
        if cell in view.cells:
            sweep = view.cells[cell].sweep
            runs += [r for d in view.cell_datasets(cell)
                     for r in view.of(cell, d, value=value if sweep else None, first_seed=True)]
    return runs


def _reading(view: View, runs: list[Run]) -> str:
    """How far the probe's cross-encoder fields are built in: with a shared table the graph's item
    view averages LightGCN's layers 0..K, and layer 0 is the sequence encoder's own item table; CKA
    of two unrelated views is well above 0 at this size (computed, seeded); and cosines compare
    coordinates, which separate tables do not share."""
    cfg = runs[0].config
    n, d = cfg.train.probe, cfg.net.embedding_dim
    clauses = []
    if any(r.config.net.shared_table for r in runs):
        clauses.append(f"with a shared table the graph's item view is the mean of LightGCN's layers 0.."
                       f"{cfg.net.graph_layers} and layer 0 is the sequence encoder's own item table, so part of "
                       "the item similarity is built in; so is part of the user similarity, since the graph's user "
                       "view averages, from layer 1 on, the same item rows the sequence encoder reads from the "
                       "user's history")
    if n >= 2:
        g = torch.Generator().manual_seed(0)
        chance = linear_cka(torch.randn(n, d, generator=g), torch.randn(n, d, generator=g))
        clauses.append(f"two unrelated random views of {n} × {d} have a linear CKA of {chance:.2f} (seeded, the "
                       "same function), not 0")
    if any(not r.config.net.shared_table for r in runs):
        clauses.append("with separate tables the two views share no coordinates, so their user cos says nothing "
                       "and CKA (invariant to rotation) is the comparison")
    return "\nReading it: " + "; ".join(clauses) + ".\n"


def _transfer(cka_moves: list[tuple[Run, float, float]]) -> str:
    """Whether converging views are knowledge transfer: separate tables let no gradient cross between
    the encoders (question 1), so a rise of their item CKA comes from the data both encoders read,
    not from one teaching the other; beside it, where the shared table's CKA starts and how far it moves."""
    separate = [(r, a, b) for r, a, b in cka_moves if not r.config.net.shared_table]
    shared = [(r, a, b) for r, a, b in cka_moves if r.config.net.shared_table]
    if not separate:
        return ""
    rises = "; ".join(f"{r.name} {a:.2f} → {b:.2f}" for r, a, b in separate)
    up = sum(b - a > CONVERGES for _, a, b in separate)
    control = (f"with separate tables, where no gradient crosses between the two encoders (question 1), the item "
               f"CKA rises in {up} of {len(separate)} runs ({rises})")
    text = (f"Converging views need no transfer: {control}, from the interactions both encoders read alone, so a rise "
            "alone does not show one encoder teaching the other" if up else
            f"The control: {control}")
    if shared:
        starts = [a for _, a, _ in shared]
        moved = [b - a for _, a, b in shared]
        text += (f"; with the shared table the item CKA starts at {min(starts):.2f}-{max(starts):.2f} at epoch 1 "
                 f"and moves by {min(moved):+.2f} to {max(moved):+.2f} by the best epoch")
    return text + ".\n"


def first_to_best(log: list[dict], best: dict | None, key: str) -> str:
    """A logged field at epoch 1 -> the best epoch, or no value where either record lacks it (no best
    epoch's record: none)."""
    a, b = log[0].get(key), best.get(key) if best else None
    return DASH if a is None or b is None else f"{a:.3f} → {b:.3f}"


def q3(view: View, figure: Path) -> str:
    planned = dynamics_runs(view)
    if not planned:
        return NO_RUNS
    # Finished runs only: a run still training would make the report depend on when it was written.
    runs = [r for r in view.finished(planned) if any(k.startswith("probe_") for h in view.records.log(r) for k in h)]
    if not runs:
        return ("Not measured yet: no run with the probe (train.probe) has finished; the runs of questions 1 and 4 "
                "log it.\n\n" + view.pending(planned))
    rows, clauses, moves, cka_moves = [], [], {"user cos": [], "item CKA": []}, []
    for r in runs:
        log, best = view.records.log(r), view.records.best_record(r)
        first = log[0]
        cells = []
        for key, _ in PROBE_FIELDS:
            cells.append(first_to_best(log, best, key))
        # Epoch 1 -> best epoch can hide a rise and fall in between: the peak, and when.
        cka = [(h["probe_item_cka"], h["epoch"]) for h in log if h.get("probe_item_cka") is not None]
        peak = max(cka) if cka else None
        rows.append([r.name, str(len(log))] + cells + [DASH if peak is None else f"{peak[0]:.3f} ({peak[1]})"])
        parts = []
        for key, label in (("probe_user_cos", "user cos"), ("probe_item_cka", "item CKA")):
            # A cosine compares coordinates, which separate tables do not share: not counted there.
            if key == "probe_user_cos" and not r.config.net.shared_table:
                continue
            a, b = first.get(key), best.get(key) if best else None
            if a is not None and b is not None:
                moves[label].append(b - a)
                parts.append(f"{label} {a:.2f} → {b:.2f}")
                if key == "probe_item_cka":
                    cka_moves.append((r, a, b))
        if parts:
            clauses.append(f"{r.name} " + ", ".join(parts))
    if clauses:
        some_separate = any(not r.config.net.shared_table for r in runs)

        def count(label: str, what: str) -> str:
            d = moves[label]
            up = sum(x > CONVERGES for x in d)
            where = " with a shared table" if label == "user cos" and some_separate else ""
            return f"{what} converge in {up} of {len(d)} finished runs{where}" if d else ""
        said = [c for c in (count("user cos", "the user views"), count("item CKA", "the item views")) if c]
        said = " and ".join(said)
        opening_line = (f"Do the two encoders' views converge? {said[:1].upper() + said[1:]} (epoch 1 → best "
                        f"epoch, a rise of more than {CONVERGES:g} counted; user cos: mean cosine between a user's "
                        "graph embedding and sequence representation; item CKA: linear CKA of the two encoders' item "
                        "views): " + "; ".join(clauses) + ".\n" + _transfer(cka_moves) + _reading(view, runs))
    else:
        opening_line = "Only single-encoder runs have the probe so far: no cross-encoder similarity yet.\n"
    _drawn(plot.draw_dynamics({r.name: view.records.log(r) for r in runs}, figure), figure)
    picture = f"\n![probe fields per epoch]({figure.name})\n"  # the text never depends on matplotlib
    d = runs[0].config.net.embedding_dim
    return (opening_line + f"\nProbe fields ({runs[0].config.train.probe} fixed users and items; research/dynamics.py), "
            "epoch 1 → best epoch; seq unif and graph unif: the uniformity log mean exp(−2‖u − v‖²) over pairs of "
            "the probe users' normalised sequence and graph representations (about "
            f"{random_uniformity(d):.1f} for directions spread at random over the {d}-dimensional sphere, 0 "
            "collapsed); the last column is the item CKA at its highest and the epoch it was reached:\n\n"
            + markdown_table(["run", "epochs"] + [label for _, label in PROBE_FIELDS] + ["item CKA peak (epoch)"], rows)
            + picture
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
        peaks.append(f"{c} is highest at gamma = {best[0]:g} ({best[1]:.4f}; {len(points)} of {swept} values "
                     "finished, a value's seeds averaged)" if len(points) > 1 else
                     f"{c}: 1 of {swept} values finished so far, gamma = {best[0]:g} ({best[1]:.4f})")
    header = ["gamma"] + [f"{c} {what}" for c in cells for what in ("R@10", "seq unif")]
    picture = ""
    if any(len(points) > 1 for points in series.values()):  # a curve needs two values
        _drawn(plot.draw_gamma(series, figure), figure)
        picture = f"\n![test R@10 and uniformity against gamma]({figure.name})\n"
    head = (f"On {dataset}, test R@10 of " + "; ".join(peaks) + ".\n") if peaks else \
        "Not measured yet: no run of the gamma sweep has finished.\n"
    d = view.of(cells[0])[0].config.net.embedding_dim
    return (head + f"\nTest R@10 and the uniformity of the sequence representations (probe, best epoch; about "
            f"{random_uniformity(d):.1f} spread at random over the sphere, 0 collapsed) on {dataset}:\n\n" + markdown_table(header, rows) + picture + "\n"
            + view.pending(view.all_of(cells)))


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
            "matrix, so the mean aggregator is a product with D^-1 A, and attention a softmax over each node's edges "
            "followed by a product with the CSR matrix that holds the attention weights; "
            "no extra dependency, and the same last-layer-at-the-batch fast path as LightGCN. They compute what PyG's "
            "SAGEConv and GATConv compute with the same weights (tests/test_graph_encoders.py compares values and "
            "gradients); their speed beside PyG's layers: BENCHMARKS.md (benchmarks/graph_encoders.py).\n\n"
            + encoder_runs(view, datasets) + seeds_line(view, cells)
            + view.pending(view.all_of([c for c in ("sage", "gat") if c in view.cells])))


def encoder_runs(view: View, datasets: list[str]) -> str:
    """Question 6's finished runs one by one, beside the first-seed LightGCN run on their dataset:
    how long each trained and how its graph view spread (L_GU, the probe's uniformity) and met the
    sequence view (user cos, item CKA), epoch 1 -> best epoch; no value where the record lacks it.
    No seconds: the runs trained on different CPUs beside different loads (BENCHMARKS.md times the
    layers side by side)."""
    rows, dims = [], set()
    for d in datasets:
        others = [r for c in ("sage", "gat") if c in view.cells for r in view.finished(view.of(c, d))]
        if not others:
            continue
        for r in view.finished(view.of("shared", d, first_seed=True)) + others:
            log, best = view.records.log(r), view.records.best_record(r)
            dims.add(r.config.net.embedding_dim)
            name = {"shared": "LightGCN"}.get(r.cell.name, LABELS.get(r.cell.name, r.cell.name))
            rows.append([r.name, name, f"{len(log)} ({best['epoch']})" if best else str(len(log))]
                        + [first_to_best(log, best, key) for key in
                           ("L_GU", "probe_graph_unif_user", "probe_user_cos", "probe_item_cka")])
    if not rows:
        return ""
    spread_out = " or ".join(f"{random_uniformity(d):.1f}" for d in sorted(dims))
    return ("Each run, epoch 1 → best epoch (L_GU: the training epoch's mean graph uniformity, its user and item "
            f"terms summed; graph unif: the probe users' graph representations, about {spread_out} spread at random "
            "over the sphere and 0 collapsed; user cos: a user's graph embedding against its sequence "
            "representation; item CKA: linear CKA of the two encoders' item views). GraphSAGE and GAT end in a "
            "learned linear map, so their output need not keep the table's coordinates: user cos, which compares "
            "coordinates, can stay near 0 while the views agree up to a rotation, which CKA sees:\n\n"
            + markdown_table(["run", "graph encoder", "epochs (best)", "L_GU", "graph unif", "user cos", "item CKA"],
                             rows) + "\n")


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
            diff = difference(view.records, view.of(pair[0], d), view.of(pair[1], d),
                              others=[view.values(c, d) for c in cells if c not in pair])
            if diff is not None:
                clauses.append(f"gsau-rec vs sasrec on {d}: {diff.verdict} ({diff.worded()})")
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
    rows, clauses, changes = [], [], []
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
                changes.append((before, after))
    scale = ""
    if "shared" in view.cells:  # for scale: how far apart gsau-rec's own seeds land on the same data
        ranges = [max(v) - min(v) for d in view.datasets if len(v := view.values("shared", d)) > 1]
        scale = f"; for scale, gsau-rec's seeds on these data land up to {max(ranges):.4f} apart" if ranges else ""
    largest = max((abs(float(np.mean(a)) - b) for *_, b, a in changes), default=0.0)
    head = ("GraphAU's test R@10 before → after aligning layer 0 also with the final embedding: " + ", ".join(clauses)
            + f". The largest change is {largest:.4f}, from one run each without an interval (the old runs have "
            f"no per-user ranks), so none is shown to be more than noise{scale}.\n") if clauses else \
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
        "in the spec's order, resumes where it stopped (`--dry-run` shows each run's state and the training "
        "it has left, `--workers N` trains N at once, `--time-limit 2h` starts only the runs estimated to "
        "finish within it), and rewrites this file; on a lent GPU, `python benchmarks/gpu_study.py` trains them there and "
        "brings their records back"
        + (f" ({on_gpu} of the finished runs were trained on a GPU: train.device in their config.yaml)" if on_gpu
           else "") + ".\n",
        "Protocol: as RESULTS.md (leave-one-out by time, full ranking over all items, best epoch on validation "
        "NDCG@20, the test split reported; the runs use the grid's lr 0.003). A cell of several seeds shows mean "
        "± std (n). A difference of two cells is that of their seed means, with a 95% paired bootstrap interval "
        "over test users (1000 resamples, seeded) and the seed-level standard error sqrt(s_a²/n_a + s_b²/n_b): "
        "a cell of 2+ seeds brings its own seed variance s², a one-seed cell the variance pooled over every cell "
        "of 2+ seeds in its table on that dataset. Its degrees of freedom are Satterthwaite's over the cells "
        "whose seeds enter it (Welch's where both sides have 2+ seeds), so they count the seeds that carry its "
        "spread: a pool that one cell of 2 seeds dominates gives about 1. It is marked significant (*) when the interval "
        "excludes 0 and it exceeds t(0.975, df) times that error (12.71 at 1 df, 4.30 at 2: 2-3 seeds know "
        "their spread only roughly). Where no cell of the table has 2 seeds on a dataset, or their seeds agree "
        "exactly, the interval alone decides, which leaves the seeds' variance untested.\n",
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
