"""Window gathering, the (prefix, next item) stream and the graph stream's negatives."""

from collections import Counter

import numpy as np

from gsau.data.batching import GraphStream, SequenceStream, gather_windows, history_windows
from gsau.data.interactions import build
from gsau.data.readers import RawInteractions
from gsau.data.split import LeaveOneOut


def split_from(sequences):
    """LeaveOneOut over {user: [items]}, items already dense so internal ids are the given ones."""
    users = np.concatenate([[u] * len(s) for u, s in sequences.items()])
    items = np.concatenate(list(sequences.values()))
    data = build(RawInteractions(users, items, None), "t", "t", min_user=1, min_item=1)
    return LeaveOneOut.from_interactions(data)


# Training rows: user 1 [1..6] (valid 7, test 8); user 2 [9, 10]; user 3 [11] (no sample).
SEQS = {1: list(range(1, 9)), 2: [9, 10, 12, 13], 3: [11, 12, 13]}


def test_gather_windows():
    flat = np.arange(10, 20)
    out = gather_windows(flat, np.array([0, 3, 8, 9]), np.array([2, 4, 0, 1]), 4)
    assert out.tolist() == [[10, 11, 0, 0], [13, 14, 15, 16], [0, 0, 0, 0], [19, 0, 0, 0]]


def test_history_windows_keep_the_most_recent_items():
    indptr = np.array([0, 5, 6, 6])
    flat = np.array([1, 2, 3, 4, 5, 6])
    seqs, lengths = history_windows(indptr, flat, np.array([1, 2, 3]), 3)
    assert seqs.tolist() == [[3, 4, 5], [6, 0, 0], [0, 0, 0]]
    assert lengths.tolist() == [3, 1, 0]
    # A scorer that reads after the history (BERT4Rec) keeps one position free after the window.
    seqs, lengths = history_windows(indptr, flat, np.array([2, 1]), 3, free_slot=True)
    assert seqs.tolist() == [[6, 0, 0, 0], [3, 4, 5, 0]]
    assert lengths.tolist() == [1, 3]


def samples(chunks):
    """[(prefix tuple, target)] from chunks, checking each chunk's layout on the way."""
    out = []
    for c in chunks:
        seqs, lengths, targets = c.seqs.numpy(), c.lengths.numpy(), c.targets.numpy()
        assert seqs.shape[1] == lengths.max()  # padded only to the chunk's longest prefix
        for row, n, t in zip(seqs, lengths, targets):
            assert (row[:n] > 0).all() and (row[n:] == 0).all()  # left-aligned, 0-padded
            out.append((tuple(row[:n].tolist()), int(t)))
    return out


# max_len 3: the prefixes of user 1 past three items see only the last three.
EXPECTED = [((1,), 2), ((1, 2), 3), ((1, 2, 3), 4), ((2, 3, 4), 5), ((3, 4, 5), 6), ((9,), 10)]


def test_chunks_hold_the_prefix_before_each_target():
    split = split_from(SEQS)
    assert split.train_items.tolist() == [1, 2, 3, 4, 5, 6, 9, 10, 11]
    stream = SequenceStream(split, max_len=3, batch_size=100, mode="prefix")
    # Flat positions: user 1's training items at 0..5, user 2's at 6..7, user 3's at 8.
    got = samples(stream.chunks(np.array([5, 7, 1]), np.random.default_rng(0)))
    assert sorted(got) == sorted([((3, 4, 5), 6), ((9,), 10), ((1,), 2)])


def test_every_sample_once_per_epoch():
    split = split_from(SEQS)
    stream = SequenceStream(split, max_len=3, batch_size=4, mode="prefix")
    assert stream.n_samples == 6 and len(stream) == 2
    rng = np.random.default_rng(1)
    for _ in range(3):
        got = [s for chunks in stream.batches(rng) for s in samples(chunks)]
        assert Counter(got) == Counter(EXPECTED)


def test_length_buckets_and_padded_mode():
    split = split_from({1: list(range(1, 13))})  # training row 1..10, targets 2..10
    rng = np.random.default_rng(0)
    g = np.arange(1, 10)
    bucketed = SequenceStream(split, max_len=20, batch_size=64, mode="prefix", bucket_edges=(2, 5)).chunks(g, rng)
    # Prefix lengths 1..9 cut at <=2, <=5, rest.
    assert [c.lengths.tolist() for c in bucketed] == [[1, 2], [3, 4, 5], [6, 7, 8, 9]]
    assert [c.seqs.shape[1] for c in bucketed] == [2, 5, 9]
    assert Counter(samples(bucketed)) == Counter((tuple(range(1, t)), t) for t in range(2, 11))
    padded = SequenceStream(split, max_len=20, batch_size=64, mode="padded").chunks(g, rng)
    assert len(padded) == 1 and padded[0].seqs.shape == (9, 20)
    assert padded[0].seqs[8, :9].tolist() == list(range(1, 10))


def test_masked_lm_windows_include_the_target():
    split = split_from(SEQS)
    stream = SequenceStream(split, max_len=3, batch_size=100, mode="prefix", masked_lm=True, mask_ratio=0.0)
    chunks = stream.chunks(np.array([5, 7]), np.random.default_rng(0))
    rows = {}
    for c in chunks:
        for seq, n, t, m in zip(c.seqs.numpy(), c.lengths.numpy(), c.targets.numpy(), c.masked.numpy()):
            rows[int(t)] = (seq[:n].tolist(), m)
            # At least one real position is masked even with ratio 0, and padding never is.
            assert m[:n].sum() == 1 and not m[n:].any()
    assert rows[6][0] == [4, 5, 6]
    assert rows[10][0] == [9, 10]


def test_graph_stream_covers_each_training_pair_once():
    split = split_from(SEQS)
    stream = GraphStream(split, batch_size=4)
    pairs = [(u, i) for b in stream.batches(np.random.default_rng(0))
             for u, i in zip(b["users"].tolist(), b["items"].tolist())]
    assert len(stream) == 3
    assert Counter(pairs) == Counter([(1, i) for i in range(1, 7)] + [(2, 9), (2, 10), (3, 11)])


def test_negatives_never_hit_training_items():
    # User 1 holds 8 of 10 items in training: a uniform draw clashes 80% of the time, so a
    # bounded number of redraws alone would leave clashes in 100k samples.
    split = split_from({1: list(range(1, 11)), 2: [1, 2, 3], 3: [4, 5, 6, 7]})
    stream = GraphStream(split, batch_size=64, negatives=True)
    rng = np.random.default_rng(0)
    users = np.repeat(np.array([1, 2, 3]), 40_000)
    neg = stream.sample_negatives(users, rng)
    train = {1: set(range(1, 9)), 2: {1}, 3: {4, 5}}
    for u, seen in train.items():
        drawn = set(neg[users == u].tolist())
        assert not drawn & seen
        assert drawn == set(range(1, 11)) - seen  # and every unseen item can be drawn
    for batch in stream.batches(rng):
        for u, n in zip(batch["users"].tolist(), batch["negatives"].tolist()):
            assert n not in train[u]


def test_packed_rows_hold_every_prefix_whole_and_separately():
    split = split_from({1: list(range(1, 23)), 2: [23, 24, 25, 26, 27]})  # training rows 1..20 and 23..25
    stream = SequenceStream(split, max_len=8, batch_size=64, mode="packed", row_widths=(4,))
    g = stream.targets_at
    chunks = stream.chunks(g, np.random.default_rng(0))
    assert [c.seqs.shape[1] for c in chunks] == [4, 8]  # short prefixes in rows of 4, the rest in rows of 8
    got = []
    for c in chunks:
        seqs, seg, pos = c.seqs.numpy(), c.segments.numpy(), c.positions.numpy()
        flat_seqs = seqs.reshape(-1)
        for sample, (n, t, last) in enumerate(zip(c.lengths.numpy(), c.targets.numpy(), c.last.numpy())):
            cells = np.flatnonzero(seg.reshape(-1) == sample)
            assert len(cells) == n and cells[-1] == last  # contiguous, read at its last token
            assert (np.diff(cells) == 1).all() and len(set(cells // seqs.shape[1])) == 1  # never split across rows
            assert pos.reshape(-1)[cells].tolist() == list(range(n))
            got.append((tuple(flat_seqs[cells].tolist()), int(t)))
        assert (seqs[seg < 0] == 0).all()
    want = [(tuple(range(max(1, t - 8), t)), t) for t in range(2, 21)] + [((23,), 24), ((23, 24), 25)]
    assert Counter(got) == Counter(want)


def test_pack_places_samples_without_overlap():
    from gsau.data.batching import pack
    lengths = np.random.default_rng(3).integers(1, 9, size=200)
    row, col, n_rows = pack(lengths, 8)
    grid = np.zeros((n_rows, 8), dtype=int)
    for r, c, n in zip(row, col, lengths):
        assert c + n <= 8
        grid[r, c:c + n] += 1
    assert grid.max() == 1 and grid.sum() == lengths.sum()
