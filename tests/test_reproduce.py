"""`gsau reproduce`: grid order, skipping and resuming runs, results.csv and RESULTS.md.

Two presets on a tiny synthetic dataset, two epochs each; the runs are shared by the module.
"""

import contextlib
import csv
import io
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from gsau.cli import main
from gsau.config import resolve
from gsau.data.interactions import Interactions
from gsau.reproduce import claims
from gsau.reproduce.grid import catalog_groups, headline, model_order, proposed
from gsau.reproduce.grid import grid as grid_cells
from gsau.runs import run_name
from gsau.trainer import Trainer

SETS = ["batch_size=32", "eval_batch_size=256", "embedding_dim=16", "inner_size=32", "max_len=10", "threads=1"]


def tiny_dataset(directory):
    """60 users over 3 communities of 10 items; each user walks a chain through their community."""
    rng = np.random.default_rng(0)
    seqs = []
    for u in range(60):
        start, n = rng.integers(0, 10), rng.integers(6, 11)
        seqs.append([(u % 3) * 10 + (start + j) % 10 + 1 for j in range(n)])
    indptr = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    Interactions("tiny", np.array([f"u{u}" for u in range(60)]), np.array([f"i{i}" for i in range(1, 31)]),
                 indptr, np.concatenate(seqs).astype(np.int64)).save(directory)
    return directory


def run(*args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["reproduce", *map(str, args)])
    assert rc == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """The same two-cell grid at three moments: after one training, after the rest, and their outputs."""
    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("reproduce")
    data, out = tiny_dataset(root / "tiny"), root / "out"
    args = ["--datasets", data, "--models", "sasrec-u,gsau-rec", "--out", out, "--epochs", 2, "--quiet", "--set", *SETS]
    g = {"data": data, "out": out, "args": args, "runs": out / "runs"}
    g["first"] = run(*args, "--max-runs", 1)
    g["partial_md"] = (out / "RESULTS.md").read_text()
    g["partial_csv"] = (out / "results.csv").read_text()
    g["dry_partial"] = run(*args, "--dry-run")

    # An interrupted sasrec-u run: one epoch trained, last.pt written, no metrics.json.
    cfg = resolve("sasrec-u", None, SETS, dataset=str(data), epochs=1, seed=2020)
    Trainer(cfg, g["runs"] / "sasrec-u-tiny-2020", progress=False, echo=lambda s: None).run()
    (g["runs"] / "sasrec-u-tiny-2020" / "metrics.json").unlink()
    g["log_before"] = (g["runs"] / "sasrec-u-tiny-2020" / "log.jsonl").read_text()
    g["mtime_done"] = (g["runs"] / "gsau-rec-tiny-2020" / "metrics.json").stat().st_mtime_ns
    g["dry_resume"] = run(*args, "--dry-run")
    g["second"] = run(*args)
    yield g
    torch.set_num_threads(threads)


def md_table(md, heading):
    """{model: [cells]} of the first table after `heading`."""
    lines = md[md.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| model"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_grid_order_is_by_importance_then_model_major():
    cells = grid_cells(model_order(["bert4rec", "sasrec", "lightgcn", "gsau", "gsau-rec", "sasrec-u"]),
                           ["beauty", "sports"], [1, 2])
    assert cells[:4] == [("gsau-rec", "beauty", 1), ("gsau-rec", "sports", 1), ("gsau", "beauty", 1), ("gsau", "sports", 1)]
    models = [m for m, d, s in cells if d == "beauty"]
    assert models == ["gsau-rec", "gsau", "sasrec-u", "sasrec"] * 2 + ["lightgcn"] * 2 + ["bert4rec"] * 2
    assert [s for m, d, s in cells if m == "sasrec"] == [1, 1, 2, 2]
    everything = grid_cells(model_order(["sasrec", "sasrec-u", "gsau", "gsau-rec", "bert4rec-u", "graphau",
                                         "directau", "lightgcn", "bert4rec", "gsau-bert4rec"]), ["toys"], [2020])
    assert [m for m, _, _ in everything] == ["gsau-rec", "gsau", "sasrec-u", "sasrec", "lightgcn", "directau",
                                             "graphau", "gsau-bert4rec", "bert4rec-u", "bert4rec"]


def test_grid_order_comes_from_the_presets_catalog():
    # The order the grid had before it was read from the presets' catalog entries.
    assert list(catalog_groups().values()) == [["gsau-rec", "gsau", "sasrec-u", "sasrec"],
                                               ["lightgcn", "directau", "graphau"],
                                               ["gsau-bert4rec", "bert4rec-u", "bert4rec"],
                                               ["gsau-batch", "gsau-items"]]  # ours, after the paper's (role research)
    assert headline() == ["gsau-rec", "gsau", "sasrec-u", "sasrec"]
    assert proposed() == ["gsau", "gsau-rec", "gsau-bert4rec"]


def test_presets_without_a_catalog_entry_train_last(monkeypatch):
    import gsau.reproduce.grid as grid_module
    catalog = {"b": {"group": 2, "priority": 1}, "a": {"group": 1, "priority": 2}, "c": {"group": 1, "priority": 1},
               "plain": {"group": 0, "priority": 10**6}}
    monkeypatch.setattr(grid_module, "preset_names", lambda: list(catalog))
    monkeypatch.setattr(grid_module, "preset_info", lambda name: {"name": name, "role": "baseline", **catalog[name]})
    assert catalog_groups() == {1: ["c", "a"], 2: ["b"]}
    # An installed preset without a catalog entry and one not installed keep the order they were given in.
    assert model_order(["mine", "b", "plain", "a", "c"]) == ["c", "a", "b", "mine", "plain"]
    assert [m for m, _, _ in grid_cells(["mine", "b", "plain", "a", "c"], ["toys"], [1, 2])] == \
        ["c", "a", "c", "a", "b", "b", "mine", "plain", "mine", "plain"]


def test_a_filesystem_without_locks_runs_unclaimed_with_one_warning(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    monkeypatch.setattr(fcntl, "flock", no_locks)
    monkeypatch.setattr(claims, "_unlocked_warned", False)
    for name in ("a", "b"):
        with claims.claim(tmp_path / name) as mine:
            assert mine
    warnings = [r for r in caplog.records if r.name == "gsau" and "cannot be locked" in r.getMessage()]
    assert len(warnings) == 1 and str(tmp_path) in warnings[0].getMessage()
    assert claims.held(tmp_path / "a") is None


def test_max_runs_trains_the_first_cell_only(grid):
    assert "stopping after 1 trainings" in grid["first"]
    assert (grid["runs"] / "gsau-rec-tiny-2020" / "masked.json").exists()
    assert "done    gsau-rec" in grid["dry_partial"] and "todo    sasrec-u" in grid["dry_partial"]
    assert "resume  sasrec-u" in grid["dry_resume"]


def test_finished_run_is_skipped_and_interrupted_one_resumed(grid):
    assert "gsau-rec tiny seed 2020: done, skipped" in grid["second"]
    assert (grid["runs"] / "gsau-rec-tiny-2020" / "metrics.json").stat().st_mtime_ns == grid["mtime_done"]
    assert "resuming" in grid["second"] and "after epoch 1" in grid["second"]
    log = (grid["runs"] / "sasrec-u-tiny-2020" / "log.jsonl").read_text()
    assert log.startswith(grid["log_before"]) and len(log.splitlines()) == 2  # epoch 1 kept, epoch 2 added
    assert (grid["runs"] / "sasrec-u-tiny-2020" / "masked.json").exists()


def test_results_csv(grid):
    partial = list(csv.DictReader(io.StringIO(grid["partial_csv"])))
    assert [r["model"] for r in partial] == ["gsau-rec"]
    with open(grid["out"] / "results.csv") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames[:7] == ["model", "dataset", "seed", "best_epoch", "epochs_run", "train_seconds",
                                     "seconds_per_epoch"]
    for col in ("test_recall@5", "test_ndcg@50", "valid_mrr@20", "masked_test_recall@10", "masked_valid_ndcg@20"):
        assert col in reader.fieldnames
    assert sorted((r["model"], r["dataset"], r["seed"], r["epochs_run"]) for r in rows) == [
        ("gsau-rec", "tiny", "2020", "2"), ("sasrec-u", "tiny", "2020", "2")]
    for r in rows:
        assert all(0 <= float(r[c]) <= 1 for c in reader.fieldnames[7:])


def test_partial_report_shows_missing_cells_and_claims_not_run(grid):
    md = grid["partial_md"]
    table = md_table(md, "### R@10")
    assert table["sasrec-u"] == ["—"] and table["gsau-rec"][0].startswith("**")
    assert "- **tiny**: not run yet" in md
    for figure in ("0.0924", "0.0470", "0.1328", "0.0572", "0.0826", "0.0414", "0.1168", "0.0500",  # authors' logs
                   "0.0921", "0.0531", "0.0569", "0.0314", "0.0970", "0.0580",  # SASRec+SS
                   "0.0928", "0.0523", "0.0560", "0.0323", "0.0939", "0.0538",  # eSASRec
                   "5.16%", "13.40%"):
        assert figure in md, figure


def test_full_report_bolds_the_best_and_checks_the_claim(grid):
    md = (grid["out"] / "RESULTS.md").read_text()
    with open(grid["out"] / "results.csv") as f:
        rows = list(csv.DictReader(f))
    for heading, col in (("### R@10", "test_recall@10"), ("### N@10", "test_ndcg@10"),
                         ("### R@20", "test_recall@20"), ("### N@20", "test_ndcg@20")):
        table = md_table(md, heading)
        best = max(float(r[col]) for r in rows)
        assert set(table) == {"gsau-rec", "sasrec-u"}
        for model, (cell,) in table.items():
            assert cell.startswith("**") == (float(cell.strip("*")) == pytest.approx(best, abs=5e-5)), (heading, model)
    claim = next(line for line in md.splitlines() if line.startswith("- **tiny**") and "sasrec-u" in line)
    assert "not run yet (sasrec-u" not in claim
    assert any(v in claim for v in ("beats it", "does not beat it", "ties")) and "%" in claim
    assert "gsau not run yet" in claim
    masked = md_table(md, "## 5.")
    # tiny's R@10 and N@10 first, then the published datasets' columns, ours empty there.
    assert masked["gsau-rec"][2:] == ["—"] * 6 and "—" not in masked["gsau-rec"][:2]
    assert masked["*eSASRec (published)*"] == ["—", "—", "*0.0928*", "*0.0523*", "*0.0560*", "*0.0323*",
                                              "*0.0939*", "*0.0538*"]
    assert "gsau reproduce --datasets" in md and " UTC" in md


def test_figure(grid):
    pytest.importorskip("matplotlib")
    assert (grid["out"] / "curves.png").stat().st_size > 0
    assert "](curves.png)" in (grid["out"] / "RESULTS.md").read_text()


def test_report_only_recomputes_nothing(grid, tmp_path, monkeypatch, caplog):
    out = tmp_path / "copy"
    shutil.copytree(grid["out"], out)
    args = [a if a != grid["out"] else out for a in grid["args"]]
    (out / "RESULTS.md").unlink()
    (out / "results.csv").unlink()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*")}

    def forbidden(*a, **k):
        raise AssertionError("--report-only must not train or evaluate")
    for name in ("Trainer", "evaluate", "load_run", "resolve"):
        monkeypatch.setattr(f"gsau.reproduce.grid.{name}", forbidden)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # and the report survives without matplotlib
    run(*args, "--report-only")
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*")} == stamps
    # The report reads the same without matplotlib (all but the provenance line, which holds the
    # command and time); only the console says the figure was not redrawn.
    def body(text):
        return [line for line in text.splitlines() if not line.startswith("Written by `")]
    md = (out / "RESULTS.md").read_text()
    assert body(md) == body((grid["out"] / "RESULTS.md").read_text())
    assert "curves.png not redrawn: matplotlib is not installed" in caplog.text
    # The provenance quotes what decides the tables; the training options given with --report-only
    # (seeds, epochs, settings) decide nothing there, so quoting them would misstate where runs came from.
    def provenance(text):
        return next(line for line in text.splitlines() if line.startswith("Written by `"))
    assert "--report-only" in provenance(md)
    assert not any(opt in provenance(md) for opt in ("--seeds", "--epochs", "--set"))
    assert all(opt in provenance((grid["out"] / "RESULTS.md").read_text()) for opt in ("--seeds", "--epochs 2", "--set"))
    assert (out / "results.csv").read_text() == (grid["out"] / "results.csv").read_text()


def test_report_lists_every_setting_that_departs_from_the_presets(grid):
    md = (grid["out"] / "RESULTS.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("- `")]
    for s in SETS:
        key, value = s.split("=")
        if key in ("threads", "eval_batch_size"):
            continue
        section = next(sec for sec in ("data", "net", "train") if any(f"`{sec}.{key}`" in line for line in lines))
        line = next(line for line in lines if line.startswith(f"- `{section}.{key}` = "))
        assert "all 2 finished runs" in line and str(value) in line.split("(preset")[0], line
    assert not any(word in line for line in lines for word in ("threads", "epochs", "eval_batch_size"))


def test_hand_written_notes_are_kept_in_the_report(grid, tmp_path):
    out = tmp_path / "noted"
    shutil.copytree(grid["out"], out)
    (out / "NOTES.md").write_text("sasrec-u collapsed at gamma 0.05 (L_SA 0.002).\n")
    run(*[a if a != grid["out"] else out for a in grid["args"]], "--report-only")
    md = (out / "RESULTS.md").read_text()
    assert md.index("## 8. Notes") > md.index("## 7. Provenance")
    assert md.rstrip().endswith("sasrec-u collapsed at gamma 0.05 (L_SA 0.002).")


def test_claims_are_also_checked_against_the_strongest_baseline_run():
    from gsau.reproduce.report import claims_section

    def run(model, r10):
        return {"model": model, "dataset": "toys", "metrics": {"test": {"recall@10": r10}}}

    runs = [run("sasrec-u", 0.01), run("sasrec", 0.08), run("lightgcn", 0.05), run("gsau-rec", 0.09)]
    line = next(x for x in claims_section(runs, ["gsau-rec", "gsau", "sasrec-u", "sasrec", "lightgcn"],
                                          ["toys"]).splitlines() if x.startswith("- **toys**"))
    assert ("against sasrec-u R@10 0.0100 (paper: +5.16%): gsau-rec R@10 0.0900 beats it, +800.00%, "
            "gsau not run yet") in line
    assert ("against sasrec R@10 0.0800 (the strongest baseline run here): gsau-rec R@10 0.0900 beats it, "
            "+12.50%") in line
    assert "lightgcn" not in line
    # When sasrec-u is the strongest baseline, it is compared once.
    runs[0] = run("sasrec-u", 0.095)
    line = next(x for x in claims_section(runs, ["gsau-rec", "sasrec-u", "sasrec"], ["toys"]).splitlines()
                if x.startswith("- **toys**"))
    assert line.count("against") == 1 and "against sasrec-u R@10 0.0950" in line and "does not beat it, -5.26%" in line


def test_claims_end_with_a_plain_verdict_per_model():
    from gsau.reproduce.report import claims_section

    def run(model, dataset, r10):
        return {"model": model, "dataset": dataset, "metrics": {"test": {"recall@10": r10}}}

    runs = [run("sasrec", "toys", 0.08), run("gsau-rec", "toys", 0.09), run("gsau", "toys", 0.02),
            run("sasrec", "beauty", 0.05), run("lightgcn", "beauty", 0.06), run("gsau-rec", "beauty", 0.054)]
    text = claims_section(runs, ["gsau-rec", "gsau", "sasrec", "lightgcn"], ["beauty", "toys"])
    verdict = next(x for x in text.splitlines() if x.startswith("In short:"))
    assert ("gsau-rec beats the strongest baseline on test R@10 on 1 of 2 datasets "
            "(beauty -10.00% vs lightgcn, toys +12.50% vs sasrec)") in verdict
    assert "gsau beats the strongest baseline on test R@10 on 0 of 1 datasets (toys -75.00% vs sasrec)" in verdict
    assert "Cells with one seed" in verdict
    # with two seeds of every cell compared the caveat goes
    runs = [run(m, "toys", r) for m, r in (("sasrec", 0.08), ("sasrec", 0.082), ("gsau-rec", 0.09), ("gsau-rec", 0.091))]
    assert "Cells with one seed" not in claims_section(runs, ["gsau-rec", "sasrec"], ["toys"])
    assert "Cells with one seed" in claims_section(runs[1:], ["gsau-rec", "sasrec"], ["toys"])


# -- several workers on one OUT ---------------------------------------------------------------------
def worker_args(grid, out, models):
    args = list(grid["args"])
    args[args.index("--models") + 1] = models
    args[args.index("--out") + 1] = out
    args[args.index("--epochs") + 1] = 1
    return args


def test_a_run_held_by_another_worker_is_passed_over(grid, tmp_path):
    out = tmp_path / "shared"
    held_dir = out / "runs" / run_name("gsau-rec", str(grid["data"]), 2020)
    with claims.claim(held_dir) as mine:
        assert mine
        with claims.claim(held_dir) as second:  # a second claim, even from this process, is refused
            assert not second
        assert f"pid {os.getpid()}" in claims.held(held_dir)
        dry = run(*worker_args(grid, out, "gsau-rec,sasrec-u"), "--dry-run")
        assert f"(held by {os.uname().nodename} pid {os.getpid()}" in dry and "1 held by other workers" in dry
        text = run(*worker_args(grid, out, "gsau-rec,sasrec-u"))
    assert f"gsau-rec tiny seed 2020: held by another worker ({os.uname().nodename} pid {os.getpid()}" in text
    assert not (held_dir / "log.jsonl").exists()  # untouched by this worker
    assert (out / "runs" / run_name("sasrec-u", str(grid["data"]), 2020) / "metrics.json").exists()
    # Released: nobody holds it now, and the next worker trains it.
    assert claims.held(held_dir) is None
    text = run(*worker_args(grid, out, "gsau-rec,sasrec-u"))
    assert "gsau-rec tiny seed 2020: training" in text and "sasrec-u tiny seed 2020: done, skipped" in text


def test_a_killed_worker_leaves_no_claim_behind(tmp_path):
    path = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from gsau.reproduce.claims import claim\n"
                               "with claim(Path(sys.argv[1])) as mine:\n"
                               "    print(mine, flush=True); time.sleep(60)", str(path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "True"
        assert f"pid {holder.pid}" in claims.held(path)
        with claims.claim(path) as mine:
            assert not mine
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert claims.held(path) is None and (path / claims.CLAIM).exists()  # the stale file blocks nothing
    with claims.claim(path) as mine:
        assert mine


def test_two_workers_at_once_train_each_run_once(grid, tmp_path):
    out = tmp_path / "pair"
    args = ["-m", "gsau.cli", "reproduce", *map(str, worker_args(grid, out, "gsau-rec,sasrec-u,sasrec"))]
    args[args.index("--epochs") + 1] = "2"  # long enough for the two to overlap
    workers = [subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    # They ran at the same time (each trained something, one passed over a run the other held), and
    # no run was trained twice.
    assert all(": training" in o for o in outputs), outputs
    assert any("held by another worker" in o for o in outputs), outputs
    both = "".join(outputs)
    for model in ("gsau-rec", "sasrec-u", "sasrec"):
        assert both.count(f"{model} tiny seed 2020: training") == 1, both
        log = (out / "runs" / run_name(model, str(grid["data"]), 2020) / "log.jsonl").read_text()
        assert len(log.splitlines()) == 2


def test_a_run_finished_by_another_worker_after_the_first_look_is_not_retrained(grid, monkeypatch, tmp_path):
    # The first look (before claiming) sees the run unfinished, as when another worker finishes it
    # in between; the decision is taken again under the claim.
    from gsau.runs import run_state as real
    looks = []

    def stale_once(path):
        looks.append(path)
        return "todo" if len(looks) == 1 else real(path)
    monkeypatch.setattr("gsau.reproduce.grid.run_state", stale_once)
    out = tmp_path / "copy"
    shutil.copytree(grid["out"], out)
    done = out / "runs" / "gsau-rec-tiny-2020"
    stamp = (done / "metrics.json").stat().st_mtime_ns
    text = run(*[{"sasrec-u,gsau-rec": "gsau-rec", grid["out"]: out}.get(a, a) for a in grid["args"]])
    assert "gsau-rec tiny seed 2020: done, skipped" in text and "training" not in text
    assert (done / "metrics.json").stat().st_mtime_ns == stamp


def test_several_seeds_show_mean_and_standard_deviation(grid, tmp_path):
    """A second seed of gsau-rec (its record copied, seed and test R@10 changed by hand): the cell
    reads mean ± sample standard deviation over the seeds, the csv keeps one row per seed."""
    import json
    import yaml
    out = tmp_path / "seeds"
    shutil.copytree(grid["out"], out, ignore=shutil.ignore_patterns("*.pt"))
    first, second = out / "runs" / "gsau-rec-tiny-2020", out / "runs" / "gsau-rec-tiny-2021"
    shutil.copytree(first, second)
    cfg = yaml.safe_load((second / "config.yaml").read_text())
    cfg["train"]["seed"] = 2021
    (second / "config.yaml").write_text(yaml.safe_dump(cfg))
    for path, recall in ((first, 0.30), (second, 0.40)):
        metrics = json.loads((path / "metrics.json").read_text())
        metrics["test"]["recall@10"] = recall
        (path / "metrics.json").write_text(json.dumps(metrics))
    args = [a if a != grid["out"] else out for a in grid["args"]]
    run(*args, "--seeds", "2020,2021", "--report-only")
    md = (out / "RESULTS.md").read_text()
    # mean 0.35; sample std sqrt(((0.30 - 0.35)^2 + (0.40 - 0.35)^2) / 1) = 0.0707
    assert md_table(md, "### R@10")["gsau-rec"] == ["**0.3500 ± 0.0707 (n=2)**"]
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted((r["model"], r["seed"], r["test_recall@10"]) for r in rows if r["model"] == "gsau-rec") == \
        [("gsau-rec", "2020", "0.3"), ("gsau-rec", "2021", "0.4")]


def test_a_cell_stopped_inside_its_first_epoch_is_trained_afresh_and_a_stranded_one_skipped(tmp_path):
    """Killed before epoch 1 ended, a run leaves only its config and data fingerprint: the grid
    trains it afresh there. A run with epochs on record but no checkpoint (its weights left on
    another machine) is skipped with a reason, not trained over."""
    from gsau.trainer import Callback
    data, out = tiny_dataset(tmp_path / "tiny"), tmp_path / "out"
    args = ["--datasets", data, "--models", "sasrec,sasrec-u", "--out", out, "--epochs", 1, "--quiet", "--set", *SETS]

    class Kill(Callback):
        def on_train_start(self, trainer):
            raise KeyboardInterrupt

    for model in ("sasrec", "sasrec-u"):
        cfg = resolve(model, None, SETS, dataset=str(data), epochs=1, seed=2020)
        with pytest.raises(KeyboardInterrupt):
            Trainer(cfg, out / "runs" / f"{model}-tiny-2020", progress=False, echo=lambda s: None, callbacks=[Kill()]).run()
    (out / "runs" / "sasrec-u-tiny-2020" / "log.jsonl").write_text('{"epoch": 0}\n')  # an epoch, no last.pt
    listed = run(*args, "--dry-run")
    assert "partial  sasrec-u" in listed and "1 to train, 1 partial (epochs on record, no last.pt" in listed
    printed = run(*args)
    assert "sasrec tiny seed 2020: training ->" in printed and "finished" in printed
    assert (out / "runs" / "sasrec-tiny-2020" / "masked.json").exists()
    assert "sasrec-u tiny seed 2020: skipped" in printed and "no checkpoint (last.pt) to resume" in printed
    assert (out / "runs" / "sasrec-u-tiny-2020" / "log.jsonl").read_text() == '{"epoch": 0}\n'
