"""Streaming import: the block-wise numpy readers (data/stream.py) give what the exact readers give,
or leave the file to them; build() gives what a plain lexsort-and-unique build gives; Parquet
through pyarrow; and the memory of a larger import stays bounded."""

import gzip
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from gsau.data import readers, stream
from gsau.data.interactions import build, k_core, load_dataset
from gsau.data.readers import RawInteractions, read_exact, read_interactions
from gsau.errors import DataError, GsauError
from test_data_readers import text


def same_raw(a: RawInteractions, b: RawInteractions) -> None:
    assert text(a.users) == text(b.users)
    assert text(a.items) == text(b.items)
    assert (a.timestamps is None) == (b.timestamps is None)
    if a.timestamps is not None:
        assert a.timestamps.tolist() == b.timestamps.tolist()
    assert a.columns_used == b.columns_used


def same_data(a, b) -> None:
    for field in ("user_ids", "item_ids", "indptr", "items"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.meta == b.meta


def fast_and_exact(path, fmt, columns=None):
    fast = stream.read_fast(path, fmt, columns)
    return fast, read_exact(path, fmt, columns)


# Files the streaming readers read themselves: (name, text, columns).
PLAIN = [
    ("ml.csv", "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n2,10,4,835355493\n", None),
    ("headerless.csv", "u1,i1,5\nu2,i1,3\nu1,i2,4\n", None),
    ("two.csv", "10,7\n2,07\n10,2\n2,10\n", None),
    ("four.csv", "a,x,4.5,100.25\nb,y,3,99\na,y,1,-5\n", None),
    ("spaced.csv", " a , x ,  3 \nb,y,2\n\nc ,z\x1f,\t1\n", None),
    ("crlf.csv", "user,item,time\r\nu,a,2\r\nv,b,1\r\n\r\nu,c,0\r\n", None),
    ("bom.csv", "\ufeffuser,item\nu,a\nv,b\n", None),
    ("unicode.csv", "user,item\nzoë,café\nálvaro,naïve\nzoë,naïve\n", None),
    ("negative.csv", "user,item\n-3,5\n0,-1\n-3,0\n", None),
    ("big ids.csv", "user,item\n123456789012345678,9\n1,123456789012345678901234\n", None),
    ("explicit.csv", "x,who,what,when\n0,u,a,5\n0,v,b,4\n", {"user": "who", "item": "what", "timestamp": "when"}),
    ("indexes.csv", "x,u,a,1,9\nx,v,b,2,9\n", {"item": "2", "user": "1", "timestamp": "4"}),
    ("ratings.tsv", "user_id\titem_id\trating\ttimestamp\nu\ta\t5\t1\nv\tb\t4\t2\n", None),
    ("last line.csv", "user,item\nu,a\nv,b", None),
    ("r.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\tx:float\n1\t2\t3\t4\t0.5\n2\t2\t1\t5\t-1\n", None),
    ("crlf.inter", "user_id:token\titem_id:token\r\nu\ta\r\n\r\nv\tb\r\n", None),
    ("seq.txt", "1 5 3 9\n2 3 5\n\n3 9 9 1\n", None),
    ("padded seq.txt", "  1   5 3\t9  \n007 3 -5\r\n3 9\n", None),
]


@pytest.mark.parametrize("name, content, columns", PLAIN, ids=[p[0] for p in PLAIN])
def test_the_streaming_reader_reads_what_the_exact_reader_reads(tmp_path, name, content, columns):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8"))
    from gsau.data.readers import detect_format
    fast, exact = fast_and_exact(path, detect_format(path), columns)
    assert fast is not None, "the streaming reader left a plain file to the exact reader"
    same_raw(fast, exact)
    same_data(build(fast, "x", str(path), 1, 1), build(exact, "x", str(path), 1, 1))


@pytest.mark.parametrize("block", [1, 5, 64])
def test_blocks_of_any_size_read_the_same(tmp_path, monkeypatch, block):
    rng = np.random.default_rng(0)
    rows = [f"u{rng.integers(30)},{rng.integers(1, 50)},{rng.integers(100)}.{rng.integers(10)}" for _ in range(400)]
    path = tmp_path / "x.csv"
    path.write_text("user,item,time\n" + "\n".join(rows) + "\n")
    gz = tmp_path / "x.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    whole = stream.read_fast(path, "csv", None)
    monkeypatch.setattr(stream, "CHUNK_BYTES", block)
    for p in (path, gz):
        small = stream.read_fast(p, "csv", None)
        assert small is not None
        same_raw(small, whole)
    same_raw(whole, read_exact(path, "csv", None))


# Files the streaming readers leave to the exact reader, which reads them or refuses them.
LEFT = [
    ("quoted.csv", 'user,item,review\nu,a,"good, really"\nv,b,"two\nlines"\n'),
    ("blank record.csv", "user,item\nu,a\n,,\n , \nv,b\n"),
    ("blank line.csv", "a,x,3\n  \t\nb,y,2\n"),
    ("nbsp inside.csv", "user,item\nu,a\u00a0b\n"),
    ("blank first.csv", ",\nuser,item\nu,a\n"),
    ("exponent.csv", "user,item,time\nu,a,1e9\nv,b,2\n"),
    ("nbsp.csv", "user,item\nu\u00a0,a\nv,b\n"),
    ("cr.csv", "user,item\ru,a\rv,b\r"),
    ("underscore.csv", "user,item,time\nu,a,1_000\n"),
    ("nan.inter", "user_id:token\titem_id:token\tx:float\nu\ta\tnan\n"),
    ("vt.inter", "user_id:token\titem_id:token\nu\ta\x0bv\tb\n"),
    ("plus.txt", "+1 2 3\n"),
    ("underscore.txt", "1 2_0 3\n"),
    # and errors, reported by the exact reader with their line
    ("short row.csv", "user,item,time\nu,a,1\nv,b\n"),
    ("empty id.csv", "user,item\nu,a\n ,b\n"),
    ("bad time.csv", "user,item,time\nu,a,1\nv,b,soon\n"),
    ("inf time.csv", "user,item,time\nu,a,inf\n"),
    ("header only.csv", "user,item\n"),
    ("empty.csv", "\n\n"),
    ("repeat.txt", "1 2 3\n2 3\n1 4\n"),
    ("lonely.txt", "1 2 3\n4\n"),
    ("words.txt", "1 2 x\n"),
    ("latin1.csv", "user,item\nu,caf\xe9\n"),
    ("no user.csv", "who,item\nu,a\n"),
]


@pytest.mark.parametrize("name, content", LEFT, ids=[p[0] for p in LEFT])
def test_what_the_streaming_reader_leaves_the_exact_reader_reads_or_reports(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content.encode("latin-1" if "latin1" in name else "utf-8"))
    from gsau.data.readers import detect_format
    fmt = detect_format(path)
    assert stream.read_fast(path, fmt, None) is None
    try:
        exact = read_exact(path, fmt, None)
    except DataError as e:
        with pytest.raises(DataError) as got:
            read_interactions(path)
        assert str(got.value) == str(e)
    else:
        same_raw(read_interactions(path), exact)


def test_random_damage_gets_the_exact_readers_answer(tmp_path):
    """Good files with one line replaced by one of many kinds of damage: whatever the streaming
    reader makes of it, read_interactions answers what the exact reader answers."""
    damage = ["", " ", ",,", "u,,1", ",a,1", "u,a", "u,a,1,2", "u,a,x", "u,a,1e3", "u,a,-0", "u,a, 7 ",
              "007,a,1", "u,0a,1", "u, a,1.", "u,a,.5", "u,a,+3", "u,a,nan", '"u",a,1', "u\t,a,1", "ü,a,1",
              "u,a,12345678901234567890", "u,a,1.2.3", "\x1cu,a,1", "u,a,1\r"]
    rng = np.random.default_rng(1)
    for trial in range(120):
        rows = [f"{rng.choice(['u', 'v', '12', '7'])},{rng.integers(1, 9)},{rng.integers(50)}" for _ in range(12)]
        rows[rng.integers(12)] = damage[trial % len(damage)]
        path = tmp_path / f"t{trial}.csv"
        path.write_text("user,item,time\n" + "\n".join(rows) + "\n", encoding="utf-8", newline="")
        try:
            want = build(read_exact(path, "csv", None), "t", str(path), 1, 1)
        except DataError as e:
            with pytest.raises(DataError) as got:
                load_dataset(path, min_user=1, min_item=1)
            assert str(got.value) == str(e), damage[trial % len(damage)]
            continue
        same_data(load_dataset(path, min_user=1, min_item=1), want)


# -- CSV the block reader leaves: the csv module, a chunk of records at a time ------------------------

QUOTED = [
    ("reviews.csv", 'user,item,time,text\nu,a,3,"good, very good"\nv,b,1,"two\nlines"\n\nu,c,2,"say ""hi"""\n'),
    ("quoted ids.csv", 'user,item\n"u 1",a\n"v,2","b"\nw,"c"\n'),
    ("crlf quoted.csv", 'user,item,time,note\r\n"u",a,1,x\r\nv,"b",2,"n\r\nn"\r\n'),
    ("headerless quoted.csv", '"u",a,5\nv,"b",3\n'),
    ("bom quoted.tsv", '\ufeffuser\titem\n"u\tx"\ta\nv\tb\n'),
    ("blank rows.csv", 'user,item\n"u",a\n,\n"v",b\n'),
]


@pytest.mark.parametrize("chunk", [1, 2, 1 << 16])
@pytest.mark.parametrize("name, content", QUOTED, ids=[p[0] for p in QUOTED])
def test_quoted_csv_read_in_chunks_is_what_the_exact_reader_reads(tmp_path, monkeypatch, chunk, name, content):
    monkeypatch.setattr(readers, "CHUNK_RECORDS", chunk)
    path = tmp_path / name
    path.write_text(content, encoding="utf-8", newline="")
    fmt = "tsv" if name.endswith(".tsv") else "csv"
    assert stream.read_fast(path, fmt, None) is None
    chunked = readers.read_delimited_chunks(path, "\t" if fmt == "tsv" else ",", None)
    assert chunked is not None
    same_raw(chunked, read_exact(path, fmt, None))


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("name, content", QUOTED, ids=[p[0] for p in QUOTED])
def test_read_interactions_streams_quoted_csv_plain_or_gzip(tmp_path, monkeypatch, compressed, name, content):
    """The chunked reader, not the whole-text one, reads a quoted file (gzip included, decompressed
    as it is read): with read_exact made to fail, the import still gives what it gives."""
    path = tmp_path / (name + (".gz" if compressed else ""))
    data = content.encode("utf-8")
    path.write_bytes(gzip.compress(data) if compressed else data)
    fmt = "tsv" if ".tsv" in name else "csv"
    want = read_exact(path, fmt, None)

    def refused(*args):
        raise AssertionError("the whole-text reader was used")
    monkeypatch.setattr(readers, "read_exact", refused)
    same_raw(read_interactions(path, fmt), want)


def test_a_damaged_gzip_is_left_to_the_exact_reader(tmp_path):
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(gzip.compress(b'user,item\n"u",a\nv,b\n' * 50)[:-30])
    assert readers.read_delimited_chunks(path, ",", None) is None
    with pytest.raises(DataError, match="unreadable gzip"):
        read_interactions(path)


@pytest.mark.parametrize("content", ['user,item\n"u",a\nv\n', 'user,item\nv,"b\nb"\n', 'user,item\n"u,a\nv,b\n', 'user,item\n"u",\n',
                                     'user,item,time\n"u",a,soon\n', 'user,item\n', '"u",a,1,2,3\n'])
def test_a_chunked_read_leaves_every_problem_to_the_exact_reader(tmp_path, content):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8", newline="")
    assert readers.read_delimited_chunks(path, ",", None) is None
    with pytest.raises(DataError) as exact:
        read_exact(path, "csv", None)
    with pytest.raises(DataError) as got:
        read_interactions(path)
    assert str(got.value) == str(exact.value) and ":" in str(got.value)


# -- build ------------------------------------------------------------------------------------------

def reference_build(raw, min_user, min_item, dedup):
    """build() as first written: np.unique for codes and dense ids, lexsort for the order."""
    n = len(raw.users)
    order = np.arange(n)

    def unique_ids(ids):
        vals, codes = np.unique(np.asarray(text(ids)) if ids.dtype.kind == "S" else ids, return_inverse=True)
        if vals.dtype.kind != "U":
            return vals, codes
        try:
            numbers = vals.astype(np.int64)
        except (ValueError, OverflowError):
            return vals, codes
        o = np.lexsort((vals, numbers))
        recode = np.empty_like(o)
        recode[o] = np.arange(len(o))
        return vals[o], recode[codes]

    user_vals, user_codes = unique_ids(raw.users)
    item_vals, item_codes = unique_ids(raw.items)
    t_all = raw.timestamps
    if dedup:
        t = t_all if t_all is not None else order.astype(np.float64)
        by_time = np.lexsort((order, t))
        pair = user_codes[by_time].astype(np.int64) * len(item_vals) + item_codes[by_time]
        _, first = np.unique(pair, return_index=True)
        kept = np.sort(by_time[first])
        user_codes, item_codes, order = user_codes[kept], item_codes[kept], order[kept]
        t_all = None if t_all is None else t_all[kept]
    keep = np.ones(len(user_codes), dtype=bool)
    while True:
        u = np.bincount(user_codes[keep], minlength=len(user_vals))
        i = np.bincount(item_codes[keep], minlength=len(item_vals))
        now = keep & (u[user_codes] >= min_user) & (i[item_codes] >= min_item)
        if now.sum() == keep.sum():
            break
        keep = now
    user_codes, item_codes, order = user_codes[keep], item_codes[keep], order[keep]
    timestamps = None if t_all is None else t_all[keep]
    used_u, user_dense = np.unique(user_codes, return_inverse=True)
    used_i, item_dense = np.unique(item_codes, return_inverse=True)
    perm = np.lexsort(((order,) if timestamps is None else (order, timestamps)) + (user_dense,))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(user_dense, minlength=len(used_u)))])
    return user_vals[used_u].astype(str), item_vals[used_i].astype(str), indptr, item_dense[perm] + 1


@pytest.mark.parametrize("seed", range(12))
def test_build_equals_the_plain_lexsort_build(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    kinds = {
        "int": lambda k: rng.integers(-5, 40, size=k),
        "wide int": lambda k: rng.integers(0, 2**40, size=k) * 1_000_003 % 97 * 10**9,
        "text": lambda k: np.array([f"x{v}" for v in rng.integers(0, 30, size=k)]),
        "bytes": lambda k: np.array([f"{v:03d}".encode() if v % 3 else str(v).encode() for v in rng.integers(0, 30, size=k)]),
    }
    make_u, make_i = (kinds[k] for k in rng.choice(list(kinds), size=2))
    timestamps = None if seed % 3 == 0 else rng.integers(0, 6, size=n).astype(np.float64)
    raw = RawInteractions(make_u(n), make_i(n), timestamps)
    min_user, min_item, dedup = int(rng.integers(1, 4)), int(rng.integers(1, 4)), bool(seed % 2)
    try:
        got = build(raw, "x", "x", min_user, min_item, dedup)
    except DataError:
        with pytest.raises(IndexError):  # the reference fails on nothing left too
            want = reference_build(raw, min_user, min_item, dedup)
            if len(want[3]) == 0:
                raise IndexError
        return
    want = reference_build(raw, min_user, min_item, dedup)
    assert got.user_ids.tolist() == want[0].tolist() and got.item_ids.tolist() == want[1].tolist()
    np.testing.assert_array_equal(got.indptr, want[2])
    np.testing.assert_array_equal(got.items, want[3])


def test_k_core_removes_until_stable():
    # User 3 has one interaction; dropping it leaves item 2 with two, which then goes too.
    users = np.array([0, 0, 1, 1, 1, 2, 2, 2, 3])
    items = np.array([0, 1, 0, 1, 2, 0, 1, 2, 2])
    assert k_core(users, items, 2, 3).tolist() == [True, True, True, True, False, True, True, False, False]
    assert not k_core(users, items, 3, 3).any()


def test_the_unicode_spaces_are_those_str_strip_removes():
    spaces = [chr(c).encode() for c in range(0x80, 0x110000) if chr(c).isspace()]
    assert sorted(stream.UNICODE_SPACES) == sorted(spaces)


# -- Parquet ----------------------------------------------------------------------------------------

def test_parquet_reads_like_the_same_csv(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    csv = "userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{i},{r},{t}\n" for u, i, r, t in [(1, 31, 2.5, 9), (1, 10, 3, 7), (2, 31, 4, 8), (2, 7, 1, 8), (10, 7, 5, 1)])
    (tmp_path / "r.csv").write_text(csv)
    table = pa.table({"userId": pa.array([1, 1, 2, 2, 10], pa.int32()), "movieId": [31, 10, 31, 7, 7],
                      "rating": [2.5, 3, 4, 1, 5], "timestamp": pa.array([9, 7, 8, 8, 1], pa.int64())})
    pq.write_table(table, tmp_path / "r.parquet", row_group_size=2)
    from_csv = load_dataset(tmp_path / "r.csv", min_user=1, min_item=1)
    from_parquet = load_dataset(tmp_path / "r.parquet", min_user=1, min_item=1)
    for field in ("user_ids", "item_ids", "indptr", "items"):
        np.testing.assert_array_equal(getattr(from_parquet, field), getattr(from_csv, field))
    # Text ids (dictionary-encoded too) and real timestamps, in seconds.
    seconds = np.array([9, 7, 8, 8, 1], dtype="datetime64[s]").astype("datetime64[ms]")
    text_table = pa.table({"user": pa.array(["a", "a", "b", "b", "c"]).dictionary_encode(),
                           "item_id": ["x", "y", "x", "z", "z"], "time": pa.array(seconds)})
    pq.write_table(text_table, tmp_path / "t.parquet")
    (tmp_path / "t.csv").write_text("user,item_id,time\na,x,9\na,y,7\nb,x,8\nb,z,8\nc,z,1\n")
    got, want = (load_dataset(tmp_path / f"t.{ext}", min_user=1, min_item=1) for ext in ("parquet", "csv"))
    for field in ("user_ids", "item_ids", "indptr", "items"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
    assert got.meta["columns"] == {"user": "user", "item": "item_id", "timestamp": "time"}


def test_parquet_problems_are_one_line_errors(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"user": ["a", None], "item": ["x", "y"]}), tmp_path / "null.parquet")
    pq.write_table(pa.table({"user": ["a", "b"], "item": [1.5, 2.0]}), tmp_path / "frac.parquet")
    pq.write_table(pa.table({"user": ["a"], "item": ["x"], "time": [float("inf")]}), tmp_path / "inf.parquet")
    pq.write_table(pa.table({"who": ["a"], "item": ["x"]}), tmp_path / "nouser.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    for name, message in [("null", "column 'user': missing id in row 1"), ("frac", "ids are fractional"),
                          ("inf", "inf in row 0 is not a finite number"), ("nouser", "no user column"),
                          ("junk", "unreadable Parquet file")]:
        with pytest.raises(DataError, match=message) as e:
            read_interactions(tmp_path / f"{name}.parquet")
        assert "\n" not in str(e.value)


def test_parquet_without_pyarrow_says_which_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import fails as if not installed
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    with pytest.raises(GsauError, match=r"pip install 'gsau\[parquet\]'"):
        read_interactions(tmp_path / "x.parquet")


# -- memory ---------------------------------------------------------------------------------------

MEASURE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from gsau.data import readers, stream
    from gsau.data.interactions import build
    stream.CHUNK_BYTES = 1 << 20  # small blocks, so what grows with the rows shows
    def peak():  # this process's own high-water mark (ru_maxrss would include the parent's before exec)
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024
    before = peak()
    path = Path(sys.argv[1])
    if sys.argv[2] == "chunks":
        raw = readers.read_delimited_chunks(path, ",", None)
    else:
        raw = readers.read_interactions(path) if sys.argv[2] == "stream" else readers.read_exact(path, "csv", None)
    data = build(raw, "x", str(path))
    print(json.dumps({"mib": peak() - before, "interactions": data.n_interactions}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_import_memory_is_a_small_multiple_of_the_data(tmp_path):
    """300k rows (6 MB of text): the exact reader's Python rows cost over 400 bytes a row, the
    streaming reader's arrays under 100 beyond its blocks (1 MB here)."""
    rows = 300_000
    rng = np.random.default_rng(0)
    users = rng.integers(1, 20_000, size=rows)
    items = rng.integers(1, 5_000, size=rows)
    lines = np.char.add(np.char.add(np.char.add(np.char.add(users.astype(str), ","), items.astype(str)), ","),
                        rng.integers(10**9, 2 * 10**9, size=rows).astype(str))
    path = tmp_path / "big.csv"
    path.write_text("user,item,timestamp\n" + "\n".join(lines.tolist()) + "\n")

    def measure(how):
        out = subprocess.run([sys.executable, "-c", MEASURE, str(path), how], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    streamed, exact = measure("stream"), measure("exact")
    assert streamed["interactions"] == exact["interactions"] > 250_000
    # A few blocks' worth plus under 100 bytes a row at the peak (ids, times, codes, the sort).
    assert streamed["mib"] < 8 + rows * 100 / 2**20, streamed
    assert streamed["mib"] < exact["mib"] / 4, (streamed, exact)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_quoted_csv_memory_stays_a_small_multiple_of_the_data(tmp_path):
    """200k reviews with a quoted text column (about 60 bytes a row, some with line breaks): the
    exact reader holds the text and a Python list per row; the chunked reader one chunk of them."""
    rows = 200_000
    rng = np.random.default_rng(0)
    users, items = rng.integers(1, 20_000, size=rows), rng.integers(1, 5_000, size=rows)
    times = rng.integers(10**9, 2 * 10**9, size=rows)
    lines = [f'u{u},i{i},{t},"great, {"really" if k % 7 else "two"}{chr(10) if k % 97 == 0 else " "}good toy {k}"'
             for k, (u, i, t) in enumerate(zip(users.tolist(), items.tolist(), times.tolist()))]
    path = tmp_path / "reviews.csv"
    path.write_text("user,item,timestamp,review\n" + "\n".join(lines) + "\n")

    def measure(how):
        out = subprocess.run([sys.executable, "-c", MEASURE, str(path), how], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    chunked, exact = measure("chunks"), measure("exact")
    assert chunked["interactions"] == exact["interactions"] > 150_000
    assert chunked["mib"] < exact["mib"] / 3, (chunked, exact)
