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

grid.py orders the cells and trains them, claims.py keeps workers apart, report.py writes
results.csv and RESULTS.md beside the published figures of paper.yaml, plot.py draws curves.png.
"""

from __future__ import annotations

from pathlib import Path

from gsau.reproduce import grid
from gsau.reproduce.grid import model_order, paper_models
from gsau.reproduce.report import write_report

__all__ = ["model_order", "paper_models", "reproduce", "write_report"]


def reproduce(out, models, datasets, seeds, epochs=None, overrides=(), max_runs=None, dry_run=False,
              report_only=False, progress=True, command="gsau reproduce") -> None:
    out = Path(out)
    if report_only:
        return write_report(out, models, datasets, command)
    cells = grid.plan(models, datasets, seeds, epochs=epochs, overrides=overrides)
    if dry_run:
        return grid.show(out, cells)
    try:
        grid.work(out, cells, epochs=epochs, max_runs=max_runs, progress=progress)
    finally:
        # Also after a failure or Ctrl-C: whatever finished is reported.
        write_report(out, models, datasets, command)
