"""benchmarks/graph_encoders.py: gsau's GraphSAGE and GAT timed beside PyTorch Geometric's layers with
the same weights, after checking that both compute the same; a wrong mapping is refused, not timed."""

import sys
from pathlib import Path

import pytest
from test_bench import tiny_dataset  # noqa: F401  (fixture)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import graph_encoders  # noqa: E402


def test_both_encoders_are_timed_beside_pyg_after_an_equality_check(tiny_dataset, one_thread):  # noqa: F811
    pytest.importorskip("torch_geometric")
    lines = []
    rows = graph_encoders.measure(str(tiny_dataset), layers=2, batch=8, steps=1, rounds=2, threads=1, echo=lines.append)
    assert [r["encoder"] for r in rows] == ["sage", "gat"]
    for r in rows:
        assert r["max_abs_difference"] < 1e-5
        assert set(r["ms"]) == {"gsau, every node", "PyG, every node", graph_encoders.BATCH_GSAU, graph_encoders.BATCH_PYG}
        assert all(v > 0 for v in r["ms"].values())
        # The ratio is of the medians, the ms are printed to 0.01: it lies within what the rounding allows
        # (a relative tolerance failed where a tiny graph's steps take half a millisecond).
        pyg, ours = r["ms"]["PyG, every node"], r["ms"]["gsau, every node"]
        assert (pyg - 0.005) / (ours + 0.005) <= r["pyg_over_gsau_every_node"] <= (pyg + 0.005) / (ours - 0.005)
        assert r["batch_nodes"] == 16 and r["edges"] > 0
    assert len(lines) == 2 and all("outputs differ by at most" in line for line in lines)
    assert len(graph_encoders.table(rows).splitlines()) == 4


def test_a_wrong_weight_mapping_is_refused(tiny_dataset, one_thread, monkeypatch):  # noqa: F811
    pytest.importorskip("torch_geometric")
    mapped = graph_encoders._pyg_convs

    def off_by_a_bit(encoder, graph, dim):
        convs = mapped(encoder, graph, dim)
        convs[0].bias.data.add_(0.5) if encoder == "gat" else convs[0].lin_l.bias.data.add_(0.5)
        return convs
    monkeypatch.setattr(graph_encoders, "_pyg_convs", off_by_a_bit)
    with pytest.raises(RuntimeError, match="sage: gsau's and PyG's outputs differ by"):
        graph_encoders.measure(str(tiny_dataset), batch=8, steps=1, rounds=1, echo=lambda s: None)


def test_without_pyg_it_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch_geometric", None)
    assert graph_encoders.main(["--rounds", "1"]) == 2
    assert "pip install torch_geometric" in capsys.readouterr().err
