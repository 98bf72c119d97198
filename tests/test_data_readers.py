"""Loaders of every format, chronological order, k-core, dedup and id maps."""

import gzip

import numpy as np
import pytest

from gsau.data.interactions import build, k_core, load_dataset
from gsau.data.readers import RawInteractions, read_interactions


def write(path, text):
    path.write_text(text)
    return path


def external(data):
    """{external user id: [external item ids in the dataset's order]}."""
    return {data.user_ids[u - 1]: [data.item_ids[i - 1] for i in data.sequence(u)]
            for u in range(1, data.n_users + 1)}


def text(ids) -> list[str]:
    """A reader's ids as text: the exact readers give str, the streaming ones UTF-8 bytes, or
    integers where every id is one written as str(int) would write it."""
    return [i.decode("utf-8") if isinstance(i, bytes) else str(i) for i in ids.tolist()]


def load_all(path, **kw):
    return load_dataset(path, min_user=1, min_item=1, **kw)


# -- sequence text ---------------------------------------------------------------------------

SEQ = "1 5 3 9\n2 3 5\n\n3 9 9 1\n"


def test_sequence_text_keeps_line_order_as_time_order(tmp_path):
    data = load_all(write(tmp_path / "seq.txt", SEQ))
    assert external(data) == {"1": ["5", "3", "9"], "2": ["3", "5"], "3": ["9", "9", "1"]}
    assert (data.n_users, data.n_items, data.n_interactions) == (3, 4, 8)
    assert data.meta["has_timestamps"] is False


def test_sequence_text_gzipped_reads_the_same(tmp_path):
    plain = load_all(write(tmp_path / "seq.txt", SEQ))
    packed = tmp_path / "seq.txt.gz"
    packed.write_bytes(gzip.compress(SEQ.encode()))
    data = load_all(packed)
    assert external(data) == external(plain)
    np.testing.assert_array_equal(data.items, plain.items)
    np.testing.assert_array_equal(data.indptr, plain.indptr)


def test_gzip_is_recognised_by_content_not_name(tmp_path):
    odd = tmp_path / "seq.txt"
    odd.write_bytes(gzip.compress(SEQ.encode()))
    assert external(load_all(odd))["1"] == ["5", "3", "9"]


def test_numeric_ids_keep_numeric_order(tmp_path):
    # As text "10" < "2" < "9"; as numbers 2 < 9 < 10, and internal ids follow the numbers.
    data = load_all(write(tmp_path / "seq.txt", "10 100 9\n2 9 10\n9 100 10\n"))
    assert data.user_ids.tolist() == ["2", "9", "10"]
    assert data.item_ids.tolist() == ["9", "10", "100"]
    # User "10" is internal 3 and holds items 100 (internal 3), 9 (internal 1).
    assert data.sequence(3).tolist() == [3, 1]


def test_dense_ids_map_to_themselves(tmp_path):
    data = load_all(write(tmp_path / "seq.txt", "2 3 1\n1 1 2 3\n3 2 4\n"))
    assert data.user_ids.tolist() == ["1", "2", "3"]
    assert data.item_ids.tolist() == ["1", "2", "3", "4"]
    assert data.sequence(1).tolist() == [1, 2, 3]
    assert data.sequence(2).tolist() == [3, 1]
    assert data.sequence(3).tolist() == [2, 4]


def test_integer_text_ids_in_csv_sort_as_numbers_but_stay_distinct(tmp_path):
    data = load_all(write(tmp_path / "x.csv", "10,7\n2,07\n10,2\n2,10\n"))
    assert data.user_ids.tolist() == ["2", "10"]
    # "7" and "07" are different ids; the text breaks the numeric tie ("07" < "7").
    assert data.item_ids.tolist() == ["2", "07", "7", "10"]
    assert external(data) == {"10": ["7", "2"], "2": ["07", "10"]}


# -- RecBole atomic ----------------------------------------------------------------------------

def test_atomic_inter_orders_by_timestamp_and_ignores_extra_columns(tmp_path):
    text = ("item_id:token\trating:float\tuser_id:token\ttimestamp:float\treview:token_seq\n"
            "i3\t5\tu1\t30\tgreat stuff\n"
            "i1\t4\tu2\t20\t\n"
            "i2\t3\tu1\t10\tmeh\n"
            "\n"
            "i4\t1\tu1\t20\tok\n"
            "i3\t2\tu2\t5\tfine\n")
    data = load_all(write(tmp_path / "x.inter", text))
    assert external(data) == {"u1": ["i2", "i4", "i3"], "u2": ["i3", "i1"]}
    assert data.meta["has_timestamps"] is True


def test_atomic_inter_without_timestamp_keeps_file_order(tmp_path):
    text = "user_id:token\titem_id:token\nb\tz\na\ty\nb\tx\na\tz\n"
    data = load_all(write(tmp_path / "x.inter", text))
    assert external(data) == {"a": ["y", "z"], "b": ["z", "x"]}
    assert data.meta["has_timestamps"] is False


# -- CSV / TSV ---------------------------------------------------------------------------------

CSV_HEADER = ("user,item,rating,timestamp\n"
              "alice,i3,5,300\n"
              "bob,i1,4,100\n"
              "alice,i1,3,100\n"
              "alice,i2,1,100\n"
              "bob,i9,2,50\n"
              "alice,i0,5,200\n")
# alice: t=100 ties i1, i2 (file order), then i0 (200), i3 (300). bob: i9 (50), i1 (100).
CSV_EXPECTED = {"alice": ["i1", "i2", "i0", "i3"], "bob": ["i9", "i1"]}


def test_csv_with_header_orders_by_time_with_ties_in_file_order(tmp_path):
    assert external(load_all(write(tmp_path / "x.csv", CSV_HEADER))) == CSV_EXPECTED


def test_csv_without_header_four_columns(tmp_path):
    body = CSV_HEADER.split("\n", 1)[1]
    assert external(load_all(write(tmp_path / "x.csv", body))) == CSV_EXPECTED


def test_csv_without_header_three_columns_is_user_item_timestamp(tmp_path):
    data = load_all(write(tmp_path / "x.csv", "u,b,3\nu,a,1\nv,a,2\nu,c,2\n"))
    assert external(data) == {"u": ["a", "c", "b"], "v": ["a"]}


def test_csv_without_timestamp_keeps_file_order(tmp_path):
    data = load_all(write(tmp_path / "x.csv", "u,b\nv,a\nu,a\nu,c\n"))
    assert external(data) == {"u": ["b", "a", "c"], "v": ["a"]}
    assert data.meta["has_timestamps"] is False


def test_tsv_with_amazon_style_header(tmp_path):
    text = CSV_HEADER.replace(",", "\t").replace("user\titem\trating\ttimestamp",
                                                 "reviewerID\tasin\toverall\tunixReviewTime")
    assert external(load_all(write(tmp_path / "x.tsv", text))) == CSV_EXPECTED


def test_header_columns_found_by_name_in_any_order(tmp_path):
    text = "timestamp,item_id,user_id\n3,a,u\n1,b,u\n2,c,u\n"
    assert external(load_all(write(tmp_path / "x.csv", text))) == {"u": ["b", "c", "a"]}


def test_many_equal_timestamps_stay_in_file_order(tmp_path):
    items = ["i5", "i3", "i4", "i1", "i2", "i9", "i7", "i8", "i6"]
    text = "".join(f"u,{i},7\n" for i in items) + "u,i0,1\n"
    assert external(load_all(write(tmp_path / "x.csv", text))) == {"u": ["i0"] + items}


def test_explicit_format_overrides_the_name(tmp_path):
    path = write(tmp_path / "data.txt", "u,a,2\nu,b,1\n")
    assert external(load_dataset(path, min_user=1, min_item=1, fmt="csv")) == {"u": ["b", "a"]}


# -- id maps -----------------------------------------------------------------------------------

def test_id_maps_round_trip(tmp_path):
    data = load_all(write(tmp_path / "x.csv", CSV_HEADER))
    for user, seq in CSV_EXPECTED.items():
        u = data.user_index(user)
        assert data.user_ids[u - 1] == user
        assert [data.item_ids[i - 1] for i in data.sequence(u)] == seq
    # Dense ids in sorted external order; 0 is padding, so items are 1..I.
    assert data.user_ids.tolist() == ["alice", "bob"]
    assert data.item_ids.tolist() == ["i0", "i1", "i2", "i3", "i9"]
    assert data.items.min() == 1 and data.items.max() == data.n_items
    with pytest.raises(KeyError, match="carol"):
        data.user_index("carol")


# -- k-core ------------------------------------------------------------------------------------

# With k = 2 for users and items, each pass removes one more link of a chain:
# u1 (1 item) -> item a (1 user) -> u2 (only b left) -> item b -> u3 (only c left) -> item c.
# u4 keeps d, e; what survives is u4, u5, u6 x d, e. A single pass would only remove u1.
CHAIN = "u1,a\nu2,a\nu2,b\nu3,b\nu3,c\nu4,c\nu4,d\nu4,e\nu5,d\nu5,e\nu6,e\nu6,d\n"


def test_k_core_iterates_to_a_fixed_point(tmp_path):
    data = load_dataset(write(tmp_path / "chain.csv", CHAIN), min_user=2, min_item=2)
    assert external(data) == {"u4": ["d", "e"], "u5": ["d", "e"], "u6": ["e", "d"]}
    assert data.item_ids.tolist() == ["d", "e"]
    assert data.lengths.min() >= 2
    assert np.bincount(data.items)[1:].min() >= 2
    assert data.meta["raw_interactions"] == 12


def test_k_core_function_reaches_a_stable_result():
    users = np.array([0, 1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5])
    items = np.array([0, 0, 1, 1, 2, 2, 3, 4, 3, 4, 4, 3])
    keep = k_core(users, items, 2, 2)
    assert keep.tolist() == [False] * 6 + [True] * 6
    # Applying it again to the survivors removes nothing.
    again = k_core(users[keep], items[keep], 2, 2)
    assert again.all()


def test_k_core_thresholds_are_separate(tmp_path):
    # Users: a has 3, b has 2, c has 1. Items: x has 3, y has 2, z has 1.
    text = "a,x\na,y\na,z\nb,x\nb,y\nc,x\n"
    path = write(tmp_path / "t.csv", text)
    # Users need 2: c goes; items need 1: x, y, z all stay.
    assert external(load_dataset(path, min_user=2, min_item=1)) == {"a": ["x", "y", "z"], "b": ["x", "y"]}
    # Items need 2: z goes; users need 1: everyone stays.
    assert external(load_dataset(path, min_user=1, min_item=2)) == {"a": ["x", "y"], "b": ["x", "y"], "c": ["x"]}
    # Users need 3: only a is left, and then only a's items with >= 1 user remain.
    assert external(load_dataset(path, min_user=3, min_item=1)) == {"a": ["x", "y", "z"]}
    data = load_dataset(path, min_user=3, min_item=1)
    assert data.meta["min_user_count"] == 3 and data.meta["min_item_count"] == 1


def test_default_is_five_core(tmp_path):
    five = "".join(f"u{u},i{i}\n" for u in range(5) for i in range(5))
    data = load_dataset(write(tmp_path / "f.csv", five + "u9,i0\nu9,i1\nu9,i2\nu9,i3\n"))
    assert data.n_users == 5 and data.n_items == 5 and data.n_interactions == 25


def test_nothing_left_after_k_core_is_an_error(tmp_path):
    from gsau.errors import DataError
    with pytest.raises(DataError, match="no interactions left after 5-core"):
        load_dataset(write(tmp_path / "small.csv", "u,a\nu,b\n"))


# -- dedup -------------------------------------------------------------------------------------

DUP = "u,a,30\nu,b,20\nu,a,10\nv,c,1\nv,c,2\nv,d,3\n"


def test_duplicates_kept_by_default(tmp_path):
    data = load_all(write(tmp_path / "d.csv", DUP))
    assert external(data) == {"u": ["a", "b", "a"], "v": ["c", "c", "d"]}
    assert data.meta["dedup"] is False


def test_dedup_keeps_the_first_occurrence_in_time(tmp_path):
    # u's earliest "a" is at t=10 (last in the file), so u reads a, b, not b, a.
    data = load_all(write(tmp_path / "d.csv", DUP), dedup=True)
    assert external(data) == {"u": ["a", "b"], "v": ["c", "d"]}
    assert data.meta["dedup"] is True


def test_dedup_without_timestamps_keeps_the_first_in_file(tmp_path):
    data = load_all(write(tmp_path / "d.txt", "1 7 8 7 9 8\n"), dedup=True)
    assert external(data) == {"1": ["7", "8", "9"]}


def test_dedup_happens_before_k_core(tmp_path):
    path = write(tmp_path / "d.csv", "u,a\nu,a\nv,a\nv,b\n")
    assert load_dataset(path, min_user=2, min_item=1).n_users == 2
    assert external(load_dataset(path, min_user=2, min_item=1, dedup=True)) == {"v": ["a", "b"]}


# -- raw reader --------------------------------------------------------------------------------

def test_reader_returns_file_order_rows(tmp_path):
    raw = read_interactions(write(tmp_path / "x.csv", "b,y,2\na,x,1\n"))
    assert text(raw.users) == ["b", "a"]
    assert text(raw.items) == ["y", "x"]
    assert raw.timestamps.tolist() == [2.0, 1.0]


def test_build_from_raw_numeric_arrays():
    raw = RawInteractions(np.array([3, 3, 1]), np.array([20, 10, 20]), np.array([5.0, 1.0, 0.0]))
    data = build(raw, "x", "x", min_user=1, min_item=1)
    assert external(data) == {"1": ["20"], "3": ["10", "20"]}


# -- bad input the reader must refuse or survive -----------------------------------------------

def refused(path, **kw):
    """The DataError reading `path` raises; it must be one line naming the file."""
    from gsau.errors import DataError
    with pytest.raises(DataError) as caught:
        read_interactions(path, **kw)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}:")
    return caught.value


@pytest.mark.parametrize("bad", ["nan", "NaN", "inf", "-Infinity", "1e400"])
def test_non_finite_timestamps_are_refused_with_their_line(tmp_path, bad):
    # A nan timestamp sorts after every number: it would silently become the user's test item.
    err = refused(write(tmp_path / "t.csv", f"u,a,1\nu,b,{bad}\nu,c,3\n"))
    assert (err.line, err.problem) == (2, f"timestamp '{bad}' is not a finite number")
    err = refused(write(tmp_path / "t.inter", f"user_id:token\titem_id:token\ttimestamp:float\nu\ta\t1\n\nu\tb\t{bad}\n"))
    assert (err.line, err.problem) == (4, f"timestamp '{bad}' is not a finite number")


def test_non_finite_rating_is_refused(tmp_path):
    err = refused(write(tmp_path / "r.csv", "user,item,rating,timestamp\nu,a,4,1\nu,b,nan,2\n"))
    assert (err.line, err.problem) == (3, "rating 'nan' is not a finite number")
    err = refused(write(tmp_path / "r.inter", "user_id:token\titem_id:token\trating:float\nu\ta\tinf\n"))
    assert (err.line, err.problem) == (2, "rating 'inf' is not a finite number")


def test_empty_timestamp_cell_is_named_as_empty(tmp_path):
    err = refused(write(tmp_path / "e.csv", "u,a,1\nu,b, \nu,c,3\n"))
    assert (err.line, err.problem) == (2, "empty timestamp")


def test_byte_order_mark_is_not_part_of_the_first_field(tmp_path):
    # Excel's "CSV UTF-8" starts with a BOM; left in, the header's "user" would not be recognised.
    bom = "\ufeff"
    assert external(load_all(write(tmp_path / "x.csv", bom + CSV_HEADER))) == CSV_EXPECTED
    inter = load_all(write(tmp_path / "x.inter", bom + "user_id:token\titem_id:token\nu\ta\nu\tb\n"))
    assert external(inter) == {"u": ["a", "b"]}
    assert external(load_all(write(tmp_path / "x.txt", bom + SEQ))) == external(load_all(write(tmp_path / "y.txt", SEQ)))


QUOTED = ('user,item,review,timestamp\n'
          'u,a,"good,\nvery ""good""\n\nindeed",2\n'  # one record on lines 2 to 5
          'u,b,ok,1\n'
          '\n'
          'v,c,"two\r\nlines",1\n')  # lines 8 and 9 (a blank line 7 before)


def test_quoted_fields_may_hold_line_breaks(tmp_path):
    raw = read_interactions(write(tmp_path / "q.csv", QUOTED))
    assert text(raw.users) == ["u", "u", "v"]
    assert text(raw.items) == ["a", "b", "c"]
    assert raw.timestamps.tolist() == [2.0, 1.0, 1.0]


@pytest.mark.parametrize("bad,problem", [("w,d,fine\n", "wrong column count: expected 4, found 3"),
                                         ("w,d,fine,soon\n", "non-numeric timestamp 'soon'"),
                                         ("w,,fine,3\n", "empty item id")])
def test_line_numbers_after_a_multi_line_record_are_physical_lines(tmp_path, bad, problem):
    path = tmp_path / "q.csv"
    path.write_bytes((QUOTED + bad).encode())  # bytes: keep the \r\n as written
    err = refused(path)
    assert (err.line, err.problem) == (10, problem)


def test_crlf_line_endings_count_once(tmp_path):
    path = tmp_path / "w.csv"
    path.write_bytes(b"u,a,1\r\n\r\nu,b,x\r\n")
    assert refused(path).line == 3


def test_an_open_quote_is_reported_where_it_starts(tmp_path):
    # The open quote swallows the rest of the file into one field.
    err = refused(write(tmp_path / "o.csv", 'u,a,1\nu,"b,2\nu,c,3\nu,d,4\n'))
    assert err.line == 2
    assert err.problem == "wrong column count: expected 3, found 2; the record runs on to line 4: is a quote left open?"
    # With two columns the swallowed lines still give a record of the right width.
    err = refused(write(tmp_path / "p.csv", 'u,a\nu,"b\nu,c\nu,d\n'))
    assert err.line == 2
    assert err.problem == r"item id 'b\nu,c\nu,d\n' spans lines 2 to 4: is a quote left open?"


def test_all_empty_rows_from_spreadsheets_are_skipped(tmp_path):
    data = load_all(write(tmp_path / "s.csv", "user,item,timestamp\nu,b,2\nu,a,1\n,,\n, ,\n"))
    assert external(data) == {"u": ["a", "b"]}


def test_header_only_is_refused(tmp_path):
    err = refused(write(tmp_path / "h.csv", "userId,movieId,rating,timestamp\n\n,,,\n"))
    assert err.problem == "file is empty: a header but no interactions"
    err = refused(write(tmp_path / "e.csv", ",,\n\n"))
    assert err.problem == "file is empty"


def test_what_the_csv_module_cannot_read_is_a_data_error(tmp_path):
    # The csv module refuses fields over 128 KiB (as an open quote running over a big file makes).
    err = refused(write(tmp_path / "l.tsv", 'u\ta\t1\nu\tb\t2\nu\t"' + "x" * 200_000 + '"\t3\n'))
    assert err.line == 3 and err.problem == "unreadable TSV (field larger than field limit (131072))"
