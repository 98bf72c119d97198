"""Every preset learns a planted pattern that item popularity cannot see.

Data: 4 communities, each owning a block of 15 items arranged in a cycle. A user belongs to one
community and walks its cycle from a random start: item k is always followed by item k + 1 (mod the
block). Communities have unequal sizes (40/30/20/10 % of users), so popularity favours the biggest
block but knows nothing of a user's own block, let alone their position in it.

- Sequential scorers can learn the successor rule: the test item is the successor of the last one.
- Graph scorers (which mask the user's known items, as in their papers) can learn the community:
  after masking, a user has only 15 - (length - 1) <= 8 unseen items in their block, so ranking
  the block first puts the test item in the top 10.

max_len is 8 so every position the sequential models read at evaluation was trained.
"""

import numpy as np
import pytest
import torch
from conftest import block_cycles

from gsau.config import preset_names, resolve
from gsau.data import LeaveOneOut
from gsau.metrics import ranking_metrics
from gsau.trainer import Trainer

BLOCKS = 4
BLOCK_SIZE = 15
SHARES = (0.4, 0.3, 0.2, 0.1)
N_USERS = 300

OVERRIDES = ["batch_size=64", "eval_batch_size=512", "epochs=8", "patience=100", "ks=[10]", "metric=ndcg@10",
             "embedding_dim=64", "inner_size=64", "n_layers=1", "n_heads=2", "max_len=8",
             "hidden_dropout=0.1", "attn_dropout=0.1", "lr=0.005"]
GRAPH_ONLY_LR = "lr=0.01"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(dataset_dir):
    data = block_cycles(N_USERS, BLOCKS, BLOCK_SIZE, SHARES, name="planted")
    return dataset_dir(data), LeaveOneOut.from_interactions(data)


def popularity(split: LeaveOneOut, mask_history: bool) -> dict:
    """Test metrics of ranking by training frequency (ties broken by a fixed random jitter)."""
    freq = np.bincount(split.train_items, minlength=split.n_items + 1).astype(np.float64)
    freq += 1e-3 * np.random.default_rng(1).random(len(freq))
    scores = torch.from_numpy(np.tile(freq, (split.n_users, 1)))
    exclude = None
    if mask_history:
        indptr, flat = split.history("test")
        exclude = torch.zeros_like(scores, dtype=torch.bool)
        for u in range(split.n_users):
            exclude[u, torch.from_numpy(flat[indptr[u]: indptr[u + 1]])] = True
    return ranking_metrics(scores, torch.from_numpy(split.targets("test")), (10,), exclude)


def test_the_pattern_is_what_the_docstring_says(dataset):
    _, split = dataset
    data = split.data
    for u in range(1, data.n_users + 1):
        seq = data.sequence(u)
        block = (seq - 1) // BLOCK_SIZE
        assert (block == block[0]).all()
        assert ((seq[1:] - 1) % BLOCK_SIZE == (seq[:-1] % BLOCK_SIZE)).all()
    # Popularity is weak, and knows the biggest block: it beats a uniform ranking (10/60).
    for mask in (False, True):
        pop = popularity(split, mask)
        assert 10 / 60 < pop["recall@10"] < 0.35


@pytest.mark.parametrize("preset", preset_names())
def test_preset_beats_popularity_on_the_planted_pattern(dataset, preset, tmp_path):
    directory, split = dataset
    graph_only = resolve(preset).net.sequence_encoder is None
    cfg = resolve(preset, None, OVERRIDES + [GRAPH_ONLY_LR] * graph_only + [f"dataset={directory}"])
    report = Trainer(cfg, tmp_path / "run", progress=False, echo=lambda line: None).run()
    test = report["test"]
    base = popularity(split, mask_history=cfg.net.mask_history)
    assert test["recall@10"] >= base["recall@10"] + 0.35, (preset, test, base)
    assert test["ndcg@10"] >= base["ndcg@10"] + 0.2, (preset, test, base)
    assert report["epochs_run"] == 8
