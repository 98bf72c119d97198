"""benchmarks/run.py's report: ratios computed from the measured rows, and pages from older result
files (no RecBole GSAU row, no bfloat16 rows, no rounds, no step-by-part table) still render."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))  # run.py's siblings (flops), as when it runs as a script


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("benchmarks_run", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _gsau(model, variant, per_step, steps, **extra):
    return {"model": model, "variant": variant, "seconds_per_step": per_step, "steps_per_epoch": steps,
            "seconds_per_epoch": per_step * steps, "eval_users_per_second": 10000.0, "peak_rss_mib": 900.0,
            **extra}


def _recbole(model, per_epoch, batches):
    return {"model": model, "seconds_per_batch": per_epoch / batches, "batches_per_epoch": batches,
            "seconds_per_epoch": per_epoch, "train_samples": 1000}


def _saved(gsau, recbole, **extra):
    return {"command": "python benchmarks/run.py", "started": "2026-11-30 00:00", "cores": 2, "cpu": "test",
            "python": "3.11", "torch": "2.13.0", "matmul_gflops": [100.0, 100.0],
            "args": {"dataset": "beauty", "threads": 2, "repeats": 3, "steps": 20, "recbole_batches": 20},
            "gsau": gsau, "recbole": recbole, **extra}


def test_ratios_come_from_the_rows(report, monkeypatch):
    import flops
    monkeypatch.setattr(flops, "epoch_flops", lambda model, dataset, shortcuts=True: {
        "flops": {"logits": 400e9, "transformer": 600e9}, "total_flops": 1000e9})
    gsau = [_gsau("sasrec", "gsau", 0.08, 250, rounds=3), _gsau("sasrec", "gsau, bfloat16 CE", 0.05, 250, rounds=3),
            _gsau("gsau-rec", "gsau", 0.10, 300, rounds=3),
            _gsau("gsau-rec", "paper batching, naive", 0.50, 300, rounds=3),
            _gsau("lightgcn", "gsau", 0.03, 300, rounds=3)]
    recbole = [_recbole("SASRec", 200.0, 250), _recbole("LightGCN", 27.0, 300), _recbole("GSAU-rec", 270.0, 300)]
    parts = [{"part": "whole step (batches pre-built)", "ms_per_step": 100.0, "share_of_step": 1.0}]
    md = report.render(_saved(gsau, recbole, components=parts))
    assert "| sasrec vs RecBole SASRec | 200.0 | 20.0 | 10.0x |" in md
    assert "| sasrec (bfloat16 CE) vs RecBole SASRec | 200.0 | 12.5 | 16.0x |" in md
    assert "| lightgcn vs RecBole LightGCN | 27.0 | 9.0 | 3.0x |" in md
    assert "| gsau-rec vs RecBole GSAU-rec | 270.0 | 30.0 | 9.0x |" in md
    assert "150.0 / 30.0 s = 5.0x" in md  # the naive per-prefix scheme over gsau's
    assert "| 10.0 | 20.0 | 2.0x |" in md  # floor: 1000 GFLOP at 100 GFLOP/s, against 20 s
    assert "median" in md and "3 rounds" in md and "step goes, by part" in md


def test_an_older_result_file_still_renders(report, monkeypatch):
    import flops
    monkeypatch.setattr(flops, "epoch_flops", lambda model, dataset, shortcuts=True: {
        "flops": {"logits": 1e9}, "total_flops": 1e9})
    gsau = [_gsau("sasrec", "gsau", 0.08, 250), _gsau("gsau-rec", "gsau", 0.10, 300),
            _gsau("gsau-rec", "paper batching, naive", 0.50, 300), _gsau("lightgcn", "gsau", 0.03, 300)]
    md = report.render(_saved(gsau, [_recbole("SASRec", 200.0, 250), _recbole("LightGCN", 27.0, 300)]))
    assert "| sasrec vs RecBole SASRec | 200.0 | 20.0 | 10.0x |" in md
    assert "GSAU-rec" not in md and "bfloat16" not in md and "by part" not in md
    assert "3 repeats" in md and "(peak RSS is that process's)" in md
    no_recbole = report.render(_saved(gsau, []))
    assert "RecBole 1.2.1 (stock" not in no_recbole and "5.0x" in no_recbole


def test_schedules_are_named_with_everything_that_sets_them(report):
    name = report._schedule_name
    assert name({"lr": 0.003}) == "lr 0.003 constant"
    assert name({"lr": 0.003, "lr_schedule": "constant", "batch_size": 256}) == "lr 0.003 constant, batch 256"
    assert name({"lr": 0.003, "lr_schedule": "cosine", "schedule_epochs": 40}) == "lr 0.003 cosine over 40 epochs"
    assert (name({"lr": 0.003, "lr_schedule": "linear", "schedule_epochs": 70, "decay_epochs": 15.0, "warmup_epochs": 2})
            == "lr 0.003 constant, then linear decay over the last 15 of 70 epochs, 2 warm-up epochs")


def test_hand_written_notes_end_the_page(report, monkeypatch):
    import flops
    monkeypatch.setattr(flops, "epoch_flops", lambda model, dataset, shortcuts=True: {
        "flops": {"logits": 400e9}, "total_flops": 400e9})
    gsau = [_gsau("sasrec", "gsau", 0.08, 250), _gsau("gsau-rec", "gsau", 0.10, 300),
            _gsau("gsau-rec", "paper batching, naive", 0.50, 300), _gsau("lightgcn", "gsau", 0.03, 300)]
    saved = _saved(gsau, [_recbole("SASRec", 200.0, 250), _recbole("LightGCN", 27.0, 300)])
    md = report.render(saved, "## Notes\n\nPASSIVE is slow.\n")
    assert md.rstrip().endswith("## Notes\n\nPASSIVE is slow.")
    assert "## Notes" not in report.render(saved)


def test_the_profile_renders_from_new_and_older_result_files(report, monkeypatch):
    """New files keep the profile at the top level (benchmarks/components.py --profile), older ones
    on gsau-rec's row."""
    import flops
    monkeypatch.setattr(flops, "epoch_flops", lambda model, dataset, shortcuts=True: {
        "flops": {"logits": 400e9}, "total_flops": 400e9})
    ops = [{"op": "aten::mm", "share": 0.25, "calls_per_step": 40.0}]
    rows = [_gsau("sasrec", "gsau", 0.08, 250), _gsau("gsau-rec", "gsau", 0.10, 300),
            _gsau("gsau-rec", "paper batching, naive", 0.50, 300), _gsau("lightgcn", "gsau", 0.03, 300)]
    new = report.render(_saved(rows, [], top_ops=ops))
    assert "| `aten::mm` | 25.0% | 40 |" in new and "components.py --model gsau-rec --profile" in new
    rows[1]["top_ops"] = ops
    older = report.render(_saved(rows, []))
    assert "| `aten::mm` | 25.0% | 40 |" in older and "--profile" not in older
    del rows[1]["top_ops"]
    assert "torch.profiler" not in report.render(_saved(rows, []))
