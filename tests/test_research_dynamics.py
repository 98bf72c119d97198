"""The dynamics probe (train.probe, issue #18 question 3): linear CKA's invariances, the probe's
fields in log.jsonl only when enabled, a run that trains the same bits with it, and `gsau plot`."""

import builtins
import json

import pytest
import torch
from conftest import block_cycles

from gsau.config import resolve
from gsau.errors import GsauError
from gsau.objectives import uniformity
from gsau.research.dynamics import linear_cka, random_uniformity
from gsau.research.plot import plot_run
from gsau.trainer import Trainer

TINY = ["batch_size=32", "epochs=2", "patience=10", "ks=[10]", "metric=ndcg@10", "embedding_dim=16",
        "inner_size=16", "n_layers=1", "max_len=8", "lr=0.005"]

pytestmark = pytest.mark.usefixtures("one_thread")


def views(seed=0, n=64, d=12):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_cka_of_identical_views_is_one():
    x = views()
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling():
    x = views()
    q, _ = torch.linalg.qr(views(1, 12, 12))
    assert linear_cka(x, 3.7 * x @ q) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x @ q, x) == pytest.approx(1.0, abs=1e-12)
    # ... but not to an anisotropic scaling, nor does it see structure between unrelated views.
    assert linear_cka(x, x * torch.linspace(0.1, 3.0, 12, dtype=torch.float64)) < 0.95
    assert linear_cka(x, views(2)) < 0.4


@pytest.mark.parametrize("d, t", [(16, 2.0), (64, 2.0), (64, 10.0), (8, 10.0)])
def test_the_uniformity_of_random_directions_is_what_the_report_reads_against(d, t):
    """The integral (the report's "about -3.9 at random" for d = 64, t = 2) against 4096 directions
    drawn at random over the sphere, measured with the loss's own uniformity; at t = 10 and d = 8 the
    small-t formula -2t + 2t^2/d (+5, above the collapsed 0) is far off, the integral is not."""
    x = torch.nn.functional.normalize(torch.randn(4096, d, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert float(uniformity(x, t)) == pytest.approx(random_uniformity(d, t), abs=0.05)
    assert random_uniformity(64) == pytest.approx(-3.875, abs=1e-3)  # -2t + 2t^2/d while that is small


def test_cka_is_undefined_for_a_constant_view():
    assert linear_cka(views(), torch.ones(64, 12)) != linear_cka(views(), torch.ones(64, 12))  # NaN


@pytest.fixture(scope="module")
def data_dir(dataset_dir):
    return dataset_dir(block_cycles(80, 4, 10, name="probe"))


def train(model, data_dir, out, *extra):
    cfg = resolve(model, None, TINY + list(extra) + [f"dataset={data_dir}"])
    report = Trainer(cfg, out, progress=False, echo=lambda line: None).run()
    return report, [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_the_probe_adds_fields_only_when_enabled_and_trains_the_same_bits(data_dir, tmp_path):
    report_off, off = train("gsau-rec", data_dir, tmp_path / "off")
    report_on, on = train("gsau-rec", data_dir, tmp_path / "on", "probe=32")
    assert not any(k.startswith("probe_") for h in off for k in h)
    expected = {f"probe_{e}_{m}" for e in ("graph", "seq") for m in ("align", "unif_user", "unif_item")}
    expected |= {"probe_user_cos", "probe_item_cos", "probe_item_cka", "probe_seconds"}
    for h in on:
        assert expected <= set(h), set(h)
        assert all(isinstance(h[k], float) for k in expected)
    # Everything the run trains and measures is the same bit for bit.
    for a, b in zip(off, on):
        assert {k: v for k, v in a.items() if "seconds" not in k} == \
               {k: v for k, v in b.items() if "seconds" not in k and not k.startswith("probe_")}
    assert report_off["test"] == report_on["test"]
    # A single-encoder run gets its encoder's fields and no cross-encoder ones.
    _, seq_only = train("sasrec", data_dir, tmp_path / "sasrec", "probe=32")
    assert {k for k in seq_only[0] if k.startswith("probe_")} == \
           {"probe_seq_align", "probe_seq_unif_user", "probe_seq_unif_item", "probe_seconds"}


def test_with_no_propagation_the_graph_item_view_is_the_shared_table(data_dir, tmp_path):
    # graph_layers=0: LightGCN's final item embedding is its table row, the very row SASRec scores with.
    _, log = train("gsau-rec", data_dir, tmp_path / "run", "probe=32", "graph_layers=0")
    assert log[-1]["probe_item_cos"] == pytest.approx(1.0, abs=1e-5)
    assert log[-1]["probe_item_cka"] == pytest.approx(1.0, abs=1e-6)
    _, separate = train("gsau-rec", data_dir, tmp_path / "separate", "probe=32", "graph_layers=0", "shared_table=false")
    assert separate[-1]["probe_item_cka"] < 0.9  # two tables: two views


def test_gsau_plot_draws_the_probe_and_says_what_is_missing(data_dir, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    train("gsau-rec", data_dir, tmp_path / "probed", "probe=16")
    path = plot_run(tmp_path / "probed")
    assert path == tmp_path / "probed" / "dynamics.png" and path.read_bytes()[:4] == b"\x89PNG"
    train("sasrec", data_dir, tmp_path / "plain")
    with pytest.raises(GsauError, match="no probe fields; train with `--set probe=256`"):
        plot_run(tmp_path / "plain")
    with pytest.raises(GsauError, match="no log.jsonl"):
        plot_run(tmp_path / "nowhere")
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(GsauError, match=r"needs matplotlib: pip install 'gsau\[plot\]'"):
        plot_run(tmp_path / "probed")
