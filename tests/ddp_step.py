"""Run under torchrun by tests/test_distributed.py: one training step of a preset with this
process's share of a global batch; rank 0 saves the averaged gradients and the step's terms."""

import os
import sys

import numpy as np
import torch

from conftest import random_sequences_split
from gsau import distributed
from gsau.config import resolve
from gsau.trainer import build_model, make_optimizer, make_streams, train_step

preset, out = sys.argv[1], sys.argv[2]
overrides = sys.argv[3:]
dist = distributed.from_environment("cpu")
torch.set_num_threads(1)
cfg = resolve(preset, None, overrides)
split = random_sequences_split(3, 40, 14, 30)
model = build_model(cfg, split).train()
model.dist = dist
model.pair_generator = torch.Generator().manual_seed(11)
graph, seq = make_streams(cfg, split, dist)
rng = np.random.default_rng(0)
optimizer = make_optimizer(cfg, model)
torch.manual_seed(5)
terms = train_step(model, optimizer, next(graph.batches(rng)) if graph else None,
                   next(seq.batches(rng)) if seq else None)
if dist.is_main:
    torch.save({"grads": {k: p.grad for k, p in model.named_parameters() if p.grad is not None},
                "weights": model.state_dict(), "terms": {k: float(v) for k, v in terms.items()}}, out)
torch.distributed.barrier()
# Leave without running C++ destructors: a gloo process group torn down while its peer exits has
# aborted one rank at exit ("terminate called without an active exception") after the step was done
# and saved; the result is on disk, so the process ends here.
sys.stdout.flush()
os._exit(0)
