"""The committed results/ must be what `gsau reproduce --report-only` makes of the committed run
records: a table edited by hand, or a report written before a run's records were complete, fails here."""

import csv
import shutil
from pathlib import Path

import pytest

from gsau.data.interactions import BUNDLED
from gsau.reproduce import model_order, paper_models, write_report
from gsau.reproduce.report import collect, csv_rows

RESULTS = Path(__file__).resolve().parent.parent / "results"
pytestmark = pytest.mark.skipif(not (RESULTS / "runs").is_dir(), reason="no committed results in this tree")


def finished_runs():
    return sorted(p.parent for p in (RESULTS / "runs").glob("*/metrics.json"))


def test_every_finished_run_keeps_its_whole_record():
    assert finished_runs(), "results/runs holds no finished run"
    for path in finished_runs():
        missing = [n for n in ("config.yaml", "log.jsonl", "masked.json") if not (path / n).exists()]
        assert not missing, f"{path.name}: finished (metrics.json) but without {', '.join(missing)}"


def test_results_csv_is_regenerated_from_the_run_records():
    committed = list(csv.DictReader((RESULTS / "results.csv").open()))
    regenerated = [{k: str(v) for k, v in row.items()} for row in csv_rows(collect(RESULTS))]
    assert [(r["model"], r["dataset"], r["seed"]) for r in committed] == \
           [(r["model"], r["dataset"], r["seed"]) for r in regenerated]
    for old, new in zip(committed, regenerated):
        assert old == {k: new.get(k, "") for k in old}, f"results.csv row {old['model']} {old['dataset']} is stale"


def test_results_md_is_regenerated_from_the_run_records(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    for path in finished_runs():
        shutil.copytree(path, out / "runs" / path.name, ignore=shutil.ignore_patterns("*.pt", ".claim"))
    if (RESULTS / "NOTES.md").exists():
        shutil.copy(RESULTS / "NOTES.md", out / "NOTES.md")
    write_report(out, model_order(paper_models()), list(BUNDLED), "gsau reproduce --report-only")

    def body(text):  # all but the provenance line, which holds the time of writing
        return [line for line in text.splitlines() if not line.startswith("Written by `")]

    old, new = body((RESULTS / "RESULTS.md").read_text()), body((out / "RESULTS.md").read_text())
    stale = [f"committed: {a!r}\nregenerated: {b!r}" for a, b in zip(old, new) if a != b]
    assert not stale and len(old) == len(new), "results/RESULTS.md is stale; run `gsau reproduce " \
        "--datasets beauty,sports,toys --report-only`:\n" + "\n".join(stale[:3])

    # The figure: only where matplotlib is installed (the report above must not need it). PNGs from
    # one matplotlib version are byte-identical for the same data; another version may render
    # differently, so then only the size is compared.
    pytest.importorskip("matplotlib")
    import matplotlib
    committed, drawn = (RESULTS / "curves.png").read_bytes(), (out / "curves.png").read_bytes()
    if f"Matplotlib version{matplotlib.__version__},".encode() in committed:
        assert drawn == committed, "results/curves.png is stale; run `gsau reproduce --datasets beauty,sports,toys " \
            "--report-only`"
    else:
        assert drawn[16:24] == committed[16:24], "results/curves.png has other dimensions (other datasets?)"
