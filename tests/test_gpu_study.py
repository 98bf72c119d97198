"""benchmarks/gpu_study.py trains the study on a lent GPU and brings back its records; CI runs the
whole cycle on the CPU on a tiny spec, so the command is known to work before a GPU is lent."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from conftest import block_cycles

from gsau.research import report, study

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_study.py"
TINY = ["batch_size=32", "epochs=2", "threads=1", "embedding_dim=8", "inner_size=16", "n_layers=1", "max_len=8", "probe=8",
        "eval_batch_size=64"]


def make_study(directory: Path) -> Path:
    block_cycles(40, 2, 8, name="data").save(directory / "data")
    spec = {"set": TINY, "datasets": ["data"], "seeds": [1], "cells": [
        {"name": "a", "question": 1, "model": "sasrec", "seeds": [1, 2]},
        {"name": "b", "question": 2, "model": "gsau-rec"}]}
    (directory / "study.yaml").write_text(json.dumps(spec))
    return directory / "study.yaml"


def script(*args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_the_study_is_trained_packed_and_unpacked_beside_the_runs_already_here(tmp_path):
    device, here = tmp_path / "device", tmp_path / "here"
    device.mkdir()
    spec = make_study(device)
    shutil.copytree(device, here)  # the checkout here, before the device trains
    # A run already finished here and on the device alike is neither packed nor replaced.
    assert study.work([study.plan(study.load_spec(spec), device)[0]], progress=False) == 1
    shutil.copytree(device / "runs", here / "runs")
    before = (here / "runs" / "a-data-1" / "metrics.json").read_bytes()

    archive = tmp_path / "out" / "study-runs.tar.gz"
    proc = script("--spec", spec, "--device", "cpu", "--workers", 2, "--threads", 1, "--minutes", 4,
                  "--archive", archive)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 runs finished" in proc.stdout and "a-data-2" in proc.stdout and "b-data-1" in proc.stdout
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        summary = json.loads(tar.extractfile("summary.json").read())
    assert sorted({n.split("/")[1] for n in names if n.startswith("runs/")}) == ["a-data-2", "b-data-1"]
    assert not any(n.endswith(".pt") for n in names) and "study.log" in names
    assert summary["facts"]["device"] == "cpu" and summary["workers"] == 2 and not summary["stopped_at_deadline"]
    assert {r["run"]: r["epochs"] for r in summary["finished"]} == {"a-data-2": 2, "b-data-1": 2}

    proc = script("--spec", here / "study.yaml", "--unpack", archive)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "a-data-2: added" in proc.stdout and "b-data-1: added" in proc.stdout and "2 of 2 runs added" in proc.stdout
    plan = study.plan(study.load_spec(here / "study.yaml"), here)
    assert [study.state_of(r) for r in plan] == ["done", "done", "done"]
    assert (here / "runs" / "a-data-1" / "metrics.json").read_bytes() == before
    # Unpacked twice: nothing is replaced.
    proc = script("--spec", here / "study.yaml", "--unpack", archive)
    assert "already in" in proc.stdout and "0 of 2 runs added" in proc.stdout
    # The report says how many of its runs a GPU trained (their recorded train.device).
    config = here / "runs" / "b-data-1" / "config.yaml"
    config.write_text(config.read_text().replace("device: cpu", "device: cuda"))
    text = report.write_report(study.load_spec(here / "study.yaml"), here, "gsau study x", here / "R.md").read_text()
    assert "3 of 3 runs finished" in text and "(1 of the finished runs were trained on a GPU: train.device" in text


def test_records_of_another_configuration_or_a_foreign_file_are_refused(tmp_path):
    device, here = tmp_path / "device", tmp_path / "here"
    device.mkdir()
    spec = make_study(device)
    shutil.copytree(device, here)
    run = study.plan(study.load_spec(spec), device)[0]
    assert study.work([run], progress=False) == 1
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("config.yaml", "data.json", "log.jsonl", "metrics.json", "masked.json", "ranks.json.gz"):
            tar.add(run.path / name, arcname=f"runs/{run.name}/{name}")
    # The plan here has another learning rate: the records are not this spec's run.
    text = (here / "study.yaml").read_text().replace('"epochs=2"', '"epochs=2", "lr=0.002"')
    (here / "study.yaml").write_text(text)
    proc = script("--spec", here / "study.yaml", "--unpack", archive)
    assert proc.returncode == 0 and "a-data-1: another configuration (lr " in proc.stdout
    assert not (here / "runs" / "a-data-1").exists() and "0 of 1 runs added" in proc.stdout
    # Records without their config cannot be checked against the plan: left out.
    (here / "study.yaml").write_text(text.replace(', "lr=0.002"', ""))
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("log.jsonl", "metrics.json", "masked.json", "ranks.json.gz"):
            tar.add(run.path / name, arcname=f"runs/{run.name}/{name}")
    proc = script("--spec", here / "study.yaml", "--unpack", archive)
    assert "a-data-1: records incomplete (no config.yaml, data.json), left out" in proc.stdout
    # A partial run here (stopped inside its first epoch) is not replaced behind anyone's back.
    (here / "runs" / "a-data-1").mkdir(parents=True)
    (here / "runs" / "a-data-1" / "config.yaml").write_text("{}")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(run.path, arcname=f"runs/{run.name}", recursive=False)  # a folder entry, as tar writes them
        for name in ("config.yaml", "data.json", "log.jsonl", "metrics.json", "masked.json", "ranks.json.gz"):
            tar.add(run.path / name, arcname=f"runs/{run.name}/{name}")
    proc = script("--spec", here / "study.yaml", "--unpack", archive)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "a-data-1: a partial run here (no checkpoint); left as it is: move" in proc.stdout
    shutil.rmtree(here / "runs" / "a-data-1")
    proc = script("--spec", here / "study.yaml", "--unpack", archive)
    assert f"a-data-1: added" in proc.stdout and f"1 of 1 runs added to {here / 'runs'}" in proc.stdout
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(run.path / "config.yaml", arcname="../evil.yaml")
    proc = script("--spec", here / "study.yaml", "--unpack", archive)
    assert proc.returncode == 1 and "../evil.yaml: not a record this script packs; refused" in proc.stderr
    assert not (tmp_path / "evil.yaml").exists()


def test_the_deadline_stops_the_workers_and_nothing_cut_short_is_packed(tmp_path):
    spec = make_study(tmp_path)
    text = spec.read_text().replace('"epochs=2"', '"epochs=1000000", "patience=1000000"')  # never ends in time
    spec.write_text(text)
    # A run that came with its epochs but not its weights: skipped there, not reported as cut short.
    (tmp_path / "runs" / "b-data-1").mkdir(parents=True)
    (tmp_path / "runs" / "b-data-1" / "log.jsonl").write_text('{"epoch": 0}\n')
    archive = tmp_path / "a.tar.gz"
    proc = script("--spec", spec, "--device", "cpu", "--workers", 2, "--threads", 1, "--minutes", 0.4,
                  "--archive", archive)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "0 runs finished" in proc.stdout and "stopped at the 0.4-minute deadline" in proc.stdout
    assert "b-data-1" not in proc.stdout
    with tarfile.open(archive) as tar:
        assert not [n for n in tar.getnames() if n.startswith("runs/")]
        summary = json.loads(tar.extractfile("summary.json").read())
        assert "a-data-1: training" in tar.extractfile("study.log").read().decode()
    assert summary["stopped_at_deadline"] and summary["finished"] == []
    # Both workers were stopped with the study: none of its processes is left training.
    left = subprocess.run(["pgrep", "-f", f"study {spec}"], capture_output=True, text=True).stdout.split()
    assert left == []


def test_a_bad_spec_is_one_line(tmp_path):
    (tmp_path / "study.yaml").write_text("cells: [{name: a, question: 1, model: nope}]\n")
    proc = script("--spec", tmp_path / "study.yaml", "--unpack", tmp_path / "none.tar.gz")
    assert proc.returncode == 1 and "none.tar.gz: cannot read" in proc.stderr and "Traceback" not in proc.stderr
    proc = script("--spec", tmp_path / "study.yaml", "--device", "cpu", "--archive", tmp_path / "a.tar.gz")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
