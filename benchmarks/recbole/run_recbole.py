#!/usr/bin/env python
"""Time RecBole 1.2.1's training loop on a converted dataset (the RecBole side
of the gsau-vs-RecBole benchmark).

Run inside the RecBole venv made by benchmarks/recbole/setup.sh, on data made
by benchmarks/recbole/convert.py:

    benchmarks/.recbole-venv/bin/python benchmarks/recbole/run_recbole.py \
        --model SASRec --data-dir benchmarks/.recbole-data --dataset Beauty \
        --batches 20 --threads 2

What is timed is what RecBole's ``Trainer._train_epoch`` does per batch, in
the same order: take the next batch from RecBole's own train dataloader
(index sampling, ``Dataset.__getitem__``, the sequential/negative-sampling
collation), ``interaction.to(device)``, ``optimizer.zero_grad()``,
``model.calculate_loss``, ``loss.item()``, ``backward()``, ``optimizer.step()``
(Adam, lr 1e-3, RecBole's default weight_decay 0). The first 2 batches of the
epoch are warm-up and not timed; the next N are. No evaluation, no
checkpoint saving or loading, no tensorboard, no log files: RecBole's
Trainer is not instantiated because its constructor creates a checkpoint
directory and a tensorboard writer in the working directory.

``GSAU-rec`` is GSAU (rec) assembled the way the paper's code assembles it
(gsau_on_recbole.py: RecBole's stock SASRec and LightGCN sharing one item
table, the per-prefix and the (user, item) train loaders drawn in lockstep for
max(len) batches an epoch, the joint loss on L2-normalised embeddings).

Prints exactly one JSON line on stdout. RecBole's own logging is left at its
default (no handlers installed), so only warnings reach stderr.
"""

import argparse
import os
import sys
import time


def _parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, choices=["SASRec", "LightGCN", "GSAU-rec"])
    ap.add_argument("--data-dir", required=True, help="RecBole data_path (holds <dataset>/<dataset>.inter)")
    ap.add_argument("--dataset", required=True, help="dataset name, e.g. Beauty")
    ap.add_argument("--batches", type=int, required=True, help="number of timed batches (after 2 warm-up batches)")
    ap.add_argument("--threads", type=int, required=True, help="torch intra-op threads (also OMP/MKL/BLAS threads)")
    ap.add_argument("--seed", type=int, default=2020, help="RecBole seed (default 2020, RecBole's own default)")
    ap.add_argument("--warmup", type=int, default=2, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


ARGS = _parse_args()
# RecBole's Config also parses sys.argv (``--key=value`` overrides, and a
# warning for anything else); hide our own flags from it.
sys.argv = sys.argv[:1]

# Thread counts for the BLAS/OpenMP pools have to be set before numpy/torch load.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)
# Keep tqdm / wandb and friends out of the way even if something imports them.
os.environ.setdefault("WANDB_MODE", "disabled")

import json  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(ARGS.threads)

import recbole  # noqa: E402
from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.utils import get_model, init_seed  # noqa: E402


def build_config_dict(args, scratch_dir):
    """RecBole config equivalent to the paper setup (see the brief in README)."""
    cfg = {
        # data
        "data_path": os.path.abspath(args.data_dir),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        # the bundled data is already 5-core: no re-filtering, no dedup
        "user_inter_num_interval": "[0,inf)",
        "item_inter_num_interval": "[0,inf)",
        "rm_dup_inter": None,
        "val_interval": None,
        # leave-one-out by time, full ranking
        "eval_args": {
            "split": {"LS": "valid_and_test"},
            "group_by": "user",
            "order": "TO",
            "mode": "full",
        },
        # device / reproducibility
        "gpu_id": "",
        "use_gpu": False,
        "worker": 0,
        "seed": args.seed,
        "reproducibility": True,
        "shuffle": True,
        # never read or write saved datasets / dataloaders / checkpoints in the
        # working directory (create_dataset() would pickle.load a stale one)
        "checkpoint_dir": scratch_dir,
        "save_dataset": False,
        "save_dataloaders": False,
        "dataset_save_path": None,
        "dataloaders_save_path": None,
        "show_progress": False,
        "log_wandb": False,
        "state": "WARNING",
        # optimiser (Trainer._build_optimizer: learner adam)
        "learner": "adam",
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
        "train_batch_size": 512,
        "eval_batch_size": 4096,
        "epochs": 1,
    }
    if args.model == "SASRec":
        cfg.update(
            {
                "loss_type": "CE",
                "MAX_ITEM_LIST_LENGTH": 50,
                "hidden_size": 64,
                "n_layers": 2,
                "n_heads": 2,
                "inner_size": 256,
                "hidden_dropout_prob": 0.5,
                "attn_dropout_prob": 0.5,
                "hidden_act": "gelu",
                "layer_norm_eps": 1e-12,
                "initializer_range": 0.02,
                "train_neg_sample_args": None,
            }
        )
    elif args.model in ("LightGCN", "LightGCN-pairs"):
        cfg.update(
            {
                "embedding_size": 64,
                "n_layers": 2,
                "reg_weight": 1e-5,
                # RecBole's default: one uniform negative per positive (BPR)
                "train_neg_sample_args": {
                    "distribution": "uniform",
                    "sample_num": 1,
                    "alpha": 1.0,
                    "dynamic": False,
                    "candidate_num": 0,
                },
            }
        )
        if args.model == "LightGCN-pairs":  # GSAU's graph side: positive pairs only (alignment needs no negatives)
            cfg["train_neg_sample_args"] = None
    return cfg


def main(args):
    if args.batches < 1:
        raise SystemExit("--batches must be >= 1")
    inter_file = os.path.join(args.data_dir, args.dataset, args.dataset + ".inter")
    if not os.path.isfile(inter_file):
        # RecBole would otherwise try to download a dataset of that name.
        raise SystemExit(f"missing {inter_file}; run benchmarks/recbole/convert.py first")

    with tempfile.TemporaryDirectory(prefix="recbole-bench-") as scratch:
        cfg = build_config_dict(args, scratch)

        t0 = time.perf_counter()
        joint = args.model == "GSAU-rec"
        config = Config(model="SASRec" if joint else args.model, dataset=args.dataset,
                        config_dict=build_config_dict(argparse.Namespace(**{**vars(args), "model": "SASRec"}), scratch)
                        if joint else cfg)
        init_seed(config["seed"], config["reproducibility"])
        t1 = time.perf_counter()
        dataset = create_dataset(config)
        t2 = time.perf_counter()
        train_data, _valid_data, _test_data = data_preparation(config, dataset)
        graph_data = None
        if joint:
            graph_config = Config(model="LightGCN", dataset=args.dataset, config_dict=build_config_dict(
                argparse.Namespace(**{**vars(args), "model": "LightGCN-pairs"}), scratch))
            init_seed(graph_config["seed"], graph_config["reproducibility"])
            graph_data, _, _ = data_preparation(graph_config, create_dataset(graph_config))
        t3 = time.perf_counter()

        # as in recbole.quick_start.run_recbole
        init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
        device = config["device"]
        if joint:
            from gsau_on_recbole import GSAUOnRecBole  # benchmarks/recbole/, this script's directory
            model = GSAUOnRecBole(config, train_data._dataset, graph_config, graph_data._dataset).to(device)
        else:
            model = get_model(config["model"])(config, train_data._dataset).to(device)
        optimizer = torch.optim.Adam(
            model.parameters(), lr=config["learning_rate"], weight_decay=config["weight_decay"]
        )
        t4 = time.perf_counter()

        batches_per_epoch = len(train_data) if graph_data is None else max(len(train_data), len(graph_data))
        warmup = max(0, args.warmup)
        if warmup + args.batches > batches_per_epoch:
            warnings.warn(
                f"epoch has only {batches_per_epoch} batches; timing "
                f"{max(1, batches_per_epoch - warmup)} instead of {args.batches}"
            )
        n_timed = max(1, min(args.batches, batches_per_epoch - warmup))

        def step(interaction):
            # Trainer._train_epoch, single process, no AMP, no grad clipping
            optimizer.zero_grad()
            if joint:
                graph_batch, seq_batch = interaction
                losses = model.calculate_loss(graph_batch.to(device), seq_batch.to(device))
            else:
                losses = model.calculate_loss(interaction.to(device))
            loss = sum(losses) if isinstance(losses, tuple) else losses
            value = loss.item()
            if torch.isnan(loss):
                raise ValueError("Training loss is nan")
            loss.backward()
            optimizer.step()
            return value

        model.train()
        if joint:
            from gsau_on_recbole import lockstep
            it = lockstep(graph_data, train_data)
        else:
            it = iter(train_data)  # shuffles the index order for this epoch
        losses_seen = []
        for _ in range(warmup):
            losses_seen.append(step(next(it)))
        t5 = time.perf_counter()
        for _ in range(n_timed):
            losses_seen.append(step(next(it)))
        t6 = time.perf_counter()
        del it

        seconds = t6 - t5
        train_dataset = train_data._dataset
        out = {
            "model": args.model,
            "dataset": args.dataset,
            "batches_timed": n_timed,
            "warmup_batches": warmup,
            "seconds": round(seconds, 6),
            "seconds_per_batch": round(seconds / n_timed, 6),
            "batches_per_epoch": batches_per_epoch,
            "seconds_per_epoch_scaled": round(seconds / n_timed * batches_per_epoch, 6),
            "train_samples": len(train_dataset),
            "graph_train_samples": len(graph_data._dataset) if joint else None,
            "batch_size": train_data._batch_size,
            "data_prep_seconds": round(t3 - t1, 6),
            "dataset_seconds": round(t2 - t1, 6),
            "dataloader_seconds": round(t3 - t2, 6),
            "config_seconds": round(t1 - t0, 6),
            "model_build_seconds": round(t4 - t3, 6),
            "n_users": int(dataset.user_num),  # includes RecBole's [PAD] id 0
            "n_items": int(dataset.item_num),  # includes RecBole's [PAD] id 0
            "first_loss": round(losses_seen[0], 6),
            "last_loss": round(losses_seen[-1], 6),
            "recbole_version": recbole.__version__,
            "torch_version": torch.__version__,
            "numpy_version": np.__version__,
            "threads": torch.get_num_threads(),
            "device": str(device),
        }
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
