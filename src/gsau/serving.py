"""Recommendations from a trained run, in the dataset's own ids.

The one scoring path behind `gsau recommend`, the Python API (`gsau.Model`), the HTTP server
(`gsau serve`) and the exporters (`gsau export`): users are scored from their whole known history
(`Recommender.score_histories`, as evaluation scores them), a history of items given by a caller
as one more CSR row of the same function, and every ranking is a batched top-k.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gsau.errors import GsauError

UNKNOWN_POLICIES = ("skip", "error", "report")  # what to do with unknown item ids in a history

class UnknownIds(GsauError):
    """Ids that are not in the run's dataset (every one of them, not just the first)."""

    def __init__(self, kind: str, ids: Sequence[str], dataset: str):
        self.kind, self.ids = kind, [str(i) for i in ids]
        shown = ", ".join(repr(i) for i in self.ids[:5]) + (f" and {len(self.ids) - 5} more" if len(self.ids) > 5 else "")
        super().__init__(f"unknown {kind}{'s' if len(self.ids) > 1 else ''} {shown} in dataset {dataset!r}")


class Ranked(NamedTuple):
    """One ranking: internal ids (1-based) best first, and their scores."""

    items: np.ndarray
    scores: np.ndarray


def require_finished(run_dir: str | Path) -> Path:
    """A run directory that finished training (metrics.json written), or a one-line error: a
    server or an export built from a run still training would serve weights that keep changing."""
    from gsau import runs
    run_dir = Path(run_dir)
    runs.read_config(run_dir)  # "not a gsau run directory" when there is none
    state = runs.run_state(run_dir)
    if state != "done":
        hint = f"; finish it with `gsau train --resume {run_dir}`" if state == "resume" else ""
        raise GsauError(f"{run_dir}: not a finished run (no metrics.json: still training, stopped or failed){hint}")
    return run_dir


class Recommendations:
    def __init__(self, cfg, split, model):
        self.cfg, self.split, self.model = cfg, split, model
        self.data = split.data
        self.device = model.item_table.weight.device
        self._item_lookup: dict[str, int] | None = None
        self._graph_tables = None
        self._unit_items = None
        self._popular = None
        self._user_vectors = None
        self._stored = None  # (user vectors [U + 1, d'], item vectors transposed [d', I + 1]) once stored

    @classmethod
    def from_run(cls, run_dir, finished: bool = False, device: str | None = None) -> "Recommendations":
        """The run's best weights on `device` (auto, cpu, cuda[:N]; default the CPU); with
        `finished`, only from a run that finished training."""
        from gsau.trainer import load_run
        if finished:
            require_finished(run_dir)
        return cls(*load_run(run_dir, device))

    @property
    def takes_histories(self) -> bool:
        """Whether a history of items can be scored without a user: only a sequence scorer reads one."""
        return self.cfg.net.scorer == "sequence"

    @property
    def n_items(self) -> int:
        return self.data.n_items

    # -- ids ---------------------------------------------------------------------------------
    def user_indices(self, ids: Sequence, fallback: str | None = None) -> np.ndarray:
        """Internal ids (1..U) of external user ids. An unknown one is 0 with fallback="popular",
        else every unknown one is named in one UnknownIds error."""
        if fallback not in (None, "popular"):
            raise GsauError(f"fallback must be None or 'popular', not {fallback!r}")
        out = np.zeros(len(ids), dtype=np.int64)
        for n, user in enumerate(ids):
            try:
                out[n] = self.data.user_index(str(user))
            except KeyError:
                pass
        if fallback is None and not out.all():
            raise UnknownIds("user", [str(u) for u, i in zip(ids, out) if i == 0], self.data.name)
        return out

    def item_indices(self, ids: Sequence) -> tuple[np.ndarray, list[str]]:
        """(internal ids of the known items, in the given order; the unknown ids)."""
        if self._item_lookup is None:
            self._item_lookup = {item: k + 1 for k, item in enumerate(self.data.item_ids.tolist())}
        known, unknown = [], []
        for item in ids:
            index = self._item_lookup.get(str(item))
            if index is None:
                unknown.append(str(item))
            else:
                known.append(index)
        return np.asarray(known, dtype=np.int64), unknown

    def history(self, items: Sequence, unknown: str = "skip") -> tuple[np.ndarray, list[str]]:
        """A caller's history of item ids (oldest first) as internal ids, and the unknown ids left
        out: unknown="error" makes any unknown id an error; "skip" and "report" leave them out
        (what reporting means is the caller's: a warning, a field of an answer)."""
        if unknown not in UNKNOWN_POLICIES:
            raise GsauError(f"unknown must be {', '.join(UNKNOWN_POLICIES)}, not {unknown!r}")
        history, missing = self.item_indices(items)
        if missing and unknown == "error":
            raise UnknownIds("item", missing, self.data.name)
        if len(history) == 0:
            raise UnknownIds("item", missing, self.data.name) if missing else GsauError("the history is empty")
        return history, missing

    def item_ids(self, items: np.ndarray) -> list[str]:
        return self.data.item_ids[np.asarray(items, dtype=np.int64) - 1].tolist()

    # -- scores ------------------------------------------------------------------------------
    def scores(self, users: np.ndarray) -> torch.Tensor:
        """[B, I + 1] scores given each user's whole known history (all their interactions)."""
        users = np.asarray(users, dtype=np.int64)
        if self._stored is not None:
            queries, items_t = self._stored
            return queries[torch.from_numpy(users).to(self.device)] @ items_t
        return self.model.score_histories(users, self.data.indptr, self.data.items)

    def store_user_vectors(self) -> None:
        """Score known users from stored vectors from now on: every user's query vector is computed
        once (their history does not change while a run is served), so scoring a user is one
        product with the item vectors instead of a pass of the sequence encoder. The same scores up
        to float rounding; what a server does at start-up."""
        self._stored = (self.user_vectors(), self.item_vectors().T.contiguous())

    def history_scores(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """[B, I + 1] scores of caller-given histories (internal ids, oldest first, none empty): each
        is one more CSR row for `score_histories`, exactly as a user's own history is read."""
        if not self.takes_histories:
            raise GsauError(self.no_history_reason())
        if any(len(h) == 0 for h in histories):
            raise ValueError("every history needs at least one item")
        indptr = np.concatenate([[0], np.cumsum([len(h) for h in histories])]).astype(np.int64)
        flat = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories])
        return self.model.score_histories(np.arange(1, len(histories) + 1), indptr, flat)

    def no_history_reason(self) -> str:
        return (f"{self.cfg.preset} ranks with its graph encoder (scorer=graph), which has an embedding per "
                "known user and no sequence encoder to read a history of items: ask for known users, or "
                "use a preset that ranks with a sequence encoder (gsau-rec, sasrec, bert4rec, ...)")

    def top(self, scores: torch.Tensor, k: int | Sequence[int],
            exclude: Sequence[np.ndarray | None] | None = None) -> list[Ranked]:
        """The best k items of each row of [B, I + 1] scores (k per row or one for all), leaving
        out padding and each row's `exclude` items; k is capped by the items left to rank."""
        ks = np.broadcast_to(np.asarray(k, dtype=np.int64), (len(scores),))
        scores = scores.clone()
        scores[:, 0] = -torch.inf  # padding
        if exclude is not None and any(e is not None and len(e) for e in exclude):
            parts = [np.asarray(e if e is not None else [], dtype=np.int64) for e in exclude]
            rows = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
            scores[torch.from_numpy(rows).to(scores.device), torch.from_numpy(np.concatenate(parts)).to(scores.device)] = -torch.inf
        values, items = torch.topk(scores, int(min(ks.max(initial=1), self.n_items)), dim=1)
        values, items = values.cpu().numpy(), items.cpu().numpy()
        out = []
        for r, row_k in enumerate(ks):
            keep = np.isfinite(values[r, :row_k])  # an excluded item is never recommended
            out.append(Ranked(items[r, :row_k][keep], values[r, :row_k][keep]))
        return out

    def recommend(self, users: np.ndarray, k: int | Sequence[int], exclude_seen: bool | Sequence[bool] = False) -> list[Ranked]:
        """Top-k of each internal user id, scored in chunks of eval_batch_size users; user 0 (an
        unknown one under fallback="popular") gets the most popular items."""
        users = np.asarray(users, dtype=np.int64)
        if not users.all():
            known = np.flatnonzero(users)
            ranked = dict(zip(known.tolist(), self.recommend(users[known], np.broadcast_to(k, users.shape)[known],
                                                             np.broadcast_to(exclude_seen, users.shape)[known])))
            ks = np.broadcast_to(np.asarray(k, dtype=np.int64), users.shape)
            return [ranked[n] if u else self.popular(ks[n]) for n, u in enumerate(users)]
        ks = np.broadcast_to(np.asarray(k, dtype=np.int64), users.shape)
        seen = np.broadcast_to(np.asarray(exclude_seen, dtype=bool), users.shape)
        out: list[Ranked] = []
        step = self.cfg.train.eval_batch_size
        for start in range(0, len(users), step):
            chunk = users[start:start + step]
            exclude = [self.data.sequence(u) if s else None for u, s in zip(chunk, seen[start:start + step])]
            out += self.top(self.scores(chunk), ks[start:start + step], exclude)
        return out

    def recommend_histories(self, histories: Sequence[np.ndarray], k: int | Sequence[int],
                            exclude_seen: bool | Sequence[bool] = False) -> list[Ranked]:
        """Top-k of each caller-given history (internal ids); exclude_seen leaves out its items."""
        ks = np.broadcast_to(np.asarray(k, dtype=np.int64), (len(histories),))
        seen = np.broadcast_to(np.asarray(exclude_seen, dtype=bool), (len(histories),))
        out: list[Ranked] = []
        step = self.cfg.train.eval_batch_size
        for start in range(0, len(histories), step):
            chunk = histories[start:start + step]
            exclude = [h if s else None for h, s in zip(chunk, seen[start:start + step])]
            out += self.top(self.history_scores(chunk), ks[start:start + step], exclude)
        return out

    def popular(self, k: int) -> Ranked:
        """The k items with the most interactions in the dataset (score: that count), the fallback
        for a visitor the model knows nothing about."""
        if self._popular is None:
            counts = np.bincount(self.data.items, minlength=self.n_items + 1)[1:]
            order = np.argsort(-counts, kind="stable")  # ties by internal id
            self._popular = Ranked(order + 1, counts[order].astype(np.float32))
        k = min(int(k), self.n_items)
        return Ranked(self._popular.items[:k], self._popular.scores[:k])

    def similar(self, items: np.ndarray, k: int | Sequence[int]) -> list[Ranked]:
        """The k items most similar to each internal item id: cosine similarity of the item
        embeddings the scorer ranks with (final LightGCN embeddings, or the shared item table)."""
        if self._unit_items is None:
            table = self._graph()[1] if self.cfg.net.scorer == "graph" else self.model.item_table.weight.detach()
            self._unit_items = F.normalize(table.float(), dim=1)
        items = np.asarray(items, dtype=np.int64)
        sims = self._unit_items[torch.from_numpy(items).to(self.device)] @ self._unit_items.T
        return self.top(sims, k, [np.array([i]) for i in items])

    def top_k(self, user_id: str, k: int = 10, exclude_seen: bool = False) -> list[tuple[str, float]]:
        """[(item id, score), ...] best first for one user, in the dataset's own ids."""
        ranked = self.recommend(self.user_indices([user_id]), k, exclude_seen)[0]
        return list(zip(self.item_ids(ranked.items), ranked.scores.tolist()))

    # -- the scorer as an inner product (export, vector indexes) -----------------------------
    @torch.no_grad()
    def _graph(self):
        if self._graph_tables is None:
            m = self.model
            final = m.graph(*m.graph_tables())
            self._graph_tables = tuple(F.normalize(x, dim=-1) for x in final) if self.cfg.net.cosine_scores else final
        return self._graph_tables

    @torch.no_grad()
    def item_vectors(self) -> torch.Tensor:
        """[I + 1, d'] item vectors such that a user's scores are query @ item_vectors.T (row 0:
        padding). A BERT4Rec output bias rides in one extra column, met by a 1 in the query."""
        m = self.model
        if self.cfg.net.scorer == "graph":
            return self._graph()[1]
        table = m.item_table.weight.detach()
        if self.cfg.net.cosine_scores:
            table = F.normalize(table, dim=-1)
        if m.output_bias is not None:
            return torch.cat([table, m.output_bias.detach()[:, None]], dim=1)
        return table

    @torch.no_grad()
    def user_vectors(self) -> torch.Tensor:
        """[U + 1, d'] query vectors of every known user (row 0: padding, zeros), in chunks of
        eval_batch_size users; computed once."""
        if self._user_vectors is None:
            users = np.arange(1, self.data.n_users + 1)
            step = self.cfg.train.eval_batch_size
            vectors = torch.cat([self.query_vectors(users[s:s + step]) for s in range(0, len(users), step)])
            self._user_vectors = torch.cat([torch.zeros_like(vectors[:1]), vectors])
        return self._user_vectors

    @torch.no_grad()
    def query_vectors(self, users: np.ndarray) -> torch.Tensor:
        """[B, d'] query vectors of internal user ids (from their whole known history, as
        `scores` reads it), the left side of `item_vectors`' inner product."""
        m = self.model
        users = np.asarray(users, dtype=np.int64)
        if self.cfg.net.scorer == "graph":
            return self._graph()[0][torch.from_numpy(users).to(self.device)]
        seqs, lengths = self.windows(users)
        return self.as_query(m.sequence(m.item_table.weight, torch.from_numpy(seqs).to(self.device),
                                        torch.from_numpy(lengths).to(self.device)))

    def windows(self, users: np.ndarray, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The scorer's input for users' whole known histories: (seqs [B, w], lengths [B]), as
        `score_histories` builds them; padded on the right to `width` when given."""
        from gsau.data.batching import history_windows
        m = self.model
        seqs, lengths = history_windows(self.data.indptr, self.data.items, users, m.history_cap, m.sequence.needs_free_slot)
        if width is not None:
            seqs = np.pad(seqs, ((0, 0), (0, width - seqs.shape[1])))
        return seqs, lengths

    def as_query(self, s: torch.Tensor) -> torch.Tensor:
        """Sequence representations [B, d] as query vectors: normalised under ce_normalize (GSAU
        (rec)) or cosine_scores, as Recommender.score reads them, with a 1 for the output bias
        column if any."""
        if self.cfg.net.ce_normalize or self.cfg.net.cosine_scores:
            s = F.normalize(s, dim=-1)
        if self.model.output_bias is not None:
            s = torch.cat([s, torch.ones_like(s[:, :1])], dim=1)
        return s
