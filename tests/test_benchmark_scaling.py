"""benchmarks/scaling.py: its growth fits, its CSV writer (read back by the importer), the Toys
table from run directories, and a --quick run end to end."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import scaling  # noqa: E402

from gsau.data import load_dataset  # noqa: E402
from gsau.data.synth import synthesize  # noqa: E402


def test_slope_and_fits_recover_the_exponents():
    assert scaling.slope([1, 10, 100], [3, 300, 30_000]) == pytest.approx(2.0)
    assert scaling.slope([5], [1]) is None
    rows = [{"groups": ["interactions"], "model": "sasrec", "variant": "exact", "interactions": n,
             "epoch_cpu_seconds": 2 * n ** 1.5, "step_cpu_seconds": n ** 0.5, "steps_per_epoch": 2 * n,
             "train_peak_mib": 100.0} for n in (10, 100, 1000)]
    (fit,) = scaling.fits(rows, "interactions", "interactions")
    assert (fit["points"], round(fit["epoch"], 6), round(fit["step"], 6), round(fit["steps"], 6), round(fit["memory"], 6)) \
        == (3, 1.5, 0.5, 1.0, 0.0)


def test_the_csv_writer_imports_back_to_the_same_dataset(tmp_path):
    data = synthesize(300, 120, 4_000, seed=2).data
    scaling.write_csv(data, tmp_path / "x.csv", block=777)  # several blocks
    back = load_dataset(tmp_path / "x.csv", min_user=1, min_item=1)
    for field in ("user_ids", "item_ids", "indptr", "items"):
        np.testing.assert_array_equal(getattr(back, field), getattr(data, field))
    lines = (tmp_path / "x.csv").read_text().splitlines()
    assert lines[0] == "user,item,timestamp" and len(lines) == 4_001
    assert lines[1:] != sorted(lines[1:])  # shuffled: the importer has to order by time


def fake_run(directory: Path, net: dict, test: dict, train: dict | None = None) -> str:
    directory.mkdir()
    log = [{"epoch": e, "valid_ndcg@20": 0.01 * e, "valid_recall@10": 0.02 * e, "train_seconds": 10.0 + e}
           for e in (1, 2)]
    (directory / "log.jsonl").write_text("".join(json.dumps(h) + "\n" for h in log))
    (directory / "config.yaml").write_text(yaml.safe_dump({"model": "gsau-rec", "data": {"dataset": "toys"}, "net": net,
                                                          "train": {"lr": 0.003, "epochs": 2, "threads": 1,
                                                                    **(train or {})}}))
    (directory / "metrics.json").write_text(json.dumps({"best_epoch": 2, "test": test}))
    return str(directory)


def test_the_toys_table_reads_run_directories(tmp_path):
    sampled = fake_run(tmp_path / "sampled", {"sequence_loss": "sampled_ce", "sampling": "popularity",
                                             "sampled_negatives": 7}, {"recall@10": 0.5, "ndcg@10": 0.25})
    exact = fake_run(tmp_path / "exact", {"sequence_loss": "ce"}, {"recall@10": 0.4, "ndcg@10": 0.3})
    record = tmp_path / "record"
    record.mkdir()
    log = [{"valid_ndcg@20": 0.1, "valid_recall@10": 0.04, "train_seconds": 5.0}] * 4
    (record / "log.jsonl").write_text("".join(json.dumps(h) + "\n" for h in log))
    approx = fake_run(tmp_path / "approx", {"sequence_loss": "sampled_ce", "sampling": "uniform", "sampled_negatives": 7,
                                            "graph_refresh": 50}, {"recall@10": 0.3, "ndcg@10": 0.2},
                      {"optimizer": "lazy_adam"})
    table = scaling.toys_section([exact, sampled, approx], record)
    assert "| sampled | sampled_ce (popularity, 7 candidates) | 2 | 0.0200 | 0.0400 | 2 | 0.5000 | 0.2500 | 12 |" in table
    assert f"| {record} (epoch 2 of its 4) | ce | 2 | 0.1000 | 0.0400 | - | - | - | 5 |" in table
    assert "sampled_ce (popularity, 7 candidates): test Recall@10 +0.1000, NDCG@10 -0.0500 against the exact CE" in table
    assert ("sampled_ce (uniform, 7 candidates), lazy_adam, graph_refresh=50: test Recall@10 -0.1000, NDCG@10 -0.1000 "
            "against the exact CE") in table
    assert ("`gsau train --model gsau-rec --dataset toys --epochs 2 --set lr=0.003 --threads 1 --out runs/exact`, "
            "`gsau train --model gsau-rec --dataset toys --epochs 2 --set lr=0.003 --set sequence_loss=sampled_ce "
            "--set sampling=popularity --set sampled_negatives=7 --threads 1 --out runs/sampled`") in table
    assert "--set sampled_negatives=7 --set optimizer=lazy_adam --set graph_refresh=50 --threads 1 --out runs/approx`" in table
    assert "Not measured" in scaling.toys_section([], record)


def test_the_converged_toys_table_compares_with_the_exact_record(tmp_path):
    record = fake_run(tmp_path / "record", {"sequence_loss": "ce"}, {"recall@10": 0.4, "ndcg@10": 0.2})
    approx = fake_run(tmp_path / "approx", {"sequence_loss": "sampled_ce", "sampling": "uniform", "sampled_negatives": 7,
                                            "graph_refresh": 50}, {"recall@10": 0.3, "ndcg@10": 0.25},
                      {"optimizer": "lazy_adam"})
    unfinished = tmp_path / "unfinished"
    fake_run(unfinished, {"sequence_loss": "ce"}, {})
    (unfinished / "metrics.json").unlink()
    table = scaling.toys_full_section([approx, str(unfinished)], Path(record))
    assert ("| approx | sampled_ce (uniform, 7 candidates), lazy_adam, graph_refresh=50 | 2 | 2 | 0.0200 | 0.3000 | "
            "0.2500 | 12 |") in table
    assert "| unfinished | ce | 2 | 2 so far (stopped unfinished) | 0.0200 | - | - | 12 |" in table
    assert "| record | exact (ce, adam) | 2 | 2 | 0.0200 | 0.4000 | 0.2000 | 12 |" in table
    assert ("sampled_ce (uniform, 7 candidates), lazy_adam, graph_refresh=50: test Recall@10 -0.1000 (-25.0%), "
            "NDCG@10 +0.0500, best epoch 2 against 2") in table
    assert scaling.toys_full_section([], Path(record)) == ""


def test_quick_run_writes_scaling_md(tmp_path):
    out, raw = tmp_path / "SCALING.md", tmp_path / "rows.json"
    scaling.main(["--quick", "--out", str(out), "--data-dir", str(tmp_path / "data"), "--json", str(raw)])
    rows = json.loads(raw.read_text())["rows"]
    assert len(rows) == 5 and sorted(len(r["groups"]) for r in rows) == [1, 1, 1, 1, 2]
    exact = [r for r in rows if r["variant"] != "approx"]
    for r in exact:
        assert r["epoch_seconds"] == pytest.approx(r["step_seconds"] * r["steps_per_epoch"])
        assert r["step_seconds"] == pytest.approx(np.median(r["step_seconds_all"])) and len(r["step_seconds_all"]) == 3
        assert r["users"] == r["interactions"] // 10 and r["train_peak_mib"] > 0
    target = next(r for r in exact if "target" in r["groups"])
    assert [e["batch_size"] for e in target["evaluations"]] == [1024, 256]
    # The approximation: a window of graph_refresh steps (one refresh in it), their mean, no evaluation.
    approx = next(r for r in rows if r["variant"] == "approx")
    assert approx["graph_refresh"] == 4 and len(approx["step_seconds_all"]) == 4 and approx["evaluations"] == []
    assert approx["step_seconds"] == pytest.approx(np.mean(approx["step_seconds_all"]))
    assert approx["refresh_cpu_seconds"] > 0
    text = out.read_text()
    for heading in ("## Targets", "## Growth with interactions", "## Growth with items", "## The target size",
                    "## Import", "## Sampled softmax and the approximations against exact training on Toys"):
        assert heading in text
    assert "| gsau-rec | sampled | 2 |" in text and "| sasrec | exact | 2 |" in text  # one fit per group
    assert "import of 4k interactions <= 2 min" in text
    assert "| 4k rows with a quoted text column" in text  # read by the chunked csv-module reader
    assert "the same epoch approximated (lazy_adam, graph_refresh=4), 1 thread(s)" in text
    assert "**Approximations at the target size.**" in text


def test_reach_counts_a_batch_and_its_one_hop_neighbourhood_by_hand():
    # Nodes 0-1 users, 2-4 items. Edges: 0-2, 0-3, 1-3, 1-4 (both directions in the CSR).
    rows = {0: [2, 3], 1: [3, 4], 2: [0], 3: [0, 1], 4: [1]}
    crow = np.cumsum([0] + [len(rows[n]) for n in range(5)])
    col = np.concatenate([rows[n] for n in range(5)])
    # Batch {user 0, item 2}: rows 0 and 2 hold 3 entries; N1 = {0, 2, 3}: 2 + 1 + 2 = 5 entries.
    assert scaling.reach(crow, col, np.array([0, 2, 0])) == {"nodes": 2, "n1_nodes": 3, "entries_nodes": 3,
                                                             "entries_n1": 5}
    # Item 3 neighbours both users: N1 = {0, 1, 3}, 2 + 2 + 2 entries.
    assert scaling.reach(crow, col, np.array([3])) == {"nodes": 1, "n1_nodes": 3, "entries_nodes": 2, "entries_n1": 6}


def test_neighbourhood_shares_are_fractions_of_the_graph():
    found = scaling.neighbourhood("toys", batch=64, draws=3)
    assert found["batch_nodes"] <= 128 and 0 < found["last_layer_share"] < found["n1_entries_share"] <= 1
    assert 0 < found["n1_share"] <= 1 and found["nodes"] == 19_412 + 11_924 and found["entries"] % 2 == 0
    assert "How much of the graph one batch reaches" in scaling.reach_section([found], needed=59.0)
