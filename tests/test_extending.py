"""The extension seams (ARCHITECTURE.md): a new sequential encoder is a class plus one registry
line, a graph objective's name is declared once, and the trainer's callbacks, logger and warning
classes let a library user see or silence everything."""

import logging
import warnings
from typing import get_args

import pytest
import torch
import torch.nn.functional as F
from conftest import block_cycles
from torch import nn

from gsau.config import ConfigError, GraphLoss, resolve
from gsau.data.interactions import Interactions
from gsau.encoders import SequenceEncoder, registry
from gsau.objectives import GRAPH_OBJECTIVES

pytestmark = pytest.mark.usefixtures("one_thread")


class TinyGRU(SequenceEncoder):
    """GRU4Rec in a dozen lines: a prefix is the GRU state after its last item."""

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.embedding_dim)

    def __init__(self, d):
        super().__init__()
        self.gru = nn.GRU(d, d, batch_first=True)

    def read_positions(self, chunk):
        return torch.arange(len(chunk.seqs)), chunk.lengths - 1, chunk.targets

    def encode(self, tokens, chunk, reads=None):
        h, _ = self.gru(tokens)
        return h if reads is None else h[reads]

    def forward(self, item_table, seqs, lengths):
        return self.encode(F.embedding(seqs, item_table), None, (torch.arange(len(seqs)), lengths - 1))


def successor_chains() -> Interactions:
    """60 users each walk item k -> k + 1 (mod 10): the next item is a function of the last."""
    return block_cycles(60, blocks=1, block_size=10, lengths=(6, 10), name="chains")


def test_a_new_sequence_encoder_is_one_registry_line(tmp_path, monkeypatch):
    """Registered by name, it is validated by the config, batched, trained, evaluated and used for
    recommendations with no other change, and it learns the planted successor pattern."""
    from gsau.serving import Recommendations
    from gsau.trainer import Trainer
    successor_chains().save(tmp_path / "data")
    with pytest.raises(ConfigError, match="sequence_encoder must be"):
        resolve("sasrec", None, ["sequence_encoder=tinygru"])
    monkeypatch.setitem(registry.SEQUENCE_ENCODERS, "tinygru", f"{__name__}:TinyGRU")
    cfg = resolve("sasrec", None, ["sequence_encoder=tinygru", "embedding_dim=16", "batch_size=32", "lr=0.01",
                                   "max_len=8", "seq_batching=prefix", "patience=50",
                                   "ks=[1,5]", "metric=ndcg@5"],
                  dataset=str(tmp_path / "data"), epochs=30)
    report = Trainer(cfg, tmp_path / "run", progress=False, echo=lambda line: None).run()
    assert report["test"]["recall@1"] > 0.8  # random: 0.1
    top = Recommendations.from_run(tmp_path / "run").top_k("u0", k=1)
    last = successor_chains().sequence(1)[-1]
    assert top[0][0] == f"i{last % 10 + 1}"


def test_graph_objective_names_are_declared_once():
    assert set(get_args(GraphLoss)) == set(GRAPH_OBJECTIVES)
    assert [name for name, o in GRAPH_OBJECTIVES.items() if o.negatives] == ["bpr"]


class Recorder:
    def __init__(self):
        self.epochs, self.reports = [], []

    def on_epoch_end(self, record):
        self.epochs.append(record)

    def on_train_end(self, report):
        self.reports.append(report)


def test_callbacks_see_every_epoch_and_the_report_and_the_library_prints_nothing(tmp_path, capsys, caplog):
    import gsau
    from gsau.trainer import Callback
    successor_chains().save(tmp_path / "data")
    recorder = type("R", (Recorder, Callback), {})()
    from gsau.trainer import Trainer
    cfg = resolve("sasrec", None, ["embedding_dim=8", "batch_size=32", "max_len=6", "patience=50"],
                  dataset=str(tmp_path / "data"), epochs=2)
    with caplog.at_level(logging.INFO, logger="gsau"):
        report = Trainer(cfg, tmp_path / "run", progress=False, callbacks=[recorder]).run()
    assert [r["epoch"] for r in recorder.epochs] == [1, 2] and "L_CE" in recorder.epochs[0]
    assert recorder.reports == [report]
    assert [r.getMessage()[:9] for r in caplog.records][:2] == ["epoch   1", "epoch   2"]  # lines go to the logger
    # gsau.train(): nothing on stdout unless the caller configures the "gsau" logger.
    capsys.readouterr()
    gsau.train("sasrec", str(tmp_path / "data"), out=str(tmp_path / "quiet"), progress=False, epochs=1,
               embedding_dim=8, batch_size=32, max_len=6)
    assert capsys.readouterr().out == ""


def test_gsau_warnings_can_be_silenced_as_one_class(tmp_path, monkeypatch):
    from gsau.errors import GsauWarning
    from gsau.trainer import Trainer
    successor_chains().save(tmp_path / "data")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    cfg = resolve("sasrec", None, ["embedding_dim=8", "batch_size=32", "max_len=6", "threads=2"],
                  dataset=str(tmp_path / "data"), epochs=1)
    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("ignore", GsauWarning)
            Trainer(cfg, tmp_path / "run", progress=False, echo=lambda line: None).run()
    finally:
        torch.set_num_threads(threads)
    assert not [w for w in caught if "OMP_WAIT_POLICY" in str(w.message)]
