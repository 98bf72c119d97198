"""Readers for the interaction formats of the field.

Each reader returns a `RawInteractions`: one row per interaction, in file order, with the user's
and item's external ids and (where the file has one) a timestamp. Ordering, filtering and id
mapping happen later, in `interactions.py`, so every format gets the same treatment.
"""

from __future__ import annotations

import csv
import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gsau.errors import DataError

FORMATS = ("seq", "inter", "csv", "tsv")


@dataclass
class RawInteractions:
    users: np.ndarray  # external user ids, int64 where the format requires numbers, else str
    items: np.ndarray
    timestamps: np.ndarray | None  # float64, or None: file order is the time order


def detect_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(".inter"):
        return "inter"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".tsv"):
        return "tsv"
    return "seq"


def read_text(path: Path) -> str:
    """The whole file as text; gzip is recognised by its magic bytes, not its name."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            raw = f.read()
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except IsADirectoryError:
        raise DataError(path, "is a directory, expected a file") from None
    except OSError as e:
        raise DataError(path, f"cannot read: {e.strerror or e}") from None
    if head == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(path, f"unreadable gzip ({e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(path, "not UTF-8 text", line=line) from None
    if not text.strip():
        raise DataError(path, "file is empty")
    return text


def read_interactions(path: str | Path, fmt: str | None = None) -> RawInteractions:
    path = Path(path)
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise DataError(path, f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    text = read_text(path)
    if fmt == "seq":
        return _read_sequences(path, text)
    if fmt == "inter":
        return _read_atomic(path, text)
    return _read_delimited(path, text, "\t" if fmt == "tsv" else ",")


def _int_tokens(path: Path, lineno: int, tokens: list[str]) -> np.ndarray:
    try:
        return np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        bad = next((t for t in tokens if not _is_int(t)), None)
        if bad is None:  # every token is an integer, so one overflowed int64
            bad = next(t for t in tokens if not -2**63 <= int(t) < 2**63)
            raise DataError(path, f"id {bad!r} is too large: ids must fit in 64 bits", line=lineno) from None
        raise DataError(path, f"non-numeric id {bad!r}: this format needs integer ids", line=lineno) from None


def _is_int(token: str) -> bool:
    try:
        int(token)
        return True
    except ValueError:
        return False


def _read_sequences(path: Path, text: str) -> RawInteractions:
    """`user item item ...` per line, oldest item first (the bundled format)."""
    users, items = [], []
    first_line: dict[int, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) < 2:
            raise DataError(path, "expected a user id followed by at least one item id, found 1 column", line=lineno)
        ids = _int_tokens(path, lineno, tokens)
        user = int(ids[0])
        if user in first_line:
            raise DataError(path, f"user {user} appears again (first on line {first_line[user]})", line=lineno)
        first_line[user] = lineno
        users.append(np.full(len(ids) - 1, user, dtype=np.int64))
        items.append(ids[1:])
    return RawInteractions(np.concatenate(users), np.concatenate(items), None)


def _read_atomic(path: Path, text: str) -> RawInteractions:
    """RecBole atomic `.inter`: tab-separated, header `name:type ...`; needs user_id and item_id."""
    lines = text.splitlines()
    header = lines[0].split("\t")
    names = [h.split(":", 1)[0].strip() for h in header]
    types = [h.split(":", 1)[1].strip() if ":" in h else "" for h in header]
    for needed in ("user_id", "item_id"):
        if needed not in names:
            raise DataError(path, f"missing header field {needed!r} (header is {lines[0]!r})", line=1)
    body = [ln for ln in lines[1:]]
    # Keep original line numbers while skipping blank lines.
    numbered = [(k + 2, ln) for k, ln in enumerate(body) if ln.strip()]
    if not numbered:
        raise DataError(path, "file is empty: a header but no interactions")
    rows = []
    for lineno, ln in numbered:
        fields = ln.split("\t")
        if len(fields) != len(names):
            raise DataError(path, f"wrong column count: expected {len(names)}, found {len(fields)}", line=lineno)
        rows.append(fields)
    cols = list(zip(*rows))
    linenos = [n for n, _ in numbered]
    users = np.array(cols[names.index("user_id")], dtype=str)
    items = np.array(cols[names.index("item_id")], dtype=str)
    timestamps = None
    if "timestamp" in names:
        j = names.index("timestamp")
        timestamps = _checked_floats(path, cols[j], linenos, "timestamp")
    for j, t in enumerate(types):  # RecBole declares numeric columns; hold them to it
        if t == "float" and names[j] not in ("timestamp",):
            _checked_floats(path, cols[j], linenos, names[j])
    return RawInteractions(users, items, timestamps)


def _checked_floats(path: Path, values, linenos: list[int], what: str) -> np.ndarray:
    try:
        return np.array(values, dtype=np.float64)
    except ValueError:
        for v, n in zip(values, linenos):
            try:
                float(v)
            except ValueError:
                raise DataError(path, f"non-numeric {what} {v!r}", line=n) from None
        raise


_HEADER_NAMES = {
    "user": ("user", "user_id", "userid", "reviewerid", "uid"),
    "item": ("item", "item_id", "itemid", "asin", "iid", "product_id", "parent_asin"),
    "rating": ("rating", "score", "overall", "stars"),
    "timestamp": ("timestamp", "time", "unixreviewtime", "ts", "date", "datetime"),
}


def _read_delimited(path: Path, text: str, delimiter: str) -> RawInteractions:
    """CSV/TSV of `user,item[,rating],timestamp`, string ids, optional header (e.g. raw Amazon dumps)."""
    numbered = [(k + 1, ln) for k, ln in enumerate(text.splitlines()) if ln.strip()]
    first = next(csv.reader([numbered[0][1]], delimiter=delimiter))
    lowered = [f.strip().lower().split(":", 1)[0] for f in first]
    has_header = any(f in _HEADER_NAMES["user"] for f in lowered) and any(f in _HEADER_NAMES["item"] for f in lowered)
    if has_header:
        roles = {}
        for role, aliases in _HEADER_NAMES.items():
            for j, f in enumerate(lowered):
                if f in aliases:
                    roles[role] = j
                    break
        ncol = len(first)
        numbered = numbered[1:]
        if not numbered:
            raise DataError(path, "file is empty: a header but no interactions")
    else:
        ncol = len(first)
        layouts = {2: {"user": 0, "item": 1}, 3: {"user": 0, "item": 1, "timestamp": 2},
                   4: {"user": 0, "item": 1, "rating": 2, "timestamp": 3}}
        if ncol not in layouts:
            raise DataError(path, f"wrong column count: expected user,item[,rating],timestamp (2 to 4 columns), found {ncol}", line=numbered[0][0])
        roles = layouts[ncol]
    linenos = [n for n, _ in numbered]
    rows = []
    reader = csv.reader([ln for _, ln in numbered], delimiter=delimiter)
    for lineno, row in zip(linenos, reader):
        if len(row) != ncol:
            raise DataError(path, f"wrong column count: expected {ncol}, found {len(row)}", line=lineno)
        rows.append(row)
    cols = list(zip(*rows))
    users = np.array([u.strip() for u in cols[roles["user"]]], dtype=str)
    items = np.array([i.strip() for i in cols[roles["item"]]], dtype=str)
    for name, arr in (("user", users), ("item", items)):
        empty = np.flatnonzero(arr == "")
        if empty.size:
            raise DataError(path, f"empty {name} id", line=linenos[empty[0]])
    if "rating" in roles:
        _checked_floats(path, cols[roles["rating"]], linenos, "rating")
    timestamps = None
    if "timestamp" in roles:
        timestamps = _checked_floats(path, cols[roles["timestamp"]], linenos, "timestamp")
    return RawInteractions(users, items, timestamps)
