"""Shared test setup: thread settings, and the synthetic datasets the test modules train and
compare on (one builder per kind of data, so a module says which data it uses, not how to make it)."""

import contextlib
import os

# OpenMP threads that spin while waiting make a loaded 2-core machine 10-100x slower; let them sleep.
# Must be set before torch loads its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from gsau.data.interactions import Interactions  # noqa: E402
from gsau.data.split import LeaveOneOut  # noqa: E402

# Tests are small; two threads keep them deterministic and fast on the 2-core CI machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@contextlib.contextmanager
def threads(n: int):
    """torch's intra-op threads set to n inside the block, restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """Training-heavy tests: tiny models run as fast on one thread as on two on an idle machine,
    and one thread is immune to OpenMP spin-waiting (10x-100x slowdowns) on a shared CPU."""
    with threads(1):
        yield


# -- synthetic data -----------------------------------------------------------------------------

def interactions(seqs, n_items: int, name: str = "t", meta=None) -> Interactions:
    """Interactions of users 1..len(seqs), user u's chronological items seqs[u - 1] (dense ids
    1..n_items), with external ids u0, u1, ... and i1 .. i{n_items}."""
    indptr = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    return Interactions(name, np.array([f"u{u}" for u in range(len(seqs))]),
                        np.array([f"i{i}" for i in range(1, n_items + 1)]), indptr,
                        np.concatenate(seqs).astype(np.int64), dict(meta or {}))


def random_interactions(seed: int, n_users: int, n_items: int, max_length: int, min_length: int = 4,
                        distinct: bool = False, name: str = "t") -> Interactions:
    """Users with min_length .. max_length - 1 uniformly random items each; `distinct`: no item
    twice in one user's sequence."""
    rng = np.random.default_rng(seed)
    if distinct:
        seqs = [rng.choice(np.arange(1, n_items + 1), size=rng.integers(min_length, max_length), replace=False)
                for _ in range(n_users)]
    else:
        lengths = rng.integers(min_length, max_length, size=n_users)
        seqs = np.split(rng.integers(1, n_items + 1, size=lengths.sum()), np.cumsum(lengths)[:-1])
    return interactions(seqs, n_items, name)


def random_sequences_split(seed: int, n_users: int, max_length: int, n_items: int) -> LeaveOneOut:
    """Leave-one-out split of random sequences (4 .. max_length - 1 items each): small data for
    tests that compare two ways of computing the same thing."""
    return LeaveOneOut.from_interactions(random_interactions(seed, n_users, n_items, max_length))


def block_cycles(n_users: int, blocks: int = 4, block_size: int = 15, shares=None, lengths=(8, 13),
                 seed: int = 0, name: str = "blocks") -> Interactions:
    """A planted pattern that item popularity cannot see: each user belongs to one block of
    `block_size` items (drawn with probabilities `shares`, uniformly when None) and walks its cycle
    from a random start for lengths[0] .. lengths[1] - 1 steps, so item k of a block is always
    followed by item k + 1 (mod the block)."""
    rng = np.random.default_rng(seed)
    community = rng.choice(blocks, size=n_users, p=shares)
    seqs = [c * block_size + (rng.integers(block_size) + np.arange(rng.integers(*lengths))) % block_size + 1
            for c in community]
    return interactions(seqs, blocks * block_size, name, meta={"source": "synthetic"})


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory):
    """Factory: save Interactions into a fresh directory, which `--dataset` (or the config's
    `dataset`) accepts, and return the directory. Session-scoped so module fixtures can use it."""
    def save(data: Interactions):
        directory = tmp_path_factory.mktemp(data.name)
        data.save(directory)
        return directory
    return save
