"""Streaming, vectorised readers: the common case of every text format, and Parquet.

The exact readers (readers.py) hold the whole text and split it row by row in Python, hundreds of
bytes of Python objects per interaction (SCALING.md, "Import"). These read the file in blocks of
CHUNK_BYTES that end at a line break, find the line breaks and delimiters of a block with numpy,
and keep only arrays: ids as fixed-width bytes (or integers when every id of a column is an
integer written the canonical way, "42" but not "042"), times as float64. Memory is a small
multiple of the result, and nothing is per row.

They read a file exactly as the exact readers would, or not at all: anything outside the plain
case (a quote character, a line break other than \\n or \\r\\n, a NUL byte, an id over
MAX_ID_BYTES bytes, a number that is not plain decimal digits, white space beyond ASCII, which
str.strip() would take off an id) and any error (a wrong column count, an empty id, a
bad number, a repeated user, bytes that are not UTF-8) make `read_fast` return None, and the exact
reader then reads the file, or reports the error with its line, as it always has. Parquet has no
exact reader: it is read here, in record batches, through pyarrow (the `parquet` extra).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from gsau.errors import DataError, GsauError

CHUNK_BYTES = 8 << 20
MAX_ID_BYTES = 128  # a wider id is read by the exact reader (the byte matrix would grow with it)
_MAX_DIGITS = 18  # every 18-digit integer fits in int64

# What str.strip() and str.split() remove, as bytes (ASCII; non-ASCII text is checked apart).
_SPACE = np.zeros(256, dtype=bool)
_SPACE[list(b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f")] = True
# White space beyond ASCII (str.isspace() in UTF-8): a block holding any is left to the exact reader,
# whose str.strip() would take it off an id's edges.
UNICODE_SPACES = tuple(chr(c).encode() for c in (0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029,
                                                  0x202F, 0x205F, 0x3000))
# Line breaks that str.splitlines() knows and the csv module does not (or the reverse, for \r alone).
_ODD_BREAKS = (b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\xc2\x85", b"\xe2\x80\xa8", b"\xe2\x80\xa9")


class _Fallback(Exception):
    """The fast path cannot read this input exactly as the exact reader would."""


def read_fast(path: Path, fmt: str, explicit: dict[str, str] | None):
    """The file's RawInteractions, or None where the exact reader must read it (see the module)."""
    try:
        if fmt == "seq":
            return None if explicit is not None else _read_sequences(path)
        return _read_delimited(path, fmt, explicit)
    except (_Fallback, DataError, OSError, EOFError, zlib.error):
        return None


# -- blocks of lines ------------------------------------------------------------------------------

def _blocks(path: Path, size: int):
    """The file's bytes (gunzipped when its magic bytes say gzip), BOM removed, in blocks that each
    end at a line break (the last may not): (bytes, the same as a uint8 array)."""
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    carry, first = b"", True
    with (gzip.open if gz else open)(path, "rb") as f:
        while True:
            piece = f.read(size)
            block = carry + piece
            if first:
                block, first = block.removeprefix(b"\xef\xbb\xbf"), False
            cut = block.rfind(b"\n") + 1 if piece else len(block)
            if cut:
                yield block[:cut], _checked(block[:cut])
            carry = block[cut:]
            if not piece:
                return


def _checked(block: bytes) -> np.ndarray:
    """A block as uint8, if the plain path may read it (see the module docstring)."""
    if b"\x00" in block or (b"\r" in block and block.count(b"\r") != block.count(b"\r\n")):
        raise _Fallback
    if not block.isascii():
        try:
            block.decode("utf-8")  # the exact reader reports the line of bytes that are not UTF-8
        except UnicodeDecodeError:
            raise _Fallback from None
        if any(space in block for space in UNICODE_SPACES):
            raise _Fallback
    return np.frombuffer(block, dtype=np.uint8)


def _lines(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of each non-empty line of a block; ends exclude the \\n (and a \\r before it).
    An empty line holds no record for any reader; other blank lines (white space, bare
    delimiters) fail the column or id checks and go to the exact reader."""
    breaks = np.flatnonzero(buf == 10)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.append(breaks, len(buf))
    ends -= (ends > starts) & (buf[np.maximum(ends - 1, 0)] == 13)
    keep = ends > starts
    return starts[keep], ends[keep]


def _has_spaces(raw: bytes, delimiter: bytes) -> bool:
    """Whether a block holds white space that str.strip() would take off a field (not \\n, nor the
    \\r of \\r\\n, which `_lines` leaves out of every line)."""
    return any(c in raw for c in (b" ", b"\t", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\x1f")
               if c != delimiter)


def _stripped(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Field bounds with white space removed from both ends (as str.strip() does), one byte a
    round for the fields that still start or end with it."""
    starts, ends = starts.copy(), ends.copy()
    rows = np.flatnonzero(starts < ends)
    while rows.size:
        rows = rows[_SPACE[buf[starts[rows]]]]
        starts[rows] += 1
        rows = rows[starts[rows] < ends[rows]]
    rows = np.flatnonzero(starts < ends)
    while rows.size:
        rows = rows[_SPACE[buf[ends[rows] - 1]]]
        ends[rows] -= 1
        rows = rows[starts[rows] < ends[rows]]
    return starts, ends


def _byte_matrix(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[n, w] uint8: field r's bytes left-aligned, zero-padded; and the fields' lengths. Gathered
    a slab of rows at a time, so the index matrix stays near 16 MB whatever the width."""
    lengths = ends - starts
    width = int(lengths.max(initial=1)) or 1
    if width > MAX_ID_BYTES:
        raise _Fallback
    out = np.empty((len(starts), width), dtype=np.uint8)
    offsets = np.arange(width, dtype=np.int32)
    last = len(buf) - 1
    rows = max(1, (4 << 20) // width)
    for lo in range(0, len(starts), rows):
        s, n = starts[lo: lo + rows].astype(np.int32), lengths[lo: lo + rows]
        cells = np.minimum(s[:, None] + offsets, last)
        out[lo: lo + rows] = np.where(offsets < n[:, None], buf[cells], 0)
    return out, lengths


def _digits(matrix: np.ndarray, lengths: np.ndarray):
    """Plain decimal numbers, [-]digits[.digits] with at most 18 digits: (mantissa int64, digits
    after the point, whether there is a point, negative, ok) per row."""
    n, width = matrix.shape
    negative = matrix[:, 0] == ord("-")
    first = negative.astype(np.int64)
    mantissa = np.zeros(n, dtype=np.int64)
    n_digits = np.zeros(n, dtype=np.int64)
    after = np.zeros(n, dtype=np.int64)
    point = np.zeros(n, dtype=bool)
    ok = lengths > first
    for k in range(width):
        c = matrix[:, k]
        active = (k < lengths) & (k >= first)
        digit = active & (c >= 48) & (c <= 57)
        dot = active & (c == 46)
        ok &= ~active | digit | (dot & ~point)
        mantissa = np.where(digit & (n_digits < _MAX_DIGITS), mantissa * 10 + (c.astype(np.int64) - 48), mantissa)
        n_digits += digit
        after += digit & point
        point |= dot
    ok &= (n_digits >= 1) & (n_digits <= _MAX_DIGITS)
    return mantissa, after, point, negative, ok


def _ids(matrix: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """A column of ids: integers (int32 where they fit) when every one is a canonical integer, so
    its text is str(value); else fixed-width bytes."""
    mantissa, _, point, negative, ok = _digits(matrix, lengths)
    lead = matrix[np.arange(len(matrix)), negative.astype(np.int64)]
    canonical = ok & ~point & ((lead != ord("0")) | (lengths == 1))  # "0" yes; "07", "-0" no
    if canonical.all():
        values = np.where(negative, -mantissa, mantissa)
        small = len(values) and -2 ** 31 <= values.min() and values.max() < 2 ** 31
        return values.astype(np.int32) if small else values  # half the memory for the usual ids
    return np.ascontiguousarray(matrix).view(f"S{matrix.shape[1]}").ravel()


def _numbers(matrix: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Plain decimals as float64, rounded exactly as float() rounds them: a mantissa below 2^53
    over a power of ten up to 10^22 are both exact doubles, so their quotient is correctly rounded."""
    mantissa, after, _, negative, ok = _digits(matrix, lengths)
    if not (ok.all() and (mantissa < 2 ** 53).all()):
        raise _Fallback  # exponents, inf, nan, underscores, empty cells: the exact reader decides
    values = mantissa / 10.0 ** after
    return np.where(negative, -values, values)


class _Column:
    """One role's values, block by block: integer blocks until a block holds a non-integer id."""

    def __init__(self):
        self.parts: list[np.ndarray] = []

    def add(self, values: np.ndarray) -> None:
        self.parts.append(values)

    def array(self) -> np.ndarray:
        if not self.parts:
            return np.zeros(0, dtype=np.int64)
        if any(p.dtype.kind == "S" for p in self.parts):
            # Integers back to their text: canonical, so str(value) is what the file held.
            self.parts = [p if p.dtype.kind == "S" else p.astype("S20") for p in self.parts]
        out = np.concatenate(self.parts)
        self.parts = []
        return out


# -- sequence text: user item item ... ----------------------------------------------------------------

def _read_sequences(path: Path):
    from gsau.data.readers import RawInteractions
    users, items, line_users = _Column(), _Column(), []
    for raw, buf in _blocks(path, CHUNK_BYTES):
        if not raw.isascii() or any(b in raw for b in _ODD_BREAKS):
            raise _Fallback
        solid = ~_SPACE[buf]
        edges = np.diff(np.concatenate([[False], solid, [False]]).astype(np.int8))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        line = np.searchsorted(np.flatnonzero(buf == 10), starts)  # the line of each token
        first = np.concatenate([[True], line[1:] != line[:-1]])
        per_line = np.diff(np.append(np.flatnonzero(first), len(starts)))
        if (per_line < 2).any():
            raise _Fallback  # a user without items
        matrix, lengths = _byte_matrix(buf, starts, ends)
        mantissa, _, point, negative, ok = _digits(matrix, lengths)
        if not ok.all() or point.any():
            raise _Fallback
        ids = np.where(negative, -mantissa, mantissa)
        line_users.append(ids[first])
        users.add(np.repeat(ids[first], per_line - 1))
        items.add(ids[~first])
    if not line_users:
        raise _Fallback  # an empty file: the exact reader says so
    once = np.concatenate(line_users)
    if len(np.unique(once)) != len(once):
        raise _Fallback  # a user on two lines
    return RawInteractions(users.array(), items.array(), None)


# -- CSV, TSV and RecBole's .inter ------------------------------------------------------------------

def _read_delimited(path: Path, fmt: str, explicit):
    """CSV and TSV (no quoting), and RecBole's .inter (tab-separated lines, header `name:type`)."""
    from gsau.data.readers import RawInteractions, atomic_layout, columns_used, delimited_layout
    atomic = fmt == "inter"
    delimiter = "\t" if fmt in ("tsv", "inter") else ","
    columns = {"user": _Column(), "item": _Column()}
    times, roles, names, checks = [], None, None, []
    for raw, buf in _blocks(path, CHUNK_BYTES):
        if b'"' in raw and not atomic:
            raise _Fallback  # quoting: the csv module's rules apply
        if atomic and any(b in raw for b in _ODD_BREAKS):
            raise _Fallback  # str.splitlines() would break lines there
        starts, ends = _lines(buf)
        if roles is None:
            if not len(starts) or (atomic and starts[0] != 0):
                raise _Fallback  # blank lines first (.inter: a blank header)
            header = raw[starts[0]:ends[0]].decode("utf-8")
            if not header.replace(delimiter, "").strip():
                raise _Fallback  # a blank record first: the exact reader skips or refuses it
            if atomic:
                names, types, roles = atomic_layout(path, header, explicit)
                checks = [j for j, t in enumerate(types) if t == "float" and j not in roles.values()]
                has_header = True
            else:
                names = header.split(delimiter)
                roles, has_header = delimited_layout(path, names, 1, explicit)
                names = names if has_header else None
            ncol = len(header.split(delimiter))
            checks += [roles["rating"]] if "rating" in roles else []
            if has_header:
                starts, ends = starts[1:], ends[1:]
            if not len(starts):
                continue
        marks = np.flatnonzero(buf == ord(delimiter))
        marks = marks[np.searchsorted(marks, starts[0]):]  # not the header's
        if len(marks) != len(starts) * (ncol - 1):
            raise _Fallback  # a wrong column count
        # Sorted lines and marks, as many marks as lines times ncol - 1: each line has its own
        # ncol - 1 exactly when every row of the reshaped marks lies within its line.
        marks = marks.reshape(len(starts), ncol - 1)
        if ncol > 1 and ((marks[:, 0] < starts) | (marks[:, -1] >= ends)).any():
            raise _Fallback
        spaces = _has_spaces(raw, delimiter.encode())
        fields = {}
        for j in set(roles.values()) | set(checks):
            bounds = (starts if j == 0 else marks[:, j - 1] + 1, ends if j == ncol - 1 else marks[:, j])
            fields[j] = _byte_matrix(buf, *(_stripped(buf, *bounds) if spaces else bounds))
        for role in ("user", "item"):
            matrix, lengths = fields[roles[role]]
            if (lengths == 0).any():
                raise _Fallback  # an empty id
            columns[role].add(_ids(matrix, lengths))
        for j in checks:
            _numbers(*fields[j])  # ratings and .inter's float columns must be numbers
        if "timestamp" in roles:
            times.append(_numbers(*fields[roles["timestamp"]]))
    users = columns["user"].array()
    if not len(users):
        raise _Fallback  # empty, or a header without interactions
    timestamps = np.concatenate(times) if "timestamp" in roles else None
    return RawInteractions(users, columns["item"].array(), timestamps, columns_used(roles, names))


# -- Parquet ----------------------------------------------------------------------------------------

def read_parquet(path: Path, explicit: dict[str, str] | None):
    """A Parquet file's interactions, read in record batches through pyarrow. Columns are found by
    the header names a CSV file's are, or named with `columns`; ids are integers or text, times
    numbers or timestamps (as seconds)."""
    from gsau.data.readers import RawInteractions, _explicit_columns, _header_roles, columns_used
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise GsauError("reading Parquet needs pyarrow (not installed): pip install 'gsau[parquet]'") from None
    try:
        source = pq.ParquetFile(str(path))
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(path, f"unreadable Parquet file ({str(e).splitlines()[0]})") from None
    names = list(source.schema_arrow.names)
    roles = _header_roles(path, names, None) if explicit is None else _explicit_columns(path, explicit, names, None)
    wanted = sorted(set(roles.values()))
    users, items, times, row = _Column(), _Column(), [], 0
    try:
        for batch in source.iter_batches(batch_size=1 << 20, columns=[names[j] for j in wanted]):
            cols = dict(zip(wanted, batch.columns))
            users.add(_arrow_ids(path, cols[roles["user"]], names[roles["user"]], row))
            items.add(_arrow_ids(path, cols[roles["item"]], names[roles["item"]], row))
            for role in ("rating", "timestamp"):
                if role in roles:
                    values = _arrow_numbers(path, cols[roles[role]], names[roles[role]], row)
                    if role == "timestamp":
                        times.append(values)
            row += batch.num_rows
    except (OSError, ValueError) as e:  # a damaged file, an id too large for int64 (ArrowInvalid)
        raise DataError(path, f"unreadable Parquet file ({str(e).splitlines()[0]})") from None
    if not row:
        raise DataError(path, "no interactions (0 rows)")
    return RawInteractions(users.array(), items.array(), np.concatenate(times) if times else None,
                           columns_used(roles, names))


def _no_nulls(path, column, name: str, row: int, what: str) -> None:
    import pyarrow.compute as pc
    if column.null_count:
        first = row + int(pc.index(pc.is_null(column), True).as_py())
        raise DataError(path, f"column {name!r}: missing {what} in row {first}")


def _arrow_ids(path, column, name: str, row: int) -> np.ndarray:
    import pyarrow as pa
    _no_nulls(path, column, name, row, "id")
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.dictionary_decode(), kind.value_type
    if pa.types.is_integer(kind):
        return column.cast(pa.int64()).to_numpy()
    if pa.types.is_floating(kind):
        values = column.to_numpy()
        if not (np.isfinite(values) & (np.mod(values, 1) == 0)).all():
            raise DataError(path, f"column {name!r}: ids are fractional numbers; ids must be whole numbers or text")
        return values.astype(np.int64)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        column = column.cast(pa.large_string())  # one offset layout (int64)
        offsets = np.frombuffer(column.buffers()[1], dtype=np.int64)[column.offset: column.offset + len(column) + 1]
        data = column.buffers()[2]
        buf = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
        lengths = np.diff(offsets)
        if (lengths == 0).any():
            raise DataError(path, f"column {name!r}: empty id in row {row + int(np.flatnonzero(lengths == 0)[0])}")
        try:
            return _ids(*_byte_matrix(buf, offsets[:-1], offsets[1:]))
        except _Fallback:
            # Ids over MAX_ID_BYTES bytes: as Python text, one batch at a time.
            return np.char.encode(np.asarray(column.to_pylist(), dtype=str), "utf-8")
    raise DataError(path, f"column {name!r}: ids must be integers or text, not {kind}")


def _arrow_numbers(path, column, name: str, row: int) -> np.ndarray:
    import pyarrow as pa
    _no_nulls(path, column, name, row, "value")
    kind = column.type
    if pa.types.is_timestamp(kind):
        per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[kind.unit]
        return column.cast(pa.int64()).to_numpy() / per_second
    if pa.types.is_date(kind):
        return column.cast(pa.date32()).cast(pa.int32()).to_numpy().astype(np.float64) * 86400.0
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)):
        raise DataError(path, f"column {name!r}: expected numbers or timestamps, not {kind}")
    values = column.cast(pa.float64()).to_numpy()
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DataError(path, f"column {name!r}: {values[bad[0]]} in row {row + int(bad[0])} is not a finite number")
    return values
