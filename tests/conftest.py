import os

import torch

# Tests are small; two threads keep them deterministic and fast on the 2-core CI machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))
