"""Edge cases found in review: per-user rank order, a lone last sample, resuming safely."""

import numpy as np
import pytest
import torch
from conftest import random_interactions

from gsau.config import resolve
from gsau.data.batching import SequenceStream
from gsau.data.split import LeaveOneOut
from gsau.errors import GsauError
from gsau.evaluation import user_ranks, user_top_items
from gsau.metrics import target_ranks
from gsau.trainer import Trainer, build_model


@pytest.fixture(scope="module")
def data_dir(dataset_dir):
    data = random_interactions(0, 30, 20, 12, distinct=True, name="edges")
    return dataset_dir(data), LeaveOneOut.from_interactions(data)


def test_user_ranks_come_back_in_the_callers_user_order(data_dir):
    _, split = data_dir
    cfg = resolve("sasrec", None, ["max_len=8", "embedding_dim=16", "inner_size=32"])
    model = build_model(cfg, split).eval()
    # Reference: each user scored alone, in the order asked.
    users = np.array([7, 3, 30, 1, 12, 5])
    ranks = user_ranks(model, split, "test", users=users)
    indptr, flat = split.history("test")
    for user, rank in zip(users, ranks):
        hist = flat[indptr[user - 1]: indptr[user]][-8:]
        scores = model.score(torch.tensor([user]), torch.from_numpy(hist)[None], torch.tensor([len(hist)]))
        assert rank == target_ranks(scores, torch.tensor([split.test[user]])).item()


@pytest.mark.parametrize("mask_history", [False, True])
def test_user_top_items_are_the_plain_ranking_of_each_users_scores(data_dir, mask_history):
    """Each user scored alone and sorted (the plain path) against the chunked top-k, in the caller's
    user order; and the target is in a user's top k exactly when its pessimistic rank is <= k."""
    _, split = data_dir
    cfg = resolve("sasrec", None, ["max_len=8", "embedding_dim=16", "inner_size=32"])
    model = build_model(cfg, split).eval()
    users = np.array([7, 3, 30, 1, 12, 5])
    top = user_top_items(model, split, "test", k=5, mask_history=mask_history, users=users, batch_size=4)
    indptr, flat = split.history("test")
    for user, items in zip(users, top):
        history = flat[indptr[user - 1]: indptr[user]]
        scores = model.score(torch.tensor([user]), torch.from_numpy(history[-8:])[None], torch.tensor([len(history[-8:])]))[0]
        ranked = [i for i in torch.argsort(scores, descending=True, stable=True).tolist()
                  if i != 0 and not (mask_history and i in set(history.tolist()))]
        assert items.tolist() == ranked[:5]
    ranks = user_ranks(model, split, "test", mask_history=mask_history)
    every = user_top_items(model, split, "test", k=5, mask_history=mask_history)
    assert ((every == split.targets("test")[:, None]).any(1) == (ranks <= 5)).all()


def test_a_lone_sample_in_the_last_batch_still_trains(data_dir):
    _, split = data_dir
    cfg = resolve("sasrec-u", None, ["max_len=8", "embedding_dim=16", "inner_size=32"])
    model = build_model(cfg, split)
    stream = SequenceStream(split, 8, 1)
    total, terms = model.loss(None, stream.chunks(stream.targets_at[:1], np.random.default_rng(0)))
    terms = {k: float(v) for k, v in terms.items()}  # detached 0-dim tensors
    assert torch.isfinite(total) and set(terms) == {"L_SA", "L_SU"}


def _cfg(path, **kw):
    over = ["max_len=8", "embedding_dim=16", "inner_size=32", "batch_size=32", "eval_batch_size=64"]
    over += [f"{k}={v}" for k, v in kw.items()]
    return resolve("sasrec", None, over, dataset=str(path), epochs=1)


def test_resume_refuses_changed_settings_and_keeps_the_recorded_config(data_dir, tmp_path):
    path, _ = data_dir
    Trainer(_cfg(path), tmp_path / "run", progress=False, echo=lambda s: None).run()
    before = (tmp_path / "run" / "config.yaml").read_text()
    with pytest.raises(GsauError, match="gamma"):
        Trainer(_cfg(path, gamma=0.3), tmp_path / "run", progress=False, echo=lambda s: None).run(resume=True)
    assert (tmp_path / "run" / "config.yaml").read_text() == before
    # More epochs is allowed: that is what resuming is for.
    cfg = _cfg(path)
    cfg.train.epochs = 2
    report = Trainer(cfg, tmp_path / "run", progress=False, echo=lambda s: None).run(resume=True)
    assert report["epochs_run"] == 2


def test_resume_before_the_first_epoch_ended_starts_afresh(data_dir, tmp_path):
    path, _ = data_dir
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("model: sasrec\n")  # killed during epoch 1
    report = Trainer(_cfg(path), tmp_path / "run", progress=False, echo=lambda s: None).run(resume=True)
    assert report["epochs_run"] == 1
