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

from gsau import checkpoint, distributed, runs, runtime
from gsau.config import Config
from gsau.data import LeaveOneOut, load_dataset
from gsau.data.batching import GraphStream, SequenceStream, to_device
from gsau.distributed import Dist
from gsau.encoders import registry
from gsau.encoders.lightgcn import normalized_adjacency
from gsau.errors import CollapseWarning, GsauError, PerformanceWarning
from gsau.evaluation import evaluate
from gsau.model import Recommender
from gsau.objectives import GRAPH_OBJECTIVES
from gsau.optim import make_optimizer


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
    model = Recommender(cfg.net, split.n_users, split.n_items, adjacency)
    # lazy_adam updates the table rows a step reads: their lookups give row-sparse gradients.
    model.sparse_tables = cfg.train.optimizer == "lazy_adam"
    return model


def make_streams(cfg: Config, split: LeaveOneOut, dist: Dist | None = None):
    """(graph stream or None, sequential stream or None) for the preset's objectives; with several
    processes each yields this rank's share of every global batch."""
    n, t = cfg.net, cfg.train
    graph = seq = None
    if n.graph_loss:
        graph = GraphStream(split, t.batch_size, negatives=GRAPH_OBJECTIVES[n.graph_loss].negatives, dist=dist)
    if n.sequence_loss:
        masked_lm = registry.sequence_encoder(n.sequence_encoder).masked_lm
        seq = SequenceStream(split, n.max_len, t.batch_size, t.seq_batching, masked_lm=masked_lm,
                             mask_ratio=n.mask_ratio, dist=dist)
    return graph, seq


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
               seq_chunks: list | None, check_finite: bool = True) -> dict[str, torch.Tensor]:
    """One optimiser step of the joint objective; returns the step's loss terms as detached
    0-dim tensors on the model's device (read them once per epoch, not per step: on a GPU each
    read is a host sync). With `check_finite` a non-finite loss raises NonFiniteLoss before the
    weights are touched (on every rank at once when several processes train); without it (a GPU,
    where the check would sync every step) the trainer checks once per epoch. With several
    processes the ranks' gradients are averaged before the optimiser steps."""
    total, terms = model.loss(graph_batch, seq_chunks)
    dist = getattr(model, "dist", None) or Dist()
    if check_finite and dist.any(not bool(torch.isfinite(total)), total.device):
        raise NonFiniteLoss([k for k, v in terms.items() if not torch.isfinite(v)] or ["another rank's loss"])
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    dist.average_gradients(model)
    optimizer.step()
    return terms


class Callback:
    """The trainer's seam for loggers and sinks (console, TensorBoard, MLflow, an API's history):
    override what you need. Records are plain dicts, the same that log.jsonl and metrics.json hold."""

    def on_train_start(self, trainer: "Trainer") -> None:
        """Once before the first epoch, a resumed run's included: the trainer's cfg, model (on its
        device) and split are ready."""

    def on_epoch_record(self, record: dict) -> None:
        """Each epoch, before its record is written (log.jsonl, last.pt): fields added to `record`
        here are logged with it (the dynamics probe, train.probe)."""

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
        # Every rank's torch generator (dropout draws differ by rank), so a resume of a
        # several-process run continues each rank where it stopped.
        torch_rng = self.dist.all_gather_object(torch.get_rng_state())
        state = {"epoch": epoch, "best": best, "history": history, "model": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "torch_rng": torch_rng[0],
                 "numpy_rng": json.dumps(rng.bit_generator.state), "config": json.dumps(self.cfg.to_dict()),
                 "world_size": self.dist.world}
        if self.dist.active:
            state["torch_rng_ranks"] = torch_rng
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def _restore(self, state: dict, rng) -> None:
        saved_world = state.get("world_size", 1)
        if saved_world != self.dist.world:
            raise GsauError(f"{self.out}: the run was trained with {saved_world} process(es) and is resumed with "
                            f"{self.dist.world}; resume it with the same number (--nproc {saved_world}), as the "
                            "shares of each batch and each rank's random draws depend on it")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng_ranks"][self.dist.rank] if self.dist.active else state["torch_rng"])
        if self.device.type == "cuda" and "cuda_rng" in state:  # from a CPU checkpoint: CUDA draws start afresh
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        rng.bit_generator.state = json.loads(state["numpy_rng"])

    def _open_run_dir(self, resume: bool) -> dict | None:
        """Check `out` may be written, and return the checkpoint to continue from (or None).

        A directory holding any run file is written into only by a resume of a run that has
        last.pt: a finished record (results/runs/*: config, log, metrics, no weights) is never
        overwritten or retrained over. The one exception is a run stopped before its first epoch
        ended (its config.yaml and data fingerprint, perhaps an unrecorded epoch's best.pt, no last.pt):
        resuming it starts it afresh, which loses nothing."""
        out = self.out
        if out.exists() and not out.is_dir():
            raise GsauError(f"{out}: exists and is not a directory; pick another --out")
        present = [f for f in runs.RUN_FILES if (out / f).exists()]
        if resume and "last.pt" in present:
            state = checkpoint.load(out / "last.pt")
            runs.check_same_run(json.loads(state["config"]), self.cfg, out)
            return state
        if resume and set(present) <= {"config.yaml", runs.DATA_FILE, "best.pt"}:
            # Stopped before its first epoch was recorded (best.pt is written just before last.pt and
            # the log): nothing to continue, start afresh.
            return None
        if present:
            if resume:
                raise GsauError(f"{out}: nothing to resume (no last.pt checkpoint; it holds {', '.join(present)}); "
                                "a finished record is never retrained over: pick another --out")
            hint = " or `gsau train --resume " + str(out) + "` to continue it" if "last.pt" in present else ""
            raise GsauError(f"{out} already holds a run ({', '.join(present)}); pick another --out{hint}")
        return None

    def _check_ranks_agree(self) -> None:
        """Every rank must train the same run: refuse (on all of them) when their settings differ."""
        configs = self.dist.all_gather_object(json.dumps(self.cfg.to_dict(), sort_keys=True))
        if len(set(configs)) > 1:
            differ = [r for r, c in enumerate(configs) if c != configs[0]]
            raise GsauError(f"{self.out}: the processes were started with different settings "
                            f"(rank 0 vs rank {differ[0]}); start every rank with the same command")

    def run(self, resume: bool = False) -> dict:
        self.dist = distributed.from_environment(self.cfg.train.device)
        try:
            return self._run(resume)
        finally:
            if self.dist.owns_group:  # the process group this run opened (Dist.close says why)
                self.dist.close()
                if getattr(self, "model", None) is not None:
                    self.model.dist = Dist()  # every rank holds the whole model: it scores alone now

    def _run(self, resume: bool) -> dict:
        cfg, t = self.cfg, self.cfg.train
        runtime.keep_freed_memory()
        self.device = distributed.device_for(self.dist, runtime.resolve_device(t.device))
        if t.precision == "bf16" and self.device.type == "cpu":
            warnings.warn("precision=bf16 on the CPU: supported, but measured slower than float32 here "
                          "(BENCHMARKS.md)", PerformanceWarning, stacklevel=2)
        if not self.dist.is_main:
            self.echo, self.progress, self.callbacks = (lambda line: None), False, []
        if t.threads:
            torch.set_num_threads(t.threads)
        warning = runtime.wait_policy_warning(torch.get_num_threads())
        if warning and self.dist.is_main:
            warnings.warn(warning, PerformanceWarning, stacklevel=2)
        self._check_ranks_agree()
        if self.dist.active and t.optimizer == "lazy_adam":
            raise GsauError(f"{self.out}: train.optimizer=lazy_adam trains in one process only (its row-sparse "
                            "gradients are not all-reduced); use optimizer=adam with several processes")
        state = self._open_run_dir(resume)
        # Data and model first: a failed start (bad data, bad sizes) leaves no directory behind
        # that looks like a run.
        split, self.model = prepare(cfg)
        self.model.to(self.device)
        self.model.dist = self.dist
        if self.dist.active:
            self.model.pair_generator = torch.Generator()  # reseeded every step, alike on all ranks
        self.model.autocast_dtype = torch.bfloat16 if t.precision == "bf16" else None
        self.split = split
        self.dist.barrier()  # every rank has checked the directory before rank 0 writes into it
        if self.dist.is_main:
            fingerprint = runs.data_fingerprint(split.data)
            runs.make_run_dir(self.out)
            checkpoint.write_text(self.out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            checkpoint.write_json(self.out / runs.DATA_FILE, fingerprint)
        self.optimizer = make_optimizer(cfg, self.model)
        rng = np.random.default_rng(t.seed)
        torch.manual_seed(t.seed + 1)  # dropout and derangements; the model init used `seed`
        graph, seq = make_streams(cfg, split, self.dist)
        start, best, history = 0, {"epoch": -1, "score": -1.0, "valid": {}}, []
        if state is not None:
            self._restore(state, rng)
            start, best, history = state["epoch"] + 1, state["best"], state["history"]
            self.echo(f"resuming {self.out} after epoch {state['epoch'] + 1}")

        if t.probe and self.dist.is_main:  # train.probe asks for the dynamics probe in every record
            from gsau.research.dynamics import Probe
            self.callbacks = [*self.callbacks, Probe(t.probe)]
        for callback in self.callbacks:
            callback.on_train_start(self)
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
            valid = evaluate(self.model, split, "valid", t.ks, batch_size=t.eval_batch_size, dist=self.dist)
            score = valid[t.metric]
            improved = score > best["score"]
            if improved:
                best = {"epoch": epoch, "score": score, "valid": valid}
            history.append({"epoch": epoch + 1, **terms, "lr": learning_rate(t, (epoch + 1) * steps - 1, steps),
                            **{f"valid_{k}": v for k, v in valid.items()},
                            "train_seconds": train_s, "seconds": time.perf_counter() - t0})
            for callback in self.callbacks:
                callback.on_epoch_record(history[-1])
            state = self._state(epoch, best, history, rng)  # a collective: every rank takes part
            if self.dist.is_main:
                if improved:
                    checkpoint.save(self.model.state_dict(), self.out / "best.pt")
                checkpoint.save(state, self.out / "last.pt")
                checkpoint.write_text(self.out / "log.jsonl", "".join(json.dumps(h) + "\n" for h in history))
            self.dist.barrier()
            self.echo(self._line(history[-1], t.metric, epoch == best["epoch"]))
            for callback in self.callbacks:
                callback.on_epoch_end(history[-1])
            warning = collapse_warning(terms)
            if warning and not warned and self.dist.is_main:
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
        # On the CPU the finite check is free; on a GPU it would sync every step, so the terms of
        # each step are kept on the device and looked at once, when the epoch ends.
        check_each_step = self.device.type == "cpu"
        sums: dict[str, torch.Tensor] = {}
        per_step = []
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=steps, desc=f"epoch {epoch + 1}", leave=False, file=sys.stderr, dynamic_ncols=True)
        for i in range(steps):
            lr = learning_rate(self.cfg.train, epoch * steps + i, steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            if self.model.pair_generator is not None:
                self.model.pair_generator.manual_seed(self.cfg.train.seed * 1_000_003 + epoch * steps + i)
            try:
                terms = train_step(self.model, self.optimizer, to_device(next(graph_it) if graph_it else None, self.device),
                                   to_device(next(seq_it) if seq_it else None, self.device), check_each_step)
            except NonFiniteLoss as e:
                self._diverged(epoch, i, str(e), lr)
            for k, v in terms.items():  # summed on the device, read once when the epoch ends
                sums[k] = sums[k] + v.double() if k in sums else v.double()
            if not check_each_step:
                per_step.append(torch.stack([v.double() for v in terms.values()]))
            if bar:
                bar.update()
                if i % 10 == 0:
                    bar.set_postfix({k: f"{float(v):.3f}" for k, v in terms.items()}, refresh=False)
        if bar:
            bar.close()
        names = list(sums)
        total = self.dist.sum_(torch.stack([sums[k] for k in names])) / self.dist.world
        if not check_each_step and not bool(torch.isfinite(total).all()):
            steps_terms = torch.stack(per_step)
            bad_step = int((~torch.isfinite(steps_terms)).any(dim=1).nonzero()[0])
            bad = [k for k, ok in zip(names, torch.isfinite(steps_terms[bad_step]).tolist()) if not ok]
            self._diverged(epoch, bad_step, f"loss diverged ({', '.join(bad)} not finite)", lr)
        return {k: float(v) / steps for k, v in zip(names, total.cpu())}

    def _diverged(self, epoch: int, step: int, what: str, lr: float):
        last = "the last checkpoint (last.pt, best.pt) is intact" if epoch else "no checkpoint was written"
        raise GsauError(f"{self.out}: epoch {epoch + 1}, step {step + 1}: {what}; training stopped and {last}. "
                        f"Lower lr (now {lr:g}) or check gamma")

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
        test = evaluate(self.model, self.split, "test", cfg.train.ks, batch_size=cfg.train.eval_batch_size,
                        dist=self.dist)
        report = {"model": cfg.preset, "dataset": cfg.data.dataset, "best_epoch": best["epoch"] + 1,
                  "epochs_run": len(history), "train_seconds": round(sum(h["seconds"] for h in history), 2),
                  "seconds_per_epoch": round(float(np.median([h["train_seconds"] for h in history])), 3),
                  "valid": best["valid"], "test": test, "config": cfg.to_dict()}
        if self.dist.is_main:
            checkpoint.write_json(self.out / "metrics.json", report)
        self.dist.barrier()
        for callback in self.callbacks:
            callback.on_train_end(report)
        self.echo(f"best epoch {report['best_epoch']} | test " +
                  " ".join(f"{m}@{k} {test[f'{m}@{k}']:.4f}" for k in _report_cutoffs(cfg.train.ks) for m in ("recall", "ndcg")))
        return report


def _report_cutoffs(ks) -> list[int]:
    """The cut-offs of the final line: 10 and 20 as the paper reports, else the run's first two."""
    return [k for k in (10, 20) if k in ks] or sorted(ks)[:2]


def load_run(run_dir: str | Path, device: str | None = None) -> tuple[Config, LeaveOneOut, Recommender]:
    """A saved run's config, split and best weights, checked: the same data it was trained on,
    weights that fit the model, and finite (a diverged run is refused, never scored). The model is
    on `device` ("auto", "cpu", "cuda[:N]"; default: the CPU, whatever device trained it)."""
    run_dir = Path(run_dir)
    target = runtime.resolve_device(device or "cpu")
    cfg = runs.read_config(run_dir)
    own_data = run_dir / "data"  # a run that keeps its data (gsau.Model trained on a DataFrame)
    if not Path(cfg.data.dataset).exists() and (own_data / "dataset.npz").exists():
        cfg.data.dataset = str(own_data.resolve())  # the run directory was moved: its own copy
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
    model.to(target).eval()
    return cfg, split, model
