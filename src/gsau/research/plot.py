"""Figures of the study (matplotlib is optional: without it the report's figures are not drawn
and `gsau plot` says how to install it; nothing else changes).

    gsau plot RUN_DIR [--out FILE]    one run's probe fields per epoch (train.probe), and its
                                      validation NDCG@20, into RUN_DIR/dynamics.png
"""

from __future__ import annotations

import json
from pathlib import Path

from gsau.atomic import write_atomic
from gsau.errors import GsauError

# Panels of `gsau plot`: (title, [(log field, label)]).
PANELS = (
    ("alignment (validation pairs)", [("probe_graph_align", "graph"), ("probe_seq_align", "sequence")]),
    ("uniformity", [("probe_graph_unif_user", "graph users"), ("probe_graph_unif_item", "graph items"),
                    ("probe_seq_unif_user", "sequence users"), ("probe_seq_unif_item", "item table")]),
    ("the two encoders' views", [("probe_user_cos", "user cosine"), ("probe_item_cos", "item cosine"),
                                 ("probe_item_cka", "item linear CKA")]),
    ("validation", [("valid_ndcg@20", "NDCG@20")]),
)


def _pyplot():
    """matplotlib.pyplot on a display-less backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # no display on training machines
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: fig.savefig(f, dpi=120, format="png"))  # workers may write it at once


def _series(log: list[dict], key: str) -> tuple[list, list]:
    points = [(h["epoch"], h[key]) for h in log if h.get(key) is not None]
    return ([e for e, _ in points], [v for _, v in points])


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """`gsau plot`: draw a run's probe fields per epoch; the figure's path."""
    run_dir = Path(run_dir)
    log_file = run_dir / "log.jsonl"
    if not log_file.exists():
        raise GsauError(f"{run_dir}: no log.jsonl (not a gsau run directory, or no epoch has finished)")
    log = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    if not any(k.startswith("probe_") for h in log for k in h):
        raise GsauError(f"{log_file}: no probe fields; train with `--set probe=256` to log the dynamics")
    plt = _pyplot()
    if plt is None:
        raise GsauError("gsau plot needs matplotlib: pip install 'gsau[plot]'")
    out = Path(out) if out else run_dir / "dynamics.png"
    panels = [(title, [(label, *_series(log, key)) for key, label in fields]) for title, fields in PANELS]
    _draw_epochs(plt, panels, out, (4.5 * len(PANELS), 3.6), title=run_dir.name)
    return out


def draw_dynamics(logs: dict[str, list[dict]], path: Path) -> bool:
    """The report's question 3: user cosine and item CKA per epoch, one line per run. False, drawing
    nothing, without matplotlib or data."""
    plt = _pyplot()
    if plt is None or not logs:
        return False
    fields = (("probe_user_cos", "user: LightGCN vs SASRec cosine"), ("probe_item_cka", "items: linear CKA"))
    panels = [(title, [(name, *_series(log, key)) for name, log in logs.items()]) for key, title in fields]
    _draw_epochs(plt, panels, path, (11, 4))
    return True


def draw_validation(logs: dict[str, list[dict]], path: Path) -> bool:
    """The report's question 5: validation R@10 per epoch, one line per run (the published gsau's
    collapse, sasrec, the changes trained to early stopping). False, drawing nothing, without
    matplotlib or data."""
    plt = _pyplot()
    if plt is None or not logs:
        return False
    panels = [("validation R@10", [(name, *_series(log, "valid_recall@10")) for name, log in logs.items()])]
    _draw_epochs(plt, panels, path, (7, 4.5))
    return True


def _draw_epochs(plt, panels, path: Path, size, title: str | None = None) -> None:
    """Panels of lines against the epoch: [(title, [(label, epochs, values)])], drawn into path."""
    fig, axes = plt.subplots(1, len(panels), figsize=size, squeeze=False)
    for ax, (name, lines) in zip(axes[0], panels):
        for label, epochs, values in lines:
            if values:
                ax.plot(epochs, values, label=label)
        ax.set(title=name, xlabel="epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def draw_gamma(series: dict[str, list[tuple]], path: Path) -> bool:
    """The report's question 4: test R@10 and the sequence uniformity against gamma, one line per
    preset; series = {cell: [(gamma, mean R@10, mean uniformity or None)]}."""
    plt = _pyplot()
    if plt is None or not series:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), squeeze=False)
    for name, points in series.items():
        points = sorted(points)
        axes[0][0].plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        unif = [p for p in points if p[2] is not None]
        axes[0][1].plot([p[0] for p in unif], [p[2] for p in unif], marker="o", label=name)
    for ax, title in zip(axes[0], ("test R@10", "uniformity of sequence representations")):
        ax.set(title=title, xlabel="gamma")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True
