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
    threshold and vice versa, so one pass is not enough.
    """
    keep = np.ones(len(users), dtype=bool)
    n_users, n_items = users.max(initial=-1) + 1, items.max(initial=-1) + 1
    while True:
        u_count = np.bincount(users[keep], minlength=n_users)
        i_count = np.bincount(items[keep], minlength=n_items)
        now = keep & (u_count[users] >= min_user) & (i_count[items] >= min_item)
        if now.sum() == keep.sum():
            return now
        keep = now


def _unique_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique with inverse codes; text ids that are all integers sort as numbers ("2" before "10")."""
    vals, codes = np.unique(ids, return_inverse=True)
    if vals.dtype.kind != "U":
        return vals, codes
    try:
        numbers = vals.astype(np.int64)
    except (ValueError, OverflowError):
        return vals, codes
    # Text breaks ties so "7" and "07" stay two ids.
    order = np.lexsort((vals, numbers))
    recode = np.empty_like(order)
    recode[order] = np.arange(len(order))
    return vals[order], recode[codes]


def build(raw: RawInteractions, name: str, source: str, min_user: int = 5, min_item: int = 5,
          dedup: bool = False) -> Interactions:
    """Order, filter and densify raw interactions.

    Order: by timestamp within a user, ties (and files without timestamps) in file order.
    """
    n = len(raw.users)
    order = np.arange(n)
    user_vals, user_codes = _unique_ids(raw.users)
    item_vals, item_codes = _unique_ids(raw.items)
    if dedup:
        # Keep each (user, item) pair's first occurrence in time.
        t = raw.timestamps if raw.timestamps is not None else order.astype(np.float64)
        by_time = np.lexsort((order, t))
        pair = user_codes[by_time].astype(np.int64) * len(item_vals) + item_codes[by_time]
        _, first = np.unique(pair, return_index=True)
        kept = np.sort(by_time[first])
        user_codes, item_codes, order = user_codes[kept], item_codes[kept], order[kept]
        raw = RawInteractions(raw.users[kept], raw.items[kept],
                              None if raw.timestamps is None else raw.timestamps[kept], raw.columns_used)
    keep = k_core(user_codes, item_codes, min_user, min_item)
    if not keep.any():
        raise DataError(source, f"no interactions left after {min_user}-core (users) / {min_item}-core (items) filtering")
    user_codes, item_codes, order = user_codes[keep], item_codes[keep], order[keep]
    timestamps = None if raw.timestamps is None else raw.timestamps[keep]
    # Dense ids in sorted external-id order (numeric order when the ids are numbers), so a file
    # already in dense 1..N ids keeps them.
    used_u, user_dense = np.unique(user_codes, return_inverse=True)
    used_i, item_dense = np.unique(item_codes, return_inverse=True)
    keys = (order,) if timestamps is None else (order, timestamps)
    perm = np.lexsort(keys + (user_dense,))
    counts = np.bincount(user_dense, minlength=len(used_u))
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    meta = {"source": str(source), "min_user_count": min_user, "min_item_count": min_item, "dedup": dedup,
            "raw_interactions": int(n), "has_timestamps": timestamps is not None}
    if raw.columns_used is not None:  # which file columns were read, for `gsau data import`/`stats` to show
        meta["columns"] = dict(raw.columns_used)
    return Interactions(name, user_vals[used_u].astype(str), item_vals[used_i].astype(str), indptr,
                        (item_dense[perm] + 1).astype(np.int64), meta)


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
