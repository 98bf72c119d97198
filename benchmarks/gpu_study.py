#!/usr/bin/env python3
"""The research study on a lent GPU machine, one command sized to its limits (a command runs at most
10 minutes; only files written under $OUT come back, a few of them):

    python benchmarks/gpu_study.py --minutes 8 --workers 8 --archive $OUT/study-runs.tar.gz [--questions 1,2]

1. trains the spec's runs in its order with `gsau study` (W workers, each run its own process, all
   on the one GPU) until they are done or --minutes have passed, then stops the workers (a run cut
   short is lost with the machine: its checkpoint is too large to bring back);
2. packs the records of every run that finished in this call (config, log, metrics, masked
   metrics, per-user ranks; no weights) into one archive, with summary.json (device, torch, date,
   per run: epochs, median seconds an epoch, test R@10) and the workers' log;
3. back here, `python benchmarks/gpu_study.py --unpack FILE` adds those runs to results/study/runs,
   each checked against the spec's plan, never over a run already there; then
   `gsau study results/study/study.yaml --report-only` rewrites RESEARCH.md.

A run's config records the device it trained on (runtime options do not make it another run).
CI runs the whole cycle on the CPU (`--device cpu`, a tiny spec): tests/test_gpu_study.py.

With the device tool: the checkout travels, ../shared/data does not, and gsau is not installed
there. For question 7 (Yelp, never committed) copy the file into a folder git ignores and carry it:
here `mkdir -p .gpu-data && cp ../shared/data/Yelp.txt.gz .gpu-data/ && echo /.gpu-data/ >>
.git/info/exclude`; there, with carry [".gpu-data"]:

    mkdir -p ../shared/data && cp .gpu-data/Yelp.txt.gz ../shared/data/ && export PYTHONPATH=src &&
    python benchmarks/gpu_study.py --minutes 8 --workers 8 --questions 7

(the archive lands in $OUT); here `python benchmarks/gpu_study.py --unpack FILE`.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "results" / "study" / "study.yaml"
KEPT = ("config.yaml", "data.json", "log.jsonl", "metrics.json", "masked.json", "ranks.json.gz")  # no weights


def _planned(spec_path: str, out: Path | None = None, questions: str | None = None):
    from gsau.research import study
    spec = study.load_spec(spec_path)
    chosen = {int(q) for q in questions.split(",") if q.strip()} if questions else None
    runs = study.plan(spec, out or spec.spec.parent, questions=chosen)
    return spec, [r for r in runs if not r.same_as]


def _summary_row(path: Path) -> dict:
    """A finished run's figures for the summary; a record it cannot read leaves its fields None
    rather than losing the archive."""
    row = {"run": path.name, "epochs": None, "best_epoch": None, "seconds_per_epoch": None, "test_recall@10": None}
    try:
        log = [json.loads(x) for x in (path / "log.jsonl").read_text().splitlines() if x.strip()]
        metrics = json.loads((path / "metrics.json").read_text())
        seconds = [h.get("train_seconds") for h in log]
        timed = [x for x in seconds[1:] if x is not None] or [x for x in seconds if x is not None]  # epoch 1 warms up
        row.update(epochs=len(log), best_epoch=metrics.get("best_epoch"),
                   seconds_per_epoch=round(statistics.median(timed), 2) if timed else None,
                   **{"test_recall@10": metrics.get("test", {}).get("recall@10")})
    except (OSError, ValueError, AttributeError) as e:
        row["error"] = str(e)
    return row


def _figure(value, form: str) -> str:
    return "—" if value is None else format(value, form)


def train(a) -> int:
    from gsau.research import study
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu import device_facts

    spec, runs = _planned(a.spec, questions=a.questions)
    before = {r.name for r in runs if r.present and study.complete(r.path)}
    # Runs that came with epochs but without their weights (in progress on another machine) are
    # skipped by the study; they are not this call's to report.
    stranded_before = {r.name for r in runs if study.stranded(r.path)}
    archive = Path(a.archive)
    archive.parent.mkdir(parents=True, exist_ok=True)
    log_path = Path(tempfile.mkdtemp(prefix="gsau-gpu-study-")) / "study.log"
    threads = a.threads or max(1, (os.cpu_count() or 1) // a.workers)
    cmd = [sys.executable, "-m", "gsau", "study", str(a.spec), "--workers", str(a.workers), "--threads", str(threads),
           "--device", a.device, "--quiet", "--no-report"] + (["--questions", a.questions] if a.questions else [])
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("OMP_WAIT_POLICY", None)  # PASSIVE slows multi-threaded runs (benchmarks/NOTES.md)
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        # A session of its own, so the deadline stops the workers the study spawned too.
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=a.minutes * 60)
            stopped = False
        except subprocess.TimeoutExpired:
            stopped = True
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            code = 0
    wall = time.perf_counter() - t0
    finished = [r for r in runs if r.present and r.name not in before and study.complete(r.path)]
    cut = [{"run": r.name, "epochs": len((r.path / "log.jsonl").read_text().splitlines())}
           for r in runs if r.name not in before | stranded_before and not study.complete(r.path)
           and (r.path / "log.jsonl").exists()]
    summary = {"facts": device_facts(a.device), "minutes": a.minutes, "wall_seconds": round(wall, 1),
               "workers": a.workers, "threads": threads, "stopped_at_deadline": stopped, "study_exit": code,
               "finished": [_summary_row(r.path) for r in finished], "cut_short": cut}
    with tarfile.open(archive, "w:gz") as tar:
        for r in finished:
            for name in KEPT:
                if (r.path / name).exists():
                    tar.add(r.path / name, arcname=f"runs/{r.name}/{name}")
        data = json.dumps(summary, indent=1).encode()
        info = tarfile.TarInfo("summary.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        tar.add(log_path, arcname="study.log")
    shutil.rmtree(log_path.parent, ignore_errors=True)
    facts = summary["facts"]
    print(f"{facts['name']} ({a.device}), torch {facts['torch']}, {facts['date']}: {len(finished)} runs finished in "
          f"{wall / 60:.1f} min with {a.workers} workers x {threads} threads"
          + (f"; stopped at the {a.minutes:g}-minute deadline" if stopped else ""))
    for row in summary["finished"]:
        print(f"  {row['run']:<36} {_figure(row['epochs'], '>4')} epochs  {_figure(row['seconds_per_epoch'], '>7.2f')} "
              f"s/epoch  best {_figure(row['best_epoch'], '>3')}  test R@10 {_figure(row['test_recall@10'], '.4f')}")
    for row in cut:
        print(f"  {row['run']:<36} cut short after {row['epochs']} epochs (not brought back)")
    print(f"wrote {archive}")
    if code != 0:
        print(f"gsau study exited with {code}; the last lines of its log are in the archive (study.log)", file=sys.stderr)
    return 0 if code == 0 else 1


def _members(tar: tarfile.TarFile) -> dict[str, dict[str, bytes]]:
    """{run name: {file: bytes}} of an archive this script wrote; anything else is refused."""
    runs: dict[str, dict[str, bytes]] = {}
    for m in tar.getmembers():
        if m.name in ("summary.json", "study.log") or m.isdir():  # folders: an archive packed again by hand
            continue
        parts = m.name.split("/")
        if not m.isfile() or len(parts) != 3 or parts[0] != "runs" or parts[2] not in KEPT or parts[1] in ("", ".", ".."):
            raise SystemExit(f"{tar.name}: {m.name}: not a record this script packs; refused")
        runs.setdefault(parts[1], {})[parts[2]] = tar.extractfile(m).read()
    return runs


def unpack(a) -> int:
    from gsau.research import study
    archive = Path(a.unpack)
    try:
        tar = tarfile.open(archive, "r:gz")
    except (OSError, tarfile.TarError) as e:
        raise SystemExit(f"{archive}: cannot read ({e})") from None
    with tar:
        runs = _members(tar)
        member = tar.extractfile("summary.json") if "summary.json" in tar.getnames() else None
        try:
            summary = json.loads(member.read()) if member is not None else {}
        except ValueError:
            summary = {}  # the runs' own records are what counts; the summary only names the device
    _, planned = _planned(a.spec, a.into)
    by_name = {r.name: r for r in planned}
    added = 0
    for name, files in sorted(runs.items()):
        run = by_name.get(name)
        if run is None:
            print(f"{name}: not a run of {a.spec}, left out")
            continue
        if study.complete(run.path):
            print(f"{name}: already in {run.path.parent}, left as it is")
            continue
        if run.path.exists():
            what = ("in progress here (last.pt)" if (run.path / "last.pt").exists()
                    else "a partial run here (no checkpoint)")
            print(f"{name}: {what}; left as it is: move {run.path} away to add the archive's")
            continue
        missing = [f for f in KEPT if f not in files]
        if missing:
            print(f"{name}: records incomplete (no {', '.join(missing)}), left out")
            continue
        staging = run.path.parent / f".{name}.unpacking"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for file, data in files.items():
            (staging / file).write_bytes(data)
        # The records must be a finished run of the planned configuration, as the report requires.
        staged = dataclasses.replace(run, path=staging)
        problems = study.differences(staged)
        if problems or not study.complete(staging):
            shutil.rmtree(staging)
            print(f"{name}: " + (f"another configuration ({', '.join(problems)})" if problems
                                 else "records incomplete") + ", left out")
            continue
        staging.rename(run.path)
        added += 1
        print(f"{name}: added")
    facts = summary.get("facts", {})
    print(f"{added} of {len(runs)} runs added to {Path(a.into or Path(a.spec).parent) / 'runs'}"
          + (f" (trained on {facts.get('name')}, {facts.get('date')})" if facts else "")
          + f"; now `gsau study {a.spec} --report-only`")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", default=str(SPEC), help="the study spec (default results/study/study.yaml)")
    p.add_argument("--questions", metavar="Q,...", help="only the runs of these questions")
    p.add_argument("--workers", type=int, default=8, help="runs trained at once on the device (default 8)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (default: cores / workers)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (how CI tests this script)")
    p.add_argument("--minutes", type=float, default=8.0, help="stop the workers after this long (default 8)")
    p.add_argument("--archive", help="where the records go (default $OUT/study-runs.tar.gz)")
    p.add_argument("--unpack", metavar="FILE", help="here: add an archive's runs to the study's runs")
    p.add_argument("--into", help="with --unpack: the study directory (default: the spec's)")
    a = p.parse_args(argv)
    from gsau.errors import GsauError
    try:
        if a.unpack:
            return unpack(a)
        if not a.archive:
            if not os.environ.get("OUT"):
                p.error("--archive FILE is needed where $OUT is not set")
            a.archive = str(Path(os.environ["OUT"]) / "study-runs.tar.gz")
        return train(a)
    except GsauError as e:  # a bad spec or record: one line, no traceback
        print(f"gpu_study: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
