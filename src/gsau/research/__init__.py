"""The study of issue #18: why GSAU works and where it does not, as experiments one command reruns
and a report generated from their records.

    dynamics.py  linear CKA and the per-epoch probe (train.probe): alignment, uniformity and the
                 similarity of the two encoders' views, logged into each epoch's record
    buckets.py   test metrics by user history length and target-item popularity, with seeded
                 bootstrap confidence intervals; each run's per-user ranks as a record
    study.py     the study spec, its runs in the issue's order, and the resumable worker
                 (`gsau study SPEC`), sharing `gsau reproduce`'s claims between workers
    stats.py     the run records, read once, and the statistics over them: spreads, differences of
                 cells with bootstrap intervals and seed errors, significance
    view.py      the spec's runs by cell, dataset and sweep value; the tables the answers share
    collapse.py  question 5: why gsau's L_SA collapses and which change makes it train
    report.py    RESEARCH.md from the spec and the run records on disk alone (questions 1-4, 6-8)
    plot.py      figures (matplotlib optional): `gsau plot RUN_DIR`, the report's figures
"""
