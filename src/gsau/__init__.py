"""gsau: graph and sequential recommenders with alignment and uniformity (GSAU, arXiv 2412.04276).

    import gsau
    report = gsau.train("gsau-rec", "toys", out="runs/gsau-rec-toys", gamma=0.1, epochs=200)
    recs = gsau.Recommendations.from_run("runs/gsau-rec-toys")
    recs.top_k("42", k=10)           # [(item id, score), ...] in the dataset's own ids
"""

__version__ = "0.1.0"


def train(model: str, dataset: str, out: str | None = None, config_file: str | None = None,
          progress: bool = True, resume: bool = False, **options) -> dict:
    """Train a preset on a dataset (bundled name, imported dir or file); returns metrics.json's content.
    Keyword options override the preset (`gamma=0.2`, `epochs=50`, `seed=7`, ...); with resume=True
    they may only change what a resumed run may (epochs, threads). Progress lines go to the "gsau"
    logger (silent unless configured); warnings are gsau.errors.GsauWarning."""
    from gsau import runs
    from gsau.config import resolve
    from gsau.trainer import Trainer
    if resume:
        if out is None:
            raise ValueError("resume=True needs out, the run directory to continue")
        cfg = runs.resumed_config(out, options)
    else:
        cfg = resolve(model, config_file, [f"{k}={v}" for k, v in options.items()], dataset=runs.dataset_spec(dataset))
    return Trainer(cfg, out or runs.default_run_dir(cfg), progress=progress).run(resume=resume)


def __getattr__(name):
    # Heavy modules (torch) load only when used, so `gsau data stats` stays fast.
    if name == "Model":
        from gsau.api import Model
        return Model
    if name == "Recommendations":
        from gsau.serving import Recommendations
        return Recommendations
    if name == "ranking_metrics":
        from gsau.metrics import ranking_metrics
        return ranking_metrics
    raise AttributeError(name)
