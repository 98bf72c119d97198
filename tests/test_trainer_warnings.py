"""The trainer flags collapsed embeddings: thresholds checked against the uniformity of real point sets."""

import pytest
import torch
from conftest import random_interactions

from gsau import objectives as obj
from gsau.trainer import collapse_warning


def l_su(points: torch.Tensor, targets: torch.Tensor) -> float:
    """L_SU as the model computes it: within outputs, within targets, outputs against shuffled targets."""
    n = targets[obj.derangement(len(targets))]
    return float(obj.uniformity(points) + obj.uniformity(targets) + obj.pair_uniformity(points, n))


def test_collapsed_sequence_embeddings_are_flagged():
    torch.manual_seed(0)
    centre = torch.randn(64)
    s = centre + 0.05 * torch.randn(512, 64)  # all within a few degrees of one direction
    p = centre + 0.05 * torch.randn(512, 64)
    value = l_su(s, p)
    warning = collapse_warning({"L_SA": 0.002, "L_SU": value})
    assert warning is not None and f"L_SU {value:.3f}" in warning and "collapsed" in warning


def test_spread_embeddings_are_not_flagged():
    torch.manual_seed(0)
    s, p = torch.randn(512, 64), torch.randn(512, 64)
    value = l_su(s, p)
    assert value < -10  # about 3 x -4 on a 64-d sphere
    assert collapse_warning({"L_SA": 1.9, "L_SU": value}) is None
    assert collapse_warning({"L_CE": 9.0}) is None  # no uniformity term, nothing to judge


def test_graph_uniformity_collapse_is_flagged_and_named():
    torch.manual_seed(0)
    centre = torch.randn(64)
    u, i = centre + 0.05 * torch.randn(512, 64), centre + 0.05 * torch.randn(512, 64)
    collapsed = float(obj.uniformity(u) + obj.uniformity(i))
    warning = collapse_warning({"L_GA": 0.01, "L_GU": collapsed, "L_SU": -11.0})
    assert warning is not None and "L_GU" in warning and "L_SU" not in warning
    spread = float(obj.uniformity(torch.randn(512, 64)) + obj.uniformity(torch.randn(512, 64)))
    assert collapse_warning({"L_GU": spread}) is None


def test_epochs_logged_by_real_runs_are_judged_as_they_turned_out():
    # gsau on Toys, epoch 2 (log.jsonl): uniformity had sunk but the run went on learning.
    assert collapse_warning({"L_GA": 0.1755, "L_GU": -2.1042, "L_SA": 0.3031, "L_SU": -2.7631}) is None
    # gsau-rec on Toys, epoch 1: healthy.
    assert collapse_warning({"L_GA": 0.7662, "L_GU": -4.3683, "L_CE": 9.3781, "L_SU": -11.35}) is None
    # sasrec-u on Toys, epoch 2: collapsed (validation Recall@10 0.0006, random level).
    assert "L_SU -0.314" in collapse_warning({"L_SA": 0.0595, "L_SU": -0.3139})


def test_passive_openmp_waiting_is_flagged_only_with_several_threads(monkeypatch):
    from gsau.runtime import wait_policy_warning
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert "OMP_WAIT_POLICY=PASSIVE slows training with 2 threads" in wait_policy_warning(2)
    assert wait_policy_warning(1) is None  # single-threaded runs side by side: the right setting
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert wait_policy_warning(2) is None
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert wait_policy_warning(2) is None


def test_the_trainer_says_so_before_training(monkeypatch, tmp_path, dataset_dir):
    from gsau.config import resolve
    from gsau.trainer import Trainer
    data = dataset_dir(random_interactions(0, 30, 15, 8))
    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    lines = []
    cfg = resolve("sasrec", None, ["batch_size=16", "embedding_dim=8", "inner_size=16", "max_len=5", "threads=2"],
                  dataset=str(data), epochs=1)
    from gsau.errors import GsauWarning, PerformanceWarning
    try:
        with pytest.warns(PerformanceWarning, match="OMP_WAIT_POLICY=PASSIVE slows training with 2 threads") as caught:
            Trainer(cfg, tmp_path / "run", progress=False, echo=lines.append).run()
    finally:
        torch.set_num_threads(threads)
    assert all(issubclass(w.category, GsauWarning) for w in caught)  # one class for a caller to silence
    assert lines[0].startswith("epoch   1")  # a warning, not a progress line
