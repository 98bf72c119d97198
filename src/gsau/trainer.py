"""The training loop: joint steps over the graph and sequential streams, validation every epoch,
early stopping on validation NDCG@20, best weights restored for the test.

Run directory:
    config.yaml    resolved configuration
    log.jsonl      one line per epoch (loss terms, validation metrics, seconds)
    last.pt        everything needed to resume (weights, optimiser, epoch, RNG states, history)
    best.pt        best weights so far
    metrics.json   the final report
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

from gsau import checkpoint, runs, runtime
from gsau.config import Config
from gsau.data import LeaveOneOut, load_dataset
from gsau.data.batching import GraphStream, SequenceStream
from gsau.encoders import registry
from gsau.encoders.lightgcn import normalized_adjacency
from gsau.errors import CollapseWarning, GsauError, PerformanceWarning
from gsau.evaluation import evaluate
from gsau.model import Recommender
from gsau.objectives import GRAPH_OBJECTIVES


log = logging.getLogger("gsau")


def prepare(cfg: Config) -> tuple[LeaveOneOut, Recommender]:
    """Data, split and a freshly initialised model for `cfg` (seeded)."""
    d = cfg.data
    data = load_dataset(d.dataset, min_user=d.min_user_count, min_item=d.min_item_count, dedup=d.dedup,
                        columns=d.columns)
    split = LeaveOneOut.from_interactions(data, drop_short=d.drop_short)
    return split, build_model(cfg, split)


def build_model(cfg: Config, split: LeaveOneOut) -> Recommender:
    adjacency = None
    if cfg.net.graph_encoder:
        adjacency = normalized_adjacency(*split.train_pairs(), split.n_users, split.n_items)
    torch.manual_seed(cfg.train.seed)
    return Recommender(cfg.net, split.n_users, split.n_items, adjacency)


def make_streams(cfg: Config, split: LeaveOneOut):
    """(graph stream or None, sequential stream or None) for the preset's objectives."""
    n, t = cfg.net, cfg.train
    graph = seq = None
    if n.graph_loss:
        graph = GraphStream(split, t.batch_size, negatives=GRAPH_OBJECTIVES[n.graph_loss].negatives)
    if n.sequence_loss:
        masked_lm = registry.sequence_encoder(n.sequence_encoder).masked_lm
        seq = SequenceStream(split, n.max_len, t.batch_size, t.seq_batching, masked_lm=masked_lm,
                             mask_ratio=n.mask_ratio)
    return graph, seq


def make_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam as in the paper. The fused kernel updates the whole embedding table in one pass; the
    default per-tensor loop costs more than a training step's graph propagation on CPU."""
    try:
        return torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, fused=True)
    except (RuntimeError, TypeError):  # torch builds without the fused CPU kernel
        return torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, foreach=True)


def learning_rate(t, step: int, steps_per_epoch: int) -> float:
    """The rate for optimiser step `step` (0-based, counted over the whole run) under t.lr_schedule."""
    total = t.epochs * steps_per_epoch
    warmup = round(t.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return t.lr * (step + 1) / warmup
    if t.lr_schedule == "constant":
        return t.lr
    # The decay spans the steps after warm-up, or only the last decay_epochs when that is set.
    start = total - round(t.decay_epochs * steps_per_epoch) if t.decay_epochs else warmup
    if step < start:
        return t.lr
    done = (step - start) / max(total - start, 1)  # 0 where the decay starts, -> 1 at the last step
    if t.lr_schedule == "cosine":
        return t.lr * 0.5 * (1.0 + math.cos(math.pi * done))
    return t.lr * (1.0 - done)


# A uniformity term is log mean exp(-2 ||x - y||^2) over unit vectors: about -4 when they are spread
# over the sphere (||x - y||^2 ~ 2), 0 when they all coincide. An epoch mean this close to 0 means
# the representations have collapsed, which the paper's L_SA presets do on the bundled data.
COLLAPSED_ABOVE = {"L_SU": -0.5, "L_GU": -0.3}  # L_SU sums 3 uniformity terms, L_GU 2


def collapse_warning(terms: dict) -> str | None:
    """A warning when an epoch's mean uniformity says its embeddings have collapsed, else None."""
    hit = [f"{k} {terms[k]:.3f}" for k, limit in COLLAPSED_ABOVE.items() if k in terms and terms[k] > limit]
    if not hit:
        return None
    return (f"{', '.join(hit)}: the embeddings have collapsed onto nearly one direction, so "
            "ranking is close to random; a larger gamma keeps them apart (see results/NOTES.md on SASRec (u))")


def cycle(stream, rng):
    """Batches of a stream, reshuffled and restarted whenever it runs out."""
    while True:
        yield from stream.batches(rng)


class NonFiniteLoss(GsauError):
    """A loss term became NaN or infinite: the model has diverged."""

    def __init__(self, terms: list[str]):
        self.terms = terms
        super().__init__(f"loss diverged ({', '.join(terms)} not finite)")


def train_step(model, optimizer: torch.optim.Optimizer, graph_batch: dict | None,
               seq_chunks: list | None) -> dict[str, torch.Tensor]:
    """One optimiser step of the joint objective; returns the step's loss terms as detached
    0-dim tensors on the model's device (read them once per epoch, not per step: on a GPU each
    read is a host sync). A non-finite loss raises NonFiniteLoss before the weights are touched,
    so what a diverged step would write never reaches the optimiser."""
    total, terms = model.loss(graph_batch, seq_chunks)
    if not torch.isfinite(total):
        raise NonFiniteLoss([k for k, v in terms.items() if not torch.isfinite(v)] or ["total"])
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return terms


class Callback:
    """The trainer's seam for loggers and sinks (console, TensorBoard, MLflow, an API's history):
    override what you need. Records are plain dicts, the same that log.jsonl and metrics.json hold."""

    def on_epoch_end(self, record: dict) -> None:
        """After each epoch: {"epoch", every loss term "L_*", "lr", "valid_<metric>", "seconds", ...}."""

    def on_train_end(self, report: dict) -> None:
        """Once, with metrics.json's content."""


class Trainer:
    """Trains one run into `out`. Progress lines go to `echo` (default: the "gsau" logger at INFO,
    which the CLI prints); warnings are `warnings.warn` with gsau.errors.GsauWarning classes;
    `callbacks` receive every epoch's record and the final report."""

    def __init__(self, cfg: Config, out: str | Path, progress: bool = True, echo=None,
                 callbacks: list[Callback] | tuple = ()):
        self.cfg = cfg
        self.out = Path(out)
        self.progress = progress
        self.echo = echo or log.info
        self.callbacks = list(callbacks)

    # -- state -------------------------------------------------------------------------------
    def _state(self, epoch, best, history, rng) -> dict:
        return {"epoch": epoch, "best": best, "history": history, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                "numpy_rng": json.dumps(rng.bit_generator.state), "config": json.dumps(self.cfg.to_dict())}

    def _open_run_dir(self, resume: bool) -> dict | None:
        """Check `out` may be written, and return the checkpoint to continue from (or None).

        A directory holding any run file is written into only by a resume of a run that has
        last.pt: a finished record (results/runs/*: config, log, metrics, no weights) is never
        overwritten or retrained over. The one exception is a run stopped before its first epoch
        ended (config.yaml alone): resuming it starts it afresh, which loses nothing."""
        out = self.out
        if out.exists() and not out.is_dir():
            raise GsauError(f"{out}: exists and is not a directory; pick another --out")
        present = [f for f in runs.RUN_FILES if (out / f).exists()]
        if resume and "last.pt" in present:
            state = checkpoint.load(out / "last.pt")
            runs.check_same_run(json.loads(state["config"]), self.cfg, out)
            return state
        if resume and set(present) <= {"config.yaml"}:
            return None  # stopped before its first epoch ended: nothing to continue, start afresh
        if present:
            if resume:
                raise GsauError(f"{out}: nothing to resume (no last.pt checkpoint; it holds {', '.join(present)}); "
                                "a finished record is never retrained over: pick another --out")
            hint = " or `gsau train --resume " + str(out) + "` to continue it" if "last.pt" in present else ""
            raise GsauError(f"{out} already holds a run ({', '.join(present)}); pick another --out{hint}")
        return None

    def run(self, resume: bool = False) -> dict:
        cfg, t = self.cfg, self.cfg.train
        runtime.keep_freed_memory()
        if t.threads:
            torch.set_num_threads(t.threads)
        warning = runtime.wait_policy_warning(torch.get_num_threads())
        if warning:
            warnings.warn(warning, PerformanceWarning, stacklevel=2)
        state = self._open_run_dir(resume)
        # Data and model first: a failed start (bad data, bad sizes) leaves no directory behind
        # that looks like a run.
        split, self.model = prepare(cfg)
        self.split = split
        fingerprint = runs.data_fingerprint(split.data)
        runs.make_run_dir(self.out)
        checkpoint.write_text(self.out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        checkpoint.write_json(self.out / runs.DATA_FILE, fingerprint)
        self.optimizer = make_optimizer(cfg, self.model)
        rng = np.random.default_rng(t.seed)
        torch.manual_seed(t.seed + 1)  # dropout and derangements; the model init used `seed`
        graph, seq = make_streams(cfg, split)
        start, best, history = 0, {"epoch": -1, "score": -1.0, "valid": {}}, []
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            rng.bit_generator.state = json.loads(state["numpy_rng"])
            start, best, history = state["epoch"] + 1, state["best"], state["history"]
            self.echo(f"resuming {self.out} after epoch {state['epoch'] + 1}")

        streams = [s for s in (graph, seq) if s is not None]
        steps = max(len(s) for s in streams)
        epoch = start - 1
        warned = False
        for epoch in range(start, t.epochs):
            if history and epoch - best["epoch"] > t.patience:
                break
            t0 = time.perf_counter()
            terms = self._train_epoch(epoch, graph, seq, steps, rng)
            train_s = time.perf_counter() - t0
            valid = evaluate(self.model, split, "valid", t.ks, batch_size=t.eval_batch_size)
            score = valid[t.metric]
            if score > best["score"]:
                best = {"epoch": epoch, "score": score, "valid": valid}
                checkpoint.save(self.model.state_dict(), self.out / "best.pt")
            history.append({"epoch": epoch + 1, **terms, "lr": learning_rate(t, (epoch + 1) * steps - 1, steps), **{f"valid_{k}": v for k, v in valid.items()},
                            "train_seconds": train_s, "seconds": time.perf_counter() - t0})
            checkpoint.save(self._state(epoch, best, history, rng), self.out / "last.pt")
            checkpoint.write_text(self.out / "log.jsonl", "".join(json.dumps(h) + "\n" for h in history))
            self.echo(self._line(history[-1], t.metric, epoch == best["epoch"]))
            for callback in self.callbacks:
                callback.on_epoch_end(history[-1])
            warning = collapse_warning(terms)
            if warning and not warned:
                warnings.warn(warning, CollapseWarning, stacklevel=2)
                warned = True
            if epoch - best["epoch"] >= t.patience:
                self.echo(f"early stop: no {t.metric} improvement for {t.patience} epochs")
                break
        return self.finish(best, history)

    def _train_epoch(self, epoch, graph, seq, steps, rng) -> dict:
        self.model.train()
        graph_it = cycle(graph, rng) if graph else None
        seq_it = cycle(seq, rng) if seq else None
        sums: dict[str, torch.Tensor] = {}
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=steps, desc=f"epoch {epoch + 1}", leave=False, file=sys.stderr, dynamic_ncols=True)
        for i in range(steps):
            lr = learning_rate(self.cfg.train, epoch * steps + i, steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            try:
                terms = train_step(self.model, self.optimizer, next(graph_it) if graph_it else None,
                                   next(seq_it) if seq_it else None)
            except NonFiniteLoss as e:
                last = "the last checkpoint (last.pt, best.pt) is intact" if epoch else "no checkpoint was written"
                raise GsauError(f"{self.out}: epoch {epoch + 1}, step {i + 1}: {e}; training stopped and {last}. "
                                f"Lower lr (now {lr:g}) or check gamma") from None
            for k, v in terms.items():  # summed on the device, read once when the epoch ends
                sums[k] = sums[k] + v.double() if k in sums else v.double()
            if bar:
                bar.update()
                if i % 10 == 0:
                    bar.set_postfix({k: f"{float(v):.3f}" for k, v in terms.items()}, refresh=False)
        if bar:
            bar.close()
        return {k: float(v) / steps for k, v in sums.items()}

    @staticmethod
    def _line(h: dict, metric: str, improved: bool) -> str:
        losses = " ".join(f"{k} {h[k]:.4f}" for k in h if k.startswith("L_"))
        # recall@10 and ndcg@10 where 10 is a cut-off of the run, then the early-stopping metric
        shown = [k for k in dict.fromkeys(["recall@10", "ndcg@10", metric]) if "valid_" + k in h]
        valid = " ".join(f"{k} {h['valid_' + k]:.4f}" for k in shown)
        return f"epoch {h['epoch']:3d} | {losses} | valid {valid} | {h['seconds']:.1f}s{' *' if improved else ''}"

    def finish(self, best: dict, history: list) -> dict:
        cfg = self.cfg
        if best["epoch"] < 0:
            raise GsauError("no epoch finished; nothing to report")
        self.model.load_state_dict(checkpoint.load(self.out / "best.pt"))
        test = evaluate(self.model, self.split, "test", cfg.train.ks, batch_size=cfg.train.eval_batch_size)
        report = {"model": cfg.preset, "dataset": cfg.data.dataset, "best_epoch": best["epoch"] + 1,
                  "epochs_run": len(history), "train_seconds": round(sum(h["seconds"] for h in history), 2),
                  "seconds_per_epoch": round(float(np.median([h["train_seconds"] for h in history])), 3),
                  "valid": best["valid"], "test": test, "config": cfg.to_dict()}
        checkpoint.write_json(self.out / "metrics.json", report)
        for callback in self.callbacks:
            callback.on_train_end(report)
        self.echo(f"best epoch {report['best_epoch']} | test " +
                  " ".join(f"{m}@{k} {test[f'{m}@{k}']:.4f}" for k in _report_cutoffs(cfg.train.ks) for m in ("recall", "ndcg")))
        return report


def _report_cutoffs(ks) -> list[int]:
    """The cut-offs of the final line: 10 and 20 as the paper reports, else the run's first two."""
    return [k for k in (10, 20) if k in ks] or sorted(ks)[:2]


def load_run(run_dir: str | Path) -> tuple[Config, LeaveOneOut, Recommender]:
    """A saved run's config, split and best weights, checked: the same data it was trained on,
    weights that fit the model, and finite (a diverged run is refused, never scored)."""
    run_dir = Path(run_dir)
    cfg = runs.read_config(run_dir)
    try:
        split, model = prepare(cfg)
    except GsauError as e:
        raise GsauError(f"{run_dir}: cannot load the run's dataset: {e}") from None
    runs.check_data(run_dir, split.data)
    weights = checkpoint.load(run_dir / "best.pt")
    if not isinstance(weights, dict):
        raise GsauError(f"{run_dir / 'best.pt'}: not a model checkpoint")
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise GsauError(f"{run_dir / 'best.pt'}: weights do not fit {cfg.preset} on {cfg.data.dataset} "
                        f"(another model's or dataset's checkpoint? {first})") from None
    bad = [name for name, p in model.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise GsauError(f"{run_dir / 'best.pt'}: weights are not finite ({', '.join(bad[:3])}"
                        f"{', ...' if len(bad) > 3 else ''}): the run diverged; retrain it with a lower lr")
    model.eval()
    return cfg, split, model
