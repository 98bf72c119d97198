"""Vectorised batch construction: no per-sample Python in the hot path.

Two streams feed the joint step:
- the graph stream: training (user, item) pairs, shuffled each epoch;
- the sequential stream: the paper's (prefix, next item) samples, one per training item that has
  at least one item before it. A sample is addressed by the flat position g of its target in the
  training CSR, so its prefix is the slice train_items[g - L:g] with L = min(t, max_len).

Each sampled prefix keeps its own dropout draw (as in the paper's pipeline) but is only computed to
its real length. "packed" mode (the default) lays the prefixes of a batch end to end in rows of
2 x max_len tokens, several short prefixes per row, and the encoder attends only within a prefix
(a segment mask), so the whole batch is one dense tensor with almost no padding and one encoder
call. "prefix" mode cuts the batch into length buckets instead, one encoder call per bucket. The
authors' pipeline pads every prefix to max_len ("padded" mode, kept for benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from gsau.data.split import LeaveOneOut

BUCKET_EDGES = (4, 8, 16, 32)
ROW_WIDTHS = (16,)  # packed rows: prefixes of up to 16 items share rows of 16; longer ones get max_len


def gather_windows(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """[n, width] int64: row r holds flat[starts[r]:starts[r] + lengths[r]] left-aligned, 0-padded."""
    offsets = np.arange(width)
    idx = starts[:, None] + offsets[None, :]
    valid = offsets[None, :] < lengths[:, None]
    return np.where(valid, flat[np.where(valid, idx, 0)], 0)


def history_windows(indptr: np.ndarray, flat: np.ndarray, users: np.ndarray, cap: int,
                    free_slot: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Scoring windows: each user's (1-based, CSR rows of indptr/flat) latest min(len, cap) items,
    left-aligned and 0-padded to the longest kept, plus one free position after them when the
    encoder reads its prediction at a token appended there (BERT4Rec). (seqs [n, w], lengths [n])."""
    users = np.asarray(users)
    ends = indptr[users]
    lengths = np.minimum(ends - indptr[users - 1], cap)
    width = max(int(lengths.max(initial=1)), 1) + int(free_slot)
    return gather_windows(flat, ends - lengths, lengths, width), lengths


@dataclass
class SequenceChunk:
    seqs: torch.Tensor  # [b, L] item ids, left-aligned, 0 = padding
    lengths: torch.Tensor  # [b]
    targets: torch.Tensor  # [b] next item (SASRec) ...
    masked: torch.Tensor | None = None  # [b, L] bool positions to predict (BERT4Rec)
    # Packed rows (several samples per row): which sample each token belongs to (-1 = padding),
    # its position within that sample, and the flat index (row * L + column) of each sample's last token.
    segments: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    last: torch.Tensor | None = None


def pack(lengths: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Place samples of the given lengths end to end in rows of `width` tokens, none split across
    rows: (row, column offset) of each sample and the number of rows.

    Samples of equal length share rows, width // length to a row, so the placement is a few array
    operations per batch instead of a bin-packing loop.
    """
    order = np.argsort(lengths, kind="stable")
    sorted_len = lengths[order]
    values, first, counts = np.unique(sorted_len, return_index=True, return_counts=True)
    per_row = width // values
    rows_per_value = -(-counts // per_row)
    row_start = np.concatenate([[0], np.cumsum(rows_per_value)[:-1]])
    group = np.repeat(np.arange(len(values)), counts)
    rank = np.arange(len(order)) - first[group]
    row, col = np.empty_like(lengths), np.empty_like(lengths)
    row[order] = row_start[group] + rank // per_row[group]
    col[order] = (rank % per_row[group]) * sorted_len
    return row, col, int(rows_per_value.sum())


class GraphStream:
    """Shuffled training (user, item) pairs; with `negatives`, one uniform negative item per pair
    that the user has not interacted with in training (for BPR)."""

    def __init__(self, split: LeaveOneOut, batch_size: int, negatives: bool = False, dist=None):
        self.dist = dist  # gsau.distributed.Dist: with several processes, each takes its share
        self.users, self.items = split.train_pairs()
        self.batch_size = batch_size
        self.n_items = split.n_items
        self.negatives = negatives
        # Sorted keys of known pairs, for vectorised membership tests of sampled negatives.
        self.known = np.unique(self.users.astype(np.int64) * (self.n_items + 1) + self.items)

    def __len__(self) -> int:
        return -(-len(self.users) // self.batch_size)

    def batches(self, rng: np.random.Generator):
        order = rng.permutation(len(self.users))
        for start in range(0, len(order), self.batch_size):
            idx = order[start: start + self.batch_size]
            if self.dist is not None and len(idx) < self.dist.world:
                continue  # a last batch smaller than the world: some rank would have nothing
            users, items = self.users[idx], self.items[idx]
            # Negatives are drawn for the whole global batch, so every rank consumes the shared
            # generator alike; then each keeps its share.
            negatives = self.sample_negatives(users, rng) if self.negatives else None
            mine = self.dist.share(len(idx)) if self.dist is not None else slice(None)
            batch = {"users": torch.from_numpy(users[mine]), "items": torch.from_numpy(items[mine])}
            if negatives is not None:
                batch["negatives"] = torch.from_numpy(negatives[mine])
            yield batch

    def sample_negatives(self, users: np.ndarray, rng: np.random.Generator, rounds: int = 20) -> np.ndarray:
        neg = rng.integers(1, self.n_items + 1, size=len(users))
        for _ in range(rounds):
            clash = self._clashes(users, neg)
            if not clash.any():
                return neg
            neg[clash] = rng.integers(1, self.n_items + 1, size=int(clash.sum()))
        # A user who holds most of the catalogue can still clash after `rounds` redraws (the last
        # redraw is unchecked): draw those few from the user's unseen items directly.
        span = self.n_items + 1
        for r in np.flatnonzero(self._clashes(users, neg)):
            base = int(users[r]) * span
            lo, hi = np.searchsorted(self.known, [base, base + span])
            free = np.setdiff1d(np.arange(1, span), self.known[lo:hi] - base)
            if free.size:  # a user with every item in training has no negative to give
                neg[r] = rng.choice(free)
        return neg

    def _clashes(self, users: np.ndarray, neg: np.ndarray) -> np.ndarray:
        keys = users.astype(np.int64) * (self.n_items + 1) + neg
        pos = np.searchsorted(self.known, keys)
        return self.known[np.minimum(pos, len(self.known) - 1)] == keys


class SequenceStream:
    """The paper's (prefix, next item) samples, laid out per `mode` (see the module docstring).

    For SASRec a sample is (items[:t] -> items[t]). For BERT4Rec (`masked_lm`) the sample is the
    sequence items[:t + 1] with a random `mask_ratio` of its positions masked (at least one).
    """

    def __init__(self, split: LeaveOneOut, max_len: int, batch_size: int, mode: str = "packed",
                 masked_lm: bool = False, mask_ratio: float = 0.2, bucket_edges=BUCKET_EDGES,
                 row_widths=ROW_WIDTHS, dist=None):
        self.dist = dist  # gsau.distributed.Dist: with several processes, each takes its share
        self.flat = split.train_items
        indptr = split.train_indptr
        position = np.arange(len(self.flat)) - np.repeat(indptr[:-1], np.diff(indptr))
        self.targets_at = np.flatnonzero(position >= 1)  # flat positions g with a non-empty prefix
        self.position = position
        self.max_len = max_len
        self.batch_size = batch_size
        self.mode = mode
        self.masked_lm = masked_lm
        self.mask_ratio = mask_ratio
        self.edges = np.asarray(bucket_edges)
        self.row_widths = np.asarray(sorted({w for w in row_widths if w < max_len} | {max_len}))

    def __len__(self) -> int:
        return -(-len(self.targets_at) // self.batch_size)

    @property
    def n_samples(self) -> int:
        return len(self.targets_at)

    def batches(self, rng: np.random.Generator):
        order = rng.permutation(self.targets_at)
        for start in range(0, len(order), self.batch_size):
            g = order[start: start + self.batch_size]
            if self.dist is None or not self.dist.active:
                yield self.chunks(g, rng)
                continue
            # Several processes: this rank's share of the global batch. Masks (BERT4Rec) come from
            # a generator drawn once per batch, so the shared one advances alike on every rank.
            batch_rng = np.random.default_rng(rng.integers(2**63)) if self.masked_lm else rng
            if len(g) < self.dist.world:
                continue  # a last batch smaller than the world: some rank would have nothing
            yield self.chunks(g[self.dist.share(len(g))], batch_rng)

    def chunks(self, g: np.ndarray, rng: np.random.Generator) -> list[SequenceChunk]:
        t = self.position[g]
        if self.masked_lm:
            lengths = np.minimum(t + 1, self.max_len)
            starts = g + 1 - lengths
        else:
            lengths = np.minimum(t, self.max_len)
            starts = g - lengths
        targets = self.flat[g]
        if self.mode == "packed":
            # Rows of a few widths: attention costs width^2 per row, so short prefixes get short rows.
            tier = np.searchsorted(self.row_widths, lengths)
            return [self._packed(starts[tier == k], lengths[tier == k], targets[tier == k], width, rng)
                    for k, width in enumerate(self.row_widths) if (tier == k).any()]
        if self.mode == "padded":
            groups = [np.arange(len(g))]
        else:
            by_length = np.argsort(lengths, kind="stable")
            cuts = np.searchsorted(lengths[by_length], self.edges, side="right")
            groups = [grp for grp in np.split(by_length, cuts) if len(grp)]
        out = []
        for grp in groups:
            width = self.max_len if self.mode == "padded" else int(lengths[grp].max())
            seqs = gather_windows(self.flat, starts[grp], lengths[grp], width)
            chunk = SequenceChunk(torch.from_numpy(seqs), torch.from_numpy(lengths[grp]),
                                  torch.from_numpy(targets[grp]))
            if self.masked_lm:
                chunk.masked = torch.from_numpy(self._mask(lengths[grp], width, rng))
            out.append(chunk)
        return out

    def _packed(self, starts, lengths, targets, width, rng) -> SequenceChunk:
        row, col, n_rows = pack(lengths, width)
        sample = np.repeat(np.arange(len(lengths)), lengths)
        within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        cell = row[sample] * width + col[sample] + within
        seqs = np.zeros(n_rows * width, dtype=np.int64)
        seqs[cell] = self.flat[starts[sample] + within]
        segments = np.full(n_rows * width, -1, dtype=np.int64)
        segments[cell] = sample
        positions = np.zeros(n_rows * width, dtype=np.int64)
        positions[cell] = within
        shape = (n_rows, width)
        chunk = SequenceChunk(torch.from_numpy(seqs.reshape(shape)), torch.from_numpy(lengths),
                              torch.from_numpy(targets), segments=torch.from_numpy(segments.reshape(shape)),
                              positions=torch.from_numpy(positions.reshape(shape)),
                              last=torch.from_numpy(row * width + col + lengths - 1))
        if self.masked_lm:
            masked = np.zeros(n_rows * width, dtype=bool)
            masked[cell] = self._mask(lengths, int(lengths.max()), rng)[sample, within]
            chunk.masked = torch.from_numpy(masked.reshape(shape))
        return chunk

    def _mask(self, lengths: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
        real = np.arange(width)[None, :] < lengths[:, None]
        masked = (rng.random((len(lengths), width)) < self.mask_ratio) & real
        # Every sequence predicts at least one item: mask a random real position where none was drawn.
        empty = ~masked.any(axis=1)
        if empty.any():
            pick = (rng.random(int(empty.sum())) * lengths[empty]).astype(np.int64)
            masked[np.flatnonzero(empty), pick] = True
        return masked


def to_device(batch, device):
    """A graph batch (dict of tensors) or a sequence batch (list of SequenceChunk) on `device`.
    Batches are built on the CPU with numpy; on a GPU they are copied from pinned memory without
    blocking, so the copy overlaps the previous step's kernels. On the CPU: the batch itself."""
    if batch is None or device.type == "cpu":
        return batch

    def move(t):
        return t if t is None else t.pin_memory().to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move(v) for k, v in batch.items()}
    return [SequenceChunk(**{f.name: move(getattr(c, f.name)) for f in fields(c)}) for c in batch]
