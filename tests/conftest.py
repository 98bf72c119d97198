import os

# OpenMP threads that spin while waiting make a loaded 2-core machine 10-100x slower; let them sleep.
# Must be set before torch loads its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

# Tests are small; two threads keep them deterministic and fast on the 2-core CI machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))
