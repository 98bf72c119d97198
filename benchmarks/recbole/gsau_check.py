#!/usr/bin/env python
"""GSAU on RecBole's own pipeline: does the paper's objective behave there as it does in gsau?

gsau's `gsau` preset (L_SA for the sequential side) reaches only ~0.012 validation NDCG@20 on Toys,
far below `gsau-rec`; its L_SU jumps from about -6.8 to -2.8 in the second epoch, a partial
collapse, then creeps back (results/NOTES.md). This script trains the same model built from RecBole
1.2.1's stock SASRec and LightGCN (gsau_on_recbole.py: shared item table, the per-prefix and the
(user, item) loaders in lockstep, Xavier-normal init, Adam) and prints the loss terms every 50 steps
and RecBole's own validation after every epoch, so the two pipelines can be compared epoch by epoch.

Run inside the RecBole venv (benchmarks/recbole/setup.sh) on converted data:

    python3 benchmarks/recbole/convert.py --input src/gsau/data/bundled/Toys_and_Games.txt.gz \\
        --name Toys --out-dir benchmarks/.recbole-data
    benchmarks/.recbole-venv/bin/python benchmarks/recbole/gsau_check.py \\
        --data-dir benchmarks/.recbole-data --dataset Toys --model gsau --lr 0.003 --epochs 3 --threads 1
"""

import argparse
import os
import sys
import tempfile
import time

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--data-dir", required=True)
ap.add_argument("--dataset", required=True)
ap.add_argument("--model", choices=["gsau", "gsau-rec"], default="gsau")
ap.add_argument("--gamma", type=float, default=0.1)
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--epochs", type=int, default=3)
ap.add_argument("--threads", type=int, default=1)
ARGS = ap.parse_args()
sys.argv = sys.argv[:1]  # RecBole's Config parses sys.argv too
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import torch  # noqa: E402
from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402
from recbole.utils import init_seed  # noqa: E402

from gsau_on_recbole import GSAUOnRecBole, lockstep, training_config  # noqa: E402  (this script's directory)

torch.set_num_threads(ARGS.threads)


def main():
    data_dir = os.path.abspath(ARGS.data_dir)
    with tempfile.TemporaryDirectory(prefix="gsau-check-") as scratch:
        os.chdir(scratch)  # RecBole's Trainer writes a tensorboard directory into the working directory
        cfg = {**training_config(data_dir, scratch, ARGS.lr, ARGS.epochs), "embedding_size": 64, "n_layers": 2}
        config = Config(model="SASRec", dataset=ARGS.dataset, config_dict=cfg)
        graph_config = Config(model="LightGCN", dataset=ARGS.dataset, config_dict=cfg)
        init_seed(config["seed"], config["reproducibility"])
        train, valid, _ = data_preparation(config, create_dataset(config))
        graph_train, _, _ = data_preparation(graph_config, create_dataset(graph_config))
        init_seed(config["seed"], config["reproducibility"])
        model = GSAUOnRecBole(config, train._dataset, graph_config, graph_train._dataset,
                              gamma=ARGS.gamma, rec=ARGS.model == "gsau-rec")
        trainer = Trainer(config, model)  # its Adam and its full-ranking validation
        step = 0
        for epoch in range(ARGS.epochs):
            t0 = time.time()
            model.train()
            window = []
            for graph_batch, seq_batch in lockstep(graph_train, train):
                trainer.optimizer.zero_grad()
                model.calculate_loss(graph_batch, seq_batch).backward()
                trainer.optimizer.step()
                window.append(model.last_terms)
                step += 1
                if len(window) == 50:
                    shown = " ".join(f"{k} {sum(w[k] for w in window) / 50:.4f}" for k in window[0])
                    print(f"step {step}: {shown}", flush=True)
                    window = []
            _, result = trainer._valid_epoch(valid)
            shown = " ".join(f"{k} {v:.4f}" for k, v in result.items())
            print(f"epoch {epoch + 1}: valid {shown} ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
