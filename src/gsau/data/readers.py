"""Readers for the interaction formats of the field.

Each reader returns a `RawInteractions`: one row per interaction, in file order, with the user's
and item's external ids and (where the file has one) a timestamp. Ordering, filtering and id
mapping happen later, in `interactions.py`, so every format gets the same treatment.

`read_interactions` first tries the streaming readers of stream.py, which read the common case of
every text format in blocks with numpy, and Parquet. CSV and TSV they leave (quoted fields, text
columns with line breaks) are read next by `read_delimited_chunks`: the csv module over the file
as a stream, converted to arrays a chunk of records at a time, so memory stays a small multiple of
the result. The exact readers here, which hold the whole text and check it row by row, read
whatever is left, and locate every error by file and line: any problem a chunked read meets is
left to them, so the message is theirs.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gsau.data import stream
from gsau.errors import ConfigError, DataError

FORMATS = ("seq", "inter", "csv", "tsv", "parquet")


@dataclass
class RawInteractions:
    # External user ids: int64 where the format requires numbers (or, from the streaming readers,
    # where every id is an integer written as str(int) writes it), else str or UTF-8 bytes.
    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None  # float64, or None: file order is the time order
    # Which column gave each role: {"user": "userId", "item": "movieId", "timestamp": "timestamp"}
    # (header names, or 0-based indexes as digit strings for a file without a header); None for
    # the sequence format, which has no columns.
    columns_used: dict[str, str] | None = None


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
    if name.endswith((".parquet", ".pq")):
        return "parquet"
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
    # Spreadsheet programs (Excel's "CSV UTF-8") start the file with a byte order mark; left in,
    # it would become part of the first header name or id.
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise DataError(path, "file is empty")
    return text


def read_interactions(path: str | Path, fmt: str | None = None,
                      columns: dict[str, str] | str | None = None) -> RawInteractions:
    """Read one interaction file.

    `columns` says exactly which columns to read, as {role: column}: roles are user, item (both
    required), rating and time (or timestamp); a column is a header name or a 0-based index written
    as digits ("0"). The command-line form `user=userId,item=movieId` is accepted too. Without it,
    columns are found by common header names, else by position. A CSV/TSV's first line is a header
    when it holds a common column name or `columns` names one of its columns; so with indexes
    alone, a header of other names would be read as data.
    """
    path = Path(path)
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise DataError(path, f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if isinstance(columns, str):
        columns = parse_columns(columns)
    explicit = None if columns is None else _checked_roles(columns.items(), str(columns))
    if fmt == "parquet":
        return stream.read_parquet(path, explicit)
    raw = stream.read_fast(path, fmt, explicit)
    if raw is None and fmt in ("csv", "tsv"):
        raw = read_delimited_chunks(path, "\t" if fmt == "tsv" else ",", explicit)
    return raw if raw is not None else read_exact(path, fmt, explicit)


CHUNK_RECORDS = 1 << 16  # records converted to arrays at a time by read_delimited_chunks


def read_delimited_chunks(path: Path, delimiter: str, explicit: dict[str, str] | None) -> RawInteractions | None:
    """A CSV/TSV file read as `read_exact` reads it (the csv module's quoting, the same checks on
    every record), streamed: CHUNK_RECORDS records at a time become arrays, so neither the text nor
    a Python list per row is held whole; gzip is decompressed as it is read. None where the file
    has any problem: the exact reader then reads it and reports the problem with its line."""
    try:
        with open(path, "rb") as f:
            compressed = f.read(2) == b"\x1f\x8b"  # by its magic bytes, as read_text
    except OSError:
        return None
    # utf-8-sig drops a leading byte order mark, as read_text does.
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as text:
            return _delimited_chunks(path, csv.reader(text, delimiter=delimiter), explicit)
    except (DataError, csv.Error, UnicodeDecodeError, OSError, EOFError, zlib.error):
        return None  # gzip.BadGzipFile is an OSError


def _delimited_chunks(path: Path, reader, explicit) -> RawInteractions | None:
    roles = names = None
    parts: list[RawInteractions] = []
    rows, starts = [], []
    end = 0

    def convert() -> None:
        """The pending records as arrays, checked as _read_delimited checks them."""
        ncol = len(first)
        if any(len(row) != ncol for row in rows):
            raise DataError(path, "wrong column count")
        for k, row in enumerate(rows):
            for role in ("user", "item"):  # an id spanning lines: a quote was left open
                cell = row[roles[role]]
                if "\n" in cell or "\r" in cell:
                    raise DataError(path, "id spans lines", line=starts[k])
        parts.append(_from_columns(path, list(zip(*rows)), starts, roles, names))
        rows.clear()
        starts.clear()

    first = None
    for row in reader:
        start, end = end + 1, reader.line_num
        if not "".join(row).strip():  # blank records hold nothing (as _records skips them)
            continue
        if first is None:
            first = row
            roles, has_header = delimited_layout(path, first, start, explicit)
            names = first if has_header else None
            if has_header:
                continue
        rows.append(row)
        starts.append(start)
        if len(rows) == CHUNK_RECORDS:
            convert()
    if first is None:
        return None
    if rows:
        convert()
    if not parts:
        return None
    timestamps = None if parts[0].timestamps is None else np.concatenate([p.timestamps for p in parts])
    return RawInteractions(np.concatenate([p.users for p in parts]), np.concatenate([p.items for p in parts]),
                           timestamps, parts[0].columns_used)


def read_exact(path: Path, fmt: str, explicit: dict[str, str] | None) -> RawInteractions:
    """A text file read whole and checked row by row: the reference the streaming readers match,
    and the reader of everything they leave (quoted CSV, odd line breaks, errors)."""
    text = read_text(path)
    if fmt == "seq":
        if explicit is not None:
            raise DataError(path, "columns apply to csv, tsv and inter files; this file is read as "
                                  "sequences (user item item ...), which has none")
        return _read_sequences(path, text)
    if fmt == "inter":
        return _read_atomic(path, text, explicit)
    return _read_delimited(path, text, "\t" if fmt == "tsv" else ",", explicit)


ROLES = ("user", "item", "rating", "timestamp")
_ROLE_ALIASES = {"time": "timestamp"}  # the short form `time=` reads better on a command line
_COLUMNS_EXAMPLE = "user=userId,item=movieId,time=timestamp"


def parse_columns(text: str) -> dict[str, str]:
    """The command-line form `user=userId,item=movieId,time=timestamp` as {role: column}.

    Roles come back normalised ("time" as "timestamp"); a bad form is a one-line ConfigError.
    """
    pairs = []
    for part in text.split(","):
        role, sep, column = part.partition("=")
        if not sep or not role.strip() or not column.strip():
            raise ConfigError(f"columns {text!r}: expected role=column pairs, e.g. {_COLUMNS_EXAMPLE}")
        pairs.append((role, column))
    return _checked_roles(pairs, repr(text))


def _checked_roles(pairs, shown: str) -> dict[str, str]:
    """(role, column) pairs as {role: column}, roles normalised; `shown` is how the user wrote them."""
    roles: dict[str, str] = {}
    for role, column in pairs:
        role = str(role).strip()
        key = _ROLE_ALIASES.get(role.lower(), role.lower())
        if key not in ROLES:
            raise ConfigError(f"columns {shown}: unknown role {role!r}; expected user, item, rating, time")
        if key in roles:
            raise ConfigError(f"columns {shown}: {key} is given twice")
        column = str(column).strip()
        if not column:
            raise ConfigError(f"columns {shown}: no column given for {role}")
        roles[key] = column
    missing = [r for r in ("user", "item") if r not in roles]
    if missing:
        raise ConfigError(f"columns {shown}: {' and '.join(missing)} column not given (e.g. {_COLUMNS_EXAMPLE})")
    return roles


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


def _read_atomic(path: Path, text: str, explicit: dict[str, str] | None) -> RawInteractions:
    """RecBole atomic `.inter`: tab-separated, header `name:type ...`; needs user_id and item_id."""
    lines = text.splitlines()
    names, types, roles = atomic_layout(path, lines[0], explicit)
    # Keep original line numbers while skipping blank lines.
    numbered = [(k + 2, ln) for k, ln in enumerate(lines[1:]) if ln.strip()]
    if not numbered:
        raise DataError(path, "file is empty: a header but no interactions")
    rows = []
    for lineno, ln in numbered:
        fields = ln.split("\t")
        if len(fields) != len(names):
            raise DataError(path, f"wrong column count: expected {len(names)}, found {len(fields)}", line=lineno)
        rows.append(fields)
    linenos = [n for n, _ in numbered]
    raw = _from_columns(path, list(zip(*rows)), linenos, roles, names)
    for j, t in enumerate(types):  # RecBole declares numeric columns; hold them to it
        if t == "float" and j not in roles.values():
            _checked_floats(path, [r[j] for r in rows], linenos, names[j])
    return raw


def atomic_layout(path: Path, header: str, explicit: dict[str, str] | None):
    """(names, types, roles) of a RecBole header line `name:type<TAB>...`."""
    fields = header.split("\t")
    names = [h.split(":", 1)[0].strip() for h in fields]
    types = [h.split(":", 1)[1].strip() if ":" in h else "" for h in fields]
    if explicit is not None:
        return names, types, _explicit_columns(path, explicit, names, 1)
    # RecBole's own field names (its USER_ID_FIELD, ITEM_ID_FIELD, RATING_FIELD, TIME_FIELD).
    for needed in ("user_id", "item_id"):
        if needed not in names:
            raise DataError(path, f"missing header field {needed!r} (header is {header!r})", line=1)
    return names, types, {r: names.index(n) for r, n in (("user", "user_id"), ("item", "item_id"),
                                                           ("rating", "rating"), ("timestamp", "timestamp"))
                          if n in names}


def _from_columns(path: Path, cols: list, linenos: list[int], roles: dict[str, int],
                  names: list[str] | None) -> RawInteractions:
    """The interactions held in `cols` (one tuple of cells per column) at the columns `roles` names."""
    users = np.array([u.strip() for u in cols[roles["user"]]], dtype=str)
    items = np.array([i.strip() for i in cols[roles["item"]]], dtype=str)
    for name, arr in (("user", users), ("item", items)):
        empty = np.flatnonzero(arr == "")
        if empty.size:
            raise DataError(path, f"empty {name} id", line=linenos[empty[0]])
    if "rating" in roles:
        _checked_floats(path, cols[roles["rating"]], linenos, "rating", finite=True)
    timestamps = None
    if "timestamp" in roles:
        timestamps = _checked_floats(path, cols[roles["timestamp"]], linenos, "timestamp", finite=True)
    return RawInteractions(users, items, timestamps, columns_used(roles, names))


def columns_used(roles: dict[str, int], names: list[str] | None) -> dict[str, str]:
    """{role: column} in role order: header names, or 0-based indexes as digit strings."""
    return {r: str(j) if names is None else names[j].strip() for r, j in sorted(roles.items(), key=_role_order)}


def _role_order(role_and_column: tuple[str, int]) -> int:
    return ROLES.index(role_and_column[0])


def _checked_floats(path: Path, values, linenos: list[int], what: str, finite: bool = False) -> np.ndarray:
    """`values` as float64; a cell that is not a number (or, with `finite`, is nan or inf) is an error.

    Time and rating must be finite: a nan timestamp sorts after every number, so it would silently
    make that interaction the user's test item.
    """
    try:
        floats = np.array(values, dtype=np.float64)
    except ValueError:
        for v, n in zip(values, linenos):
            if not v.strip():
                raise DataError(path, f"empty {what}", line=n) from None
            try:
                float(v)
            except ValueError:
                raise DataError(path, f"non-numeric {what} {v!r}", line=n) from None
        raise  # unreachable: numpy parses text exactly as float() does
    if finite:
        bad = np.flatnonzero(~np.isfinite(floats))
        if bad.size:
            k = bad[0]
            raise DataError(path, f"{what} {values[k].strip()!r} is not a finite number", line=linenos[k])
    return floats


def _normalised(name: str) -> str:
    """`User ID`, `user_id`, `userId` and `user_id:token` all become `userid`."""
    return re.sub(r"[^a-z0-9]", "", name.split(":", 1)[0].lower())


# Header names of the common data sets, normalised (see `_normalised`), best first: when a header
# has two candidates for a role, the earlier name wins (Amazon 2023 has both `asin` and
# `parent_asin`; its benchmark splits identify items by `parent_asin`).
_HEADER_NAMES = {
    "user": ("user", "userid", "uid", "reviewerid", "visitorid", "customerid", "sessionid"),
    "item": ("item", "itemid", "iid", "movieid", "parentasin", "asin", "productid", "trackid",
             "songid", "bookid", "isbn", "businessid"),
    "rating": ("rating", "score", "overall", "stars"),
    "timestamp": ("timestamp", "time", "ts", "unixreviewtime", "datetime", "date"),
}
_KNOWN_NAMES = {a for aliases in _HEADER_NAMES.values() for a in aliases}
_HEADERLESS_LAYOUTS = {2: {"user": 0, "item": 1}, 3: {"user": 0, "item": 1, "timestamp": 2},
                       4: {"user": 0, "item": 1, "rating": 2, "timestamp": 3}}


def _explicit_columns(path: Path, explicit: dict[str, str], names: list[str],
                      header_line: int) -> dict[str, int]:
    """The column index of each role the caller named; `names` is the first record (the header, if any)."""
    ncol = len(names)
    roles: dict[str, int] = {}
    for role, column in explicit.items():
        if column.isdigit():
            j = int(column)
            if j >= ncol:
                raise DataError(path, f"column {column} (for {role}) is out of range: the file has "
                                      f"{ncol} columns, numbered from 0", line=header_line)
        else:
            # The exact name, else the only name that differs just in case.
            folded = [n.strip().casefold() for n in names]
            exact = [j for j, n in enumerate(names) if n.strip() == column]
            loose = [j for j, f in enumerate(folded) if f == column.casefold()]
            found = exact or (loose if len(loose) == 1 else [])
            if not found:
                raise DataError(path, f"no column {column!r} (for {role}) in the header; its columns are "
                                      f"{', '.join(n.strip() for n in names)}", line=header_line)
            j = found[0]
        for other, k in roles.items():
            if k == j:
                raise DataError(path, f"column {column!r} is given for both {other} and {role}", line=header_line)
        roles[role] = j
    return roles


def _header_roles(path: Path, names: list[str], line: int) -> dict[str, int]:
    """Roles found by header name; user and item must be among them."""
    norm = [_normalised(n) for n in names]
    roles = {}
    for role, aliases in _HEADER_NAMES.items():
        j = next((norm.index(a) for a in aliases if a in norm), None)
        if j is not None:
            roles[role] = j
    for role in ("user", "item"):
        if role not in roles:
            raise DataError(path, f"no {role} column among the header's names ({', '.join(n.strip() for n in names)}); "
                                  f"name the columns, e.g. {_COLUMNS_EXAMPLE}", line=line)
    return roles


def _records(path: Path, text: str, delimiter: str) -> tuple[list[list[str]], list[int], dict[int, int]]:
    """The non-blank records of CSV/TSV text, the physical line each starts on, and the last line
    of each record that spans several ({record index: line}).

    The csv module reads the whole text, so a quoted field may hold line breaks; its line_num
    then tells where each record really starts, which splitting the text on lines would not.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows, starts, spans = [], [], {}
    end = 0
    try:
        for row in reader:
            start, end = end + 1, reader.line_num
            # Blank lines, and the all-empty rows (",,,") spreadsheets leave at the end, hold nothing.
            if "".join(row).strip():
                if end > start:
                    spans[len(rows)] = end
                rows.append(row)
                starts.append(start)
    except csv.Error as e:  # e.g. a field over the csv module's size limit
        kind = "TSV" if delimiter == "\t" else "CSV"
        raise DataError(path, f"unreadable {kind} ({e})", line=reader.line_num) from None
    if not rows:
        raise DataError(path, "file is empty")
    return rows, starts, spans


def _read_delimited(path: Path, text: str, delimiter: str, explicit: dict[str, str] | None) -> RawInteractions:
    """CSV/TSV of `user,item[,rating],timestamp`, string ids, optional header (e.g. raw Amazon dumps)."""
    rows, starts, spans = _records(path, text, delimiter)
    first = rows[0]
    ncol = len(first)
    roles, has_header = delimited_layout(path, first, starts[0], explicit)
    body = 1 if has_header else 0
    if body == len(rows):
        raise DataError(path, "file is empty: a header but no interactions")
    widths = list(map(len, rows))
    if widths.count(ncol) != len(widths):
        k = next(k for k, w in enumerate(widths) if w != ncol)
        open_quote = f"; the record runs on to line {spans[k]}: is a quote left open?" if k in spans else ""
        raise DataError(path, f"wrong column count: expected {ncol}, found {widths[k]}{open_quote}", line=starts[k])
    for k, end in spans.items():
        # Text columns (reviews) may hold line breaks; ids never do. A broken id means a quote was
        # left open and swallowed the lines after it, which would otherwise pass unnoticed.
        for role in ("user", "item"):
            cell = rows[k][roles[role]]
            if k >= body and ("\n" in cell or "\r" in cell):
                raise DataError(path, f"{role} id {cell[:40]!r} spans lines {starts[k]} to {end}: "
                                      "is a quote left open?", line=starts[k])
    rows, starts = rows[body:], starts[body:]
    try:
        return _from_columns(path, list(zip(*rows)), starts, roles, first if has_header else None)
    except DataError as e:
        if has_header or e.line != starts[0] or not e.problem.startswith("non-numeric"):
            raise
        # Text where the first line needs numbers: most likely a header whose names gsau does not know.
        raise DataError(path, f"{e.problem}; if line {e.line} is a header, name the columns, "
                              f"e.g. {_COLUMNS_EXAMPLE}", line=e.line) from None


def delimited_layout(path: Path, first: list[str], line: int,
                     explicit: dict[str, str] | None) -> tuple[dict[str, int], bool]:
    """(roles, whether `first`, the first record, on `line`, is a header) of a CSV/TSV file."""
    # A first record naming any known column is a header; so is one the caller names columns in.
    has_header = any(_normalised(f) in _KNOWN_NAMES for f in first) or (
        explicit is not None and not all(c.isdigit() for c in explicit.values()))
    if explicit is not None:
        return _explicit_columns(path, explicit, first, line), has_header
    if has_header:
        return _header_roles(path, first, line), has_header
    if len(first) in _HEADERLESS_LAYOUTS:
        return _HEADERLESS_LAYOUTS[len(first)], has_header
    raise DataError(path, f"wrong column count: expected user,item[,rating],timestamp (2 to 4 columns), "
                          f"found {len(first)}", line=line)
