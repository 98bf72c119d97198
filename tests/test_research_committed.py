"""The committed results/RESEARCH.md must be what `gsau study results/study/study.yaml --report-only`
makes of the committed spec and run records: a number edited by hand, or a report written before a
run's records were complete, fails here."""

from pathlib import Path

import pytest

from gsau.research import report, study
from gsau.research.buckets import RECORD

RESULTS = Path(__file__).resolve().parent.parent / "results"
SPEC = RESULTS / "study" / "study.yaml"
COMMAND = "gsau study results/study/study.yaml"
pytestmark = pytest.mark.skipif(not SPEC.exists(), reason="no committed study in this tree")


def body(text):  # all but the provenance line, which holds the time of writing
    return [line for line in text.splitlines() if not line.startswith("Written by `")]


def test_research_md_is_regenerated_from_the_run_records(tmp_path):
    spec = study.load_spec(SPEC)
    written = report.write_report(spec, RESULTS / "study", COMMAND, tmp_path / "RESEARCH.md", tmp_path,
                                  links_from=RESULTS)
    old, new = body((RESULTS / "RESEARCH.md").read_text()), body(written.read_text())
    stale = [f"committed: {a!r}\nregenerated: {b!r}" for a, b in zip(old, new) if a != b]
    assert not stale and len(old) == len(new), \
        f"results/RESEARCH.md is stale; run `{COMMAND} --report-only`:\n" + "\n".join(stale[:3])


def test_every_finished_study_run_keeps_the_records_the_report_reads():
    for path in sorted((RESULTS / "study" / "runs").glob("*/metrics.json")):
        missing = [n for n in ("config.yaml", "log.jsonl", "masked.json", RECORD) if not (path.parent / n).exists()]
        assert not missing, f"{path.parent.name}: finished (metrics.json) but without {', '.join(missing)}"


def test_every_figure_the_report_links_is_committed():
    """A figure is drawn beside the runs when the report is written; one linked but left out of the
    commit is a broken picture on the front page of the study."""
    import re
    import subprocess
    text = (RESULTS / "RESEARCH.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert linked, "the report links no figure"
    tracked = subprocess.run(["git", "ls-files", *linked], cwd=RESULTS, capture_output=True, text=True)
    if tracked.returncode != 0:  # not a git checkout (an unpacked source tree): the files must exist
        assert all((RESULTS / f).exists() for f in linked)
        return
    assert sorted(tracked.stdout.split()) == sorted(linked), f"linked but not committed: {linked}"
