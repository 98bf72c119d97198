"""Interaction sequences in dense ids, built from any reader's output.

Internal ids are dense and 1-based: users 1..U, items 1..I, and 0 is the padding index of every
embedding table. The external ids are kept (`user_ids[u - 1]` is user u's id in the user's file) so
results and recommendations can be reported in the user's own ids.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from gsau.atomic import write_atomic
from gsau.data.readers import RawInteractions, read_interactions
from gsau.errors import DataError

BUNDLED = {
    "beauty": "Beauty.txt.gz",
    "sports": "Sports_and_Outdoors.txt.gz",
    "toys": "Toys_and_Games.txt.gz",
}
BINARY_NAME = "dataset.npz"
FORMAT_VERSION = 1


@dataclass
class Interactions:
    """User u's chronological items are `items[indptr[u - 1]:indptr[u]]` (CSR over users 1..U)."""

    name: str
    user_ids: np.ndarray  # str [U]
    item_ids: np.ndarray  # str [I]
    indptr: np.ndarray  # int64 [U + 1]
    items: np.ndarray  # int64 [N], values in 1..I
    meta: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def sequence(self, user: int) -> np.ndarray:
        return self.items[self.indptr[user - 1]: self.indptr[user]]

    def user_index(self, external_id: str) -> int:
        """Internal id (1..U) of an external user id."""
        if not hasattr(self, "_user_lookup"):
            self._user_lookup = {u: k + 1 for k, u in enumerate(self.user_ids.tolist())}
        try:
            return self._user_lookup[str(external_id)]
        except KeyError:
            raise KeyError(f"unknown user {external_id!r} in dataset {self.name!r}") from None

    # -- binary form -------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write `directory/dataset.npz` atomically: a reader never sees a half-written file."""
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(directory, f"cannot create output directory: {e.strerror or e}") from None
        target = directory / BINARY_NAME
        meta = dict(self.meta, name=self.name, format_version=FORMAT_VERSION)
        write_atomic(target, lambda f: np.savez(
            f, user_ids=self.user_ids.astype(str), item_ids=self.item_ids.astype(str),
            indptr=self.indptr, items=self.items, meta=np.array(json.dumps(meta))))
        return target

    @classmethod
    def load(cls, path: str | Path) -> "Interactions":
        path = Path(path)
        if path.is_dir():
            path = path / BINARY_NAME
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                data = cls(meta.get("name", path.parent.name), z["user_ids"], z["item_ids"],
                           z["indptr"], z["items"], meta)
        except FileNotFoundError:
            raise DataError(path, "no such file") from None
        except (ValueError, KeyError, OSError, zipfile.BadZipFile) as e:  # BadZipFile: a truncated .npz
            raise DataError(path, f"not a gsau dataset file ({e})") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise DataError(path, f"dataset format version {meta.get('format_version')} is not {FORMAT_VERSION}; re-import it")
        return data


def k_core(users: np.ndarray, items: np.ndarray, min_user: int, min_item: int) -> np.ndarray:
    """Boolean mask of interactions that survive iterative k-core filtering, applied until stable.

    `users` and `items` are dense codes (0-based). Removing a user can push an item under its
    threshold and vice versa, so one pass is not enough. Each round counts only what the last
    left, so later rounds cost what remains to be decided, not the whole data.
    """
    n_users, n_items = users.max(initial=-1) + 1, items.max(initial=-1) + 1
    keep = np.zeros(len(users), dtype=bool)
    rows = None  # the surviving rows (None: all)
    while True:
        ok = ((np.bincount(users, minlength=n_users) >= min_user)[users]
              & (np.bincount(items, minlength=n_items) >= min_item)[items])
        if ok.all():
            break
        rows = np.flatnonzero(ok) if rows is None else rows[ok]
        users, items = users[ok], items[ok]
    keep[slice(None) if rows is None else rows] = True
    return keep


def _codes(values: np.ndarray) -> np.ndarray:
    """Dense codes in the narrowest integer type that holds them (halves the memory of the
    large arrays build() works on)."""
    return values.astype(np.int32) if values.max(initial=0) < 2 ** 31 else values


def _unique_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct ids and each row's code (as np.unique's inverse); text ids that are all
    integers sort as numbers ("2" before "10")."""
    if ids.dtype.kind in "iu" and len(ids):
        low, span = int(ids.min()), int(ids.max()) - int(ids.min()) + 1
        if span <= max(2 * len(ids), 1 << 20):
            # Integers in a modest range (ids 1..N, typically): a table instead of a sort.
            present = np.zeros(span, dtype=bool)
            present[ids - low] = True
            rank = _codes(np.cumsum(present) - 1)
            return np.flatnonzero(present) + low, rank[ids - low]
    vals, codes = np.unique(ids, return_inverse=True)
    codes = _codes(codes.reshape(-1))
    if vals.dtype.kind == "S":
        # UTF-8 bytes (the streaming readers' text ids) sort as their text does; decode the few
        # distinct ones, then treat them as any text ids.
        try:
            vals = vals.astype(str)  # ASCII: numpy's own cast
        except UnicodeDecodeError:
            vals = np.char.decode(vals, "utf-8")
    if vals.dtype.kind != "U":
        return vals, codes
    try:
        numbers = vals.astype(np.int64)
    except (ValueError, OverflowError):
        return vals, codes
    # Text breaks ties so "7" and "07" stay two ids.
    order = np.lexsort((vals, numbers))
    recode = np.empty_like(codes, shape=len(order))
    recode[order] = np.arange(len(order))
    return vals[order], recode[codes]


def _dense(codes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(the codes still used, each row's rank among them): np.unique of codes in 0..n-1, by a table."""
    used = np.bincount(codes, minlength=n) > 0
    rank = _codes(np.cumsum(used) - 1)
    return np.flatnonzero(used), rank[codes]


def build(raw: RawInteractions, name: str, source: str, min_user: int = 5, min_item: int = 5,
          dedup: bool = False) -> Interactions:
    """Order, filter and densify raw interactions.

    Order: by timestamp within a user, ties (and files without timestamps) in file order.
    """
    n = len(raw.users)
    user_vals, user_codes = _unique_ids(raw.users)
    item_vals, item_codes = _unique_ids(raw.items)
    timestamps = raw.timestamps
    if dedup:
        # Keep each (user, item) pair's first occurrence in time (file order breaks ties).
        by_time = np.argsort(timestamps, kind="stable") if timestamps is not None else np.arange(n)
        pair = user_codes[by_time].astype(np.int64) * len(item_vals) + item_codes[by_time]
        _, first = np.unique(pair, return_index=True)
        kept = np.sort(by_time[first])
        del by_time, pair, first
        user_codes, item_codes = user_codes[kept], item_codes[kept]
        timestamps = None if timestamps is None else timestamps[kept]
    keep = k_core(user_codes, item_codes, min_user, min_item)
    if not keep.any():
        raise DataError(source, f"no interactions left after {min_user}-core (users) / {min_item}-core (items) filtering")
    if not keep.all():
        user_codes, item_codes = user_codes[keep], item_codes[keep]
        timestamps = None if timestamps is None else timestamps[keep]
    del keep
    # Dense ids in sorted external-id order (numeric order when the ids are numbers), so a file
    # already in dense 1..N ids keeps them.
    used_u, user_dense = _dense(user_codes, len(user_vals))
    used_i, item_dense = _dense(item_codes, len(item_vals))
    del user_codes, item_codes
    # Rows by user, then time, then file order: stable sorts, the last key first.
    if timestamps is None:
        perm = np.argsort(user_dense, kind="stable")
    else:
        perm = np.argsort(timestamps, kind="stable")
        perm = perm[np.argsort(user_dense[perm], kind="stable")]
    counts = np.bincount(user_dense, minlength=len(used_u))
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    meta = {"source": str(source), "min_user_count": min_user, "min_item_count": min_item, "dedup": dedup,
            "raw_interactions": int(n), "has_timestamps": timestamps is not None}
    if raw.columns_used is not None:  # which file columns were read, for `gsau data import`/`stats` to show
        meta["columns"] = dict(raw.columns_used)
    items = item_dense[perm].astype(np.int64)
    items += 1
    return Interactions(name, user_vals[used_u].astype(str), item_vals[used_i].astype(str), indptr, items, meta)


def bundled_path(name: str) -> Path:
    return Path(str(resources.files("gsau.data") / "bundled" / BUNDLED[name]))


def load_dataset(spec: str | Path, min_user: int = 5, min_item: int = 5, dedup: bool = False,
                 fmt: str | None = None, columns: dict[str, str] | str | None = None) -> Interactions:
    """A bundled name (`beauty`, `sports`, `toys`), an imported directory or `.npz`, or a raw file.

    `columns` picks a raw file's columns (see `read_interactions`); like the thresholds, it does
    not apply to an imported dataset, whose columns were chosen when it was imported.
    """
    spec_str = str(spec)
    if spec_str.lower() in BUNDLED:
        path, name = bundled_path(spec_str.lower()), spec_str.lower()
    else:
        path = Path(spec_str)
        if not path.exists():
            raise DataError(spec_str, f"unknown dataset: not a bundled name ({', '.join(BUNDLED)}) and no such file")
        if (path.is_dir() and (path / BINARY_NAME).exists()) or path.suffix == ".npz":
            return Interactions.load(path)
        if path.is_dir():
            raise DataError(path, f"directory holds no {BINARY_NAME} (make one with `gsau data import`)")
        name = path.name.split(".")[0]
    raw = read_interactions(path, fmt, columns)
    return build(raw, name, str(path), min_user, min_item, dedup)


def drop_short_users(data: Interactions, min_length: int, warn: bool = True) -> Interactions:
    """Remove users with fewer than `min_length` interactions (items keep their ids)."""
    lengths = data.lengths
    short = lengths < min_length
    if not short.any():
        return data
    keep_rows = np.repeat(~short, lengths)
    if warn:
        warnings.warn(f"dropped {int(short.sum())} users with fewer than {min_length} interactions", stacklevel=2)
    indptr = np.concatenate([[0], np.cumsum(lengths[~short])]).astype(np.int64)
    meta = dict(data.meta, dropped_short_users=int(short.sum()))
    return Interactions(data.name, data.user_ids[~short], data.item_ids, indptr, data.items[keep_rows], meta)
