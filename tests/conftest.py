import os

# OpenMP threads that spin while waiting make a loaded 2-core machine 10-100x slower; let them sleep.
# Must be set before torch loads its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
