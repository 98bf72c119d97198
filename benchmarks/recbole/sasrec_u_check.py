#!/usr/bin/env python
"""SASRec (u) on RecBole's own pipeline: does the paper's L_SA + gamma L_SU collapse there too?

gsau's `sasrec-u` preset collapses within an epoch (every sequence representation and item onto one
direction; results/NOTES.md). This script rules our code out: it trains RecBole 1.2.1's stock SASRec
(its per-prefix data loader, its TransformerEncoder, its Trainer's validation) with the loss replaced
by the SASRec (u) objective as the paper's code defines it, Xavier-normal initialisation over the
whole model as that code applies it, Adam at lr 1e-3:

    L_SA = mean ||s^ - p^||^2                      (s^, p^: L2-normalised output and target item)
    L_SU = unif(s^) + unif(p^) + unif(s^, shuffled p^),   unif = log mean exp(-2 ||x - y||^2)
    L    = L_SA + gamma L_SU                       (gamma 0.05 in the authors' README)

Run inside the RecBole venv (benchmarks/recbole/setup.sh) on converted data:

    python3 benchmarks/recbole/convert.py --input src/gsau/data/bundled/Toys_and_Games.txt.gz \
        --name Toys --out-dir benchmarks/.recbole-data
    benchmarks/.recbole-venv/bin/python benchmarks/recbole/sasrec_u_check.py \\
        --data-dir benchmarks/.recbole-data --dataset Toys --gamma 0.05 --epochs 3 --threads 1

Prints the loss terms every 50 steps and validation Recall/NDCG@10/20 after every epoch.
"""

import argparse
import os
import sys
import tempfile
import time

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--data-dir", required=True)
ap.add_argument("--dataset", required=True)
ap.add_argument("--gamma", type=float, default=0.05)
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--epochs", type=int, default=3)
ap.add_argument("--threads", type=int, default=1)
ARGS = ap.parse_args()
sys.argv = sys.argv[:1]  # RecBole's Config parses sys.argv too
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.model.init import xavier_normal_initialization  # noqa: E402
from recbole.model.sequential_recommender.sasrec import SASRec  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402
from recbole.utils import init_seed  # noqa: E402

from gsau_on_recbole import alignment, training_config, uniformity  # noqa: E402  (this script's directory)

torch.set_num_threads(ARGS.threads)


class SASRecU(SASRec):
    """Stock SASRec; only the training objective differs."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.apply(xavier_normal_initialization)
        self.window = []

    def calculate_loss(self, interaction):
        s = F.normalize(self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]), dim=-1)
        p = F.normalize(self.item_embedding(interaction[self.POS_ITEM_ID]), dim=-1)
        while True:  # a random permutation with no fixed point: never a sample's own target
            perm = torch.randperm(len(p))
            if not (perm == torch.arange(len(p))).any():
                break
        shuffled = p[perm]
        l_sa = alignment(s, p)
        l_su = uniformity(s) + uniformity(p) + uniformity(s, shuffled)
        self.window.append((l_sa.item(), l_su.item()))
        if len(self.window) % 50 == 0:
            last = self.window[-50:]
            print(f"step {len(self.window)}: L_SA {sum(a for a, _ in last) / 50:.4f} "
                  f"L_SU {sum(u for _, u in last) / 50:.4f}", flush=True)
        return l_sa + ARGS.gamma * l_su


def main():
    data_dir = os.path.abspath(ARGS.data_dir)
    with tempfile.TemporaryDirectory(prefix="sasrec-u-check-") as scratch:
        os.chdir(scratch)  # RecBole's Trainer writes a tensorboard directory into the working directory
        cfg = training_config(data_dir, scratch, ARGS.lr, ARGS.epochs)
        config = Config(model="SASRec", dataset=ARGS.dataset, config_dict=cfg)
        init_seed(config["seed"], config["reproducibility"])
        train, valid, _ = data_preparation(config, create_dataset(config))
        init_seed(config["seed"], config["reproducibility"])
        trainer = Trainer(config, SASRecU(config, train._dataset))
        for epoch in range(ARGS.epochs):
            t0 = time.time()
            trainer._train_epoch(train, epoch)
            _, result = trainer._valid_epoch(valid)
            shown = " ".join(f"{k} {v:.4f}" for k, v in result.items())
            print(f"epoch {epoch + 1}: valid {shown} ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
