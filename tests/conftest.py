import os

# OpenMP threads that spin while waiting make a loaded 2-core machine 10-100x slower; let them sleep.
# Must be set before torch loads its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# Tests are small; two threads keep them deterministic and fast on the 2-core CI machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def one_thread():
    """Training-heavy tests: tiny models run as fast on one thread as on two on an idle machine,
    and one thread is immune to OpenMP spin-waiting (10x-100x slowdowns) on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_sequences_split(seed: int, n_users: int, max_length: int, n_items: int):
    """Leave-one-out split of random sequences (4 .. max_length - 1 items each): small data for
    tests that compare two ways of computing the same thing."""
    from gsau.data.interactions import Interactions
    from gsau.data.split import LeaveOneOut
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, max_length, size=n_users)
    items = rng.integers(1, n_items + 1, size=lengths.sum())
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    data = Interactions("t", np.array([str(u) for u in range(n_users)]),
                        np.array([str(i) for i in range(1, n_items + 1)]), indptr, items)
    return LeaveOneOut.from_interactions(data)
