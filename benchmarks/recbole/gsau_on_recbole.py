"""GSAU built from RecBole 1.2.1's stock modules, for the benchmark and the loss checks.

The paper's code is a RecBole fork; this follows its design without any of its code: RecBole's
SASRec and LightGCN share one item table, and the joint objective acts on L2-normalised vectors:

    L = L_GA + L_S + gamma (L_GU + L_SU)
    L_GA = align(user, item) on the LightGCN output (mean of layers) of a batch of training pairs
    L_GU = unif(users) + unif(items)
    L_S  = CE over all items of s^ . item table     (GSAU (rec))
         | align(s^, p^)                           (GSAU: L_SA)
    L_SU = unif(s^) + unif(p^) + unif(s^, another sample's p^)
    align(x, y) = mean ||x - y||^2,  unif(x) = log mean_{i<j} exp(-2 ||x_i - x_j||^2)

Import inside the RecBole virtual environment only.
"""

import torch
import torch.nn.functional as F
from recbole.model.general_recommender.lightgcn import LightGCN
from recbole.model.init import xavier_normal_initialization
from recbole.model.sequential_recommender.sasrec import SASRec


def training_config(data_dir, scratch, lr, epochs):
    """RecBole settings of the loss checks: the bundled 5-core data as is, leave-one-out by time,
    full ranking, batch 512, max length 50, Adam at `lr`, validation by NDCG@20; nothing written
    outside `scratch`."""
    return {
        "data_path": data_dir, "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)", "rm_dup_inter": None,
        "val_interval": None,
        "eval_args": {"split": {"LS": "valid_and_test"}, "group_by": "user", "order": "TO", "mode": "full"},
        "gpu_id": "", "use_gpu": False, "worker": 0, "seed": 2020, "reproducibility": True,
        "checkpoint_dir": scratch, "show_progress": False, "log_wandb": False, "state": "WARNING",
        "learning_rate": lr, "weight_decay": 0.0, "train_batch_size": 512, "eval_batch_size": 4096,
        "epochs": epochs, "loss_type": "CE", "MAX_ITEM_LIST_LENGTH": 50, "train_neg_sample_args": None,
        "metrics": ["Recall", "NDCG"], "topk": [10, 20], "valid_metric": "NDCG@20",
    }


def alignment(x, y):
    return (x - y).pow(2).sum(dim=1).mean()


def uniformity(x, y=None):
    if len(x) < 2:  # a lone sample has no pair (as in gsau, the term is 0)
        return x.new_zeros(())
    sq = torch.pdist(x).pow(2) if y is None else (x - y).pow(2).sum(dim=1)
    return sq.mul(-2).exp().mean().log()


def shuffled(p):
    """Each row replaced by another row (a random derangement): the user-negative-item pairs."""
    order = torch.randperm(len(p))
    out = torch.empty_like(p)
    out[order] = p[order.roll(1)]
    return out


class GSAUOnRecBole(SASRec):
    """Stock SASRec (its forward, its full-ranking prediction) plus a stock LightGCN over the same
    item table; `rec` picks CE (GSAU (rec)) or alignment (GSAU) for the sequential side."""

    def __init__(self, config, dataset, graph_config, graph_dataset, gamma=0.1, rec=True):
        super().__init__(config, dataset)
        self.graph = LightGCN(graph_config, graph_dataset)
        if list(graph_dataset.field2id_token[graph_dataset.iid_field]) != list(dataset.field2id_token[dataset.iid_field]):
            raise SystemExit("item ids differ between the two RecBole datasets (graph and sequential)")
        self.graph.item_embedding = self.item_embedding
        self.gamma, self.rec = gamma, rec
        self.apply(xavier_normal_initialization)
        self.last_terms = {}

    def calculate_loss(self, graph_batch, seq_batch):
        g = self.graph
        users, items = g.forward()  # mean of the LightGCN layers over the whole graph, every step
        eu = F.normalize(users[graph_batch[g.USER_ID]], dim=-1)
        ei = F.normalize(items[graph_batch[g.ITEM_ID]], dim=-1)
        s = F.normalize(self.forward(seq_batch[self.ITEM_SEQ], seq_batch[self.ITEM_SEQ_LEN]), dim=-1)
        targets = seq_batch[self.POS_ITEM_ID]
        p = F.normalize(self.item_embedding(targets), dim=-1)
        terms = {"L_GA": alignment(eu, ei), "L_GU": uniformity(eu) + uniformity(ei),
                 "L_SU": uniformity(s) + uniformity(p) + uniformity(s, shuffled(p))}
        if self.rec:
            terms["L_CE"] = F.cross_entropy(s @ self.item_embedding.weight.T, targets)
        else:
            terms["L_SA"] = alignment(s, p)
        self.last_terms = {k: float(v.detach()) for k, v in terms.items()}
        return sum(self.gamma * v if k in ("L_GU", "L_SU") else v for k, v in terms.items())


def lockstep(graph_data, seq_data):
    """Both train loaders in step for max(len) batches; the shorter one restarts (the fork's
    joint loader)."""
    g_it, s_it = iter(graph_data), iter(seq_data)
    for _ in range(max(len(graph_data), len(seq_data))):
        try:
            g = next(g_it)
        except StopIteration:
            g_it = iter(graph_data)
            g = next(g_it)
        try:
            q = next(s_it)
        except StopIteration:
            s_it = iter(seq_data)
            q = next(s_it)
        yield g, q
