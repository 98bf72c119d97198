"""The optimiser: Adam as in the paper, or lazy Adam on the embedding tables for large catalogues.

train.optimizer=adam (default): one Adam over every parameter. Its dense update reads and writes
every row of the user and item tables each step, whether the step touched them or not; at a
million items that pass, and the table-sized gradient behind it, outweigh the rest of a sampled
softmax step (SCALING.md).

train.optimizer=lazy_adam: the tables get row-sparse gradients (the model's lookups are made with
`sparse=True`) and torch.optim.SparseAdam updates only the rows a step read, moments included;
every other parameter keeps the fused dense Adam. A row's moments then decay only on the steps
that read it ("lazy" Adam, as TensorFlow's LazyAdam), and SparseAdam adds eps before the bias
correction (eps / sqrt(1 - beta2) in Adam's terms): not the paper's optimiser, so it is opt-in.
On CUDA, SparseAdam coalesces each table's gradient every step, which waits for the device (a host
sync the rest of a step avoids): time GPU runs with that in mind.
"""

from __future__ import annotations

import torch

from gsau.config import Config
from gsau.errors import GsauError


def dense_adam(cfg: Config, params) -> torch.optim.Optimizer:
    """Adam as in the paper. The fused kernel updates the whole embedding table in one pass; the
    default per-tensor loop costs more than a training step's graph propagation on CPU."""
    try:
        return torch.optim.Adam(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, fused=True)
    except (RuntimeError, TypeError):  # torch builds without the fused CPU kernel
        return torch.optim.Adam(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, foreach=True)


class Optimizers:
    """Several optimisers stepped as one. The trainer sets each step's rate through
    `param_groups` (every group of every optimiser) and checkpoints `state_dict()`."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        parts = state.get("optimizers") if isinstance(state, dict) else None
        if parts is None or len(parts) != len(self.optimizers):
            raise GsauError("the checkpoint's optimiser state is not that of train.optimizer=lazy_adam "
                            "(was the run started with another optimizer?)")
        for o, s in zip(self.optimizers, parts):
            o.load_state_dict(s)


def make_optimizer(cfg: Config, model: torch.nn.Module):
    """The optimiser train.optimizer names, over `model`'s parameters. lazy_adam needs a model
    built with `sparse_tables` (trainer.build_model sets it from the same config)."""
    if cfg.train.optimizer == "adam":
        return dense_adam(cfg, model.parameters())
    tables = model.table_parameters()
    if not getattr(model, "sparse_tables", False):
        raise GsauError("train.optimizer=lazy_adam needs a model built with sparse_tables=True")
    table_ids = {id(p) for p in tables}
    rest = [p for p in model.parameters() if id(p) not in table_ids]
    sparse = torch.optim.SparseAdam(tables, lr=cfg.train.lr)
    # A model of tables alone (DirectAU on LightGCN) has nothing for the dense optimiser.
    return Optimizers(dense_adam(cfg, rest), sparse) if rest else Optimizers(sparse)
