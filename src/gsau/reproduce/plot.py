"""curves.png: validation NDCG@20 per epoch, one panel per dataset. matplotlib is optional: without
it the figure is not drawn, and nothing else changes."""

from __future__ import annotations

from pathlib import Path

from gsau.atomic import write_atomic
from gsau.reproduce.grid import headline

CURVE = "valid_ndcg@20"  # the model-selection metric, as log.jsonl names it


def logged(runs: list[dict]) -> list[dict]:
    """The runs whose log has a point of the curve."""
    return [r for r in runs if any(CURVE in h for h in r["log"])]


def draw_curves(runs: list[dict], models: list[str], datasets: list[str], path: Path) -> bool:
    """Draw the logged runs' curves into path; False, writing nothing, when matplotlib is not
    installed or no run has a curve."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # no display on training machines
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return False
    runs = logged(runs)
    shown = [d for d in datasets if any(r["dataset"] == d for r in runs)]
    if not shown:
        return False
    main = headline()
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 4), squeeze=False)
    order = [m for m in main if m in models] + [m for m in models if m not in main]
    colors = {m: f"C{i % 10}" for i, m in enumerate(order)}
    for ax, d in zip(axes[0], shown):
        for m in order:
            mine = [r for r in runs if r["dataset"] == d and r["model"] == m]
            for k, r in enumerate(mine):  # every seed, one colour per model
                points = [(h["epoch"], h[CURVE]) for h in r["log"] if CURVE in h]
                ax.plot(*zip(*points), color=colors[m], lw=2 if m in main else 1, label=m if k == 0 else None)
        ax.set(title=d, xlabel="epoch", ylabel="valid NDCG@20")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, dpi=120, format="png"))  # workers may write it at once
    plt.close(fig)
    return True
