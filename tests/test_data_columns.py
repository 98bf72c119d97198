"""Which file columns hold the user, item, rating and time: by header name, by position, or as told."""

import pytest

from gsau.data import Interactions, load_dataset
from gsau.data.readers import parse_columns, read_interactions
from gsau.errors import ConfigError, GsauError
from test_data_readers import external, refused, text, write

MOVIELENS = ("userId,movieId,rating,timestamp\n"
             "1,31,2.5,1260759144\n"
             "1,1029,3.0,1260759179\n"
             "2,10,4.0,835355493\n"
             "1,1061,3.0,1260759182\n"
             "1,1129,2.0,1260759100\n")
MOVIELENS_ORDER = {"1": ["1129", "31", "1029", "1061"], "2": ["10"]}


# -- by header name ----------------------------------------------------------------------------

def test_movielens_header_is_recognised_and_reported(tmp_path):
    data = load_dataset(write(tmp_path / "ratings.csv", MOVIELENS), min_user=1, min_item=1)
    assert external(data) == MOVIELENS_ORDER
    assert data.meta["columns"] == {"user": "userId", "item": "movieId", "rating": "rating",
                                    "timestamp": "timestamp"}


@pytest.mark.parametrize("header,used", [
    ("Item ID,USER ID,Time", {"user": "USER ID", "item": "Item ID", "timestamp": "Time"}),
    ("visitorid,event,itemid,timestamp", {"user": "visitorid", "item": "itemid", "timestamp": "timestamp"}),
    ("customer_id,product_id,score,ts", {"user": "customer_id", "item": "product_id", "rating": "score",
                                         "timestamp": "ts"}),
    # Amazon 2023 has both; its benchmark splits name items by parent_asin.
    ("asin,parent_asin,user_id,timestamp", {"user": "user_id", "item": "parent_asin", "timestamp": "timestamp"}),
    # Two candidates for the time: the more specific name wins, whatever the column order.
    ("uid,iid,time,timestamp", {"user": "uid", "item": "iid", "timestamp": "timestamp"}),
])
def test_common_header_names_in_any_case_and_order(tmp_path, header, used):
    names = header.split(",")
    cell = {"user": "u", "item": "a", "timestamp": "5", "rating": "4"}
    roles = {v: k for k, v in used.items()}
    row = ",".join(cell.get(roles.get(n), "7") for n in names)
    raw = read_interactions(write(tmp_path / "h.csv", f"{header}\n{row}\n"))
    assert raw.columns_used == used
    assert (text(raw.users), text(raw.items)) == (["u"], ["a"])


def test_header_without_an_item_name_lists_its_names(tmp_path):
    err = refused(write(tmp_path / "s.csv", "userId,songKey,ts\nu,a,1\n"))
    assert err.line == 1
    assert err.problem.startswith("no item column among the header's names (userId, songKey, ts); name the columns")


def test_unknown_header_read_as_data_gets_a_hint(tmp_path):
    err = refused(write(tmp_path / "v.csv", "visitor,product,when\nu,a,1\n"))
    assert err.line == 1
    assert err.problem == ("non-numeric timestamp 'when'; if line 1 is a header, name the columns, "
                           "e.g. user=userId,item=movieId,time=timestamp")
    # A bad number further down is not a header, and gets no such hint.
    assert refused(write(tmp_path / "w.csv", "u,a,1\nu,b,x\n")).problem == "non-numeric timestamp 'x'"


def test_headerless_columns_are_reported_by_index(tmp_path):
    assert read_interactions(write(tmp_path / "n.csv", "u,a,4,1\n")).columns_used == {
        "user": "0", "item": "1", "rating": "2", "timestamp": "3"}
    assert read_interactions(write(tmp_path / "s.txt", "1 2 3\n")).columns_used is None


# -- as told -----------------------------------------------------------------------------------

SONGS = "listener,song,plays,when\nann,s1,3,20\nann,s2,1,10\nbo,s1,9,5\n"


def test_columns_by_name_index_and_case(tmp_path):
    path = write(tmp_path / "songs.csv", SONGS)
    raw = read_interactions(path, columns={"user": "listener", "item": "SONG", "time": "3"})
    assert raw.columns_used == {"user": "listener", "item": "song", "timestamp": "when"}
    assert raw.timestamps.tolist() == [20.0, 10.0, 5.0]
    data = load_dataset(path, min_user=1, min_item=1, columns="user=listener,item=song,time=when")
    assert external(data) == {"ann": ["s2", "s1"], "bo": ["s1"]}
    assert data.meta["columns"] == {"user": "listener", "item": "song", "timestamp": "when"}


def test_columns_say_exactly_what_is_read(tmp_path):
    # The header names a time column, but the caller did not ask for it: file order is time order.
    path = write(tmp_path / "r.csv", "user,item,timestamp\nu,b,2\nu,a,1\n")
    raw = read_interactions(path, columns={"user": "user", "item": "item"})
    assert raw.timestamps is None and raw.columns_used == {"user": "user", "item": "item"}


def test_columns_by_index_without_a_header(tmp_path):
    raw = read_interactions(write(tmp_path / "w.csv", "x,u,a,1,9\nx,v,b,2,9\n"),
                            columns={"item": "2", "user": "1", "timestamp": "4"})
    assert (text(raw.users), text(raw.items), raw.timestamps.tolist()) == (["u", "v"], ["a", "b"], [9.0, 9.0])
    assert raw.columns_used == {"user": "1", "item": "2", "timestamp": "4"}


def test_columns_in_an_atomic_file(tmp_path):
    path = write(tmp_path / "x.inter", "uid:token\tiid:token\tts:float\nu\ta\t3\nu\tb\t1\n")
    raw = read_interactions(path, columns="user=uid,item=iid,time=ts")
    assert raw.timestamps.tolist() == [3.0, 1.0]
    assert raw.columns_used == {"user": "uid", "item": "iid", "timestamp": "ts"}


@pytest.mark.parametrize("columns,line,problem", [
    ({"user": "listener", "item": "track"}, 1,
     "no column 'track' (for item) in the header; its columns are listener, song, plays, when"),
    ({"user": "0", "item": "4"}, 1, "column 4 (for item) is out of range: the file has 4 columns, numbered from 0"),
    ({"user": "listener", "item": "0"}, 1, "column '0' is given for both user and item"),
])
def test_bad_columns_are_one_line_data_errors(tmp_path, columns, line, problem):
    err = refused(write(tmp_path / "songs.csv", SONGS), columns=columns)
    assert (err.line, err.problem) == (line, problem)


def test_columns_do_not_apply_to_sequence_files(tmp_path):
    err = refused(write(tmp_path / "s.txt", "1 2 3\n"), columns="user=0,item=1")
    assert "columns apply to csv, tsv and inter files" in err.problem


def test_columns_survive_dedup_and_the_binary_form(tmp_path):
    data = load_dataset(write(tmp_path / "songs.csv", SONGS), min_user=1, min_item=1, dedup=True,
                        columns={"user": "listener", "item": "song"})
    back = Interactions.load(data.save(tmp_path / "out"))
    assert back.meta["columns"] == {"user": "listener", "item": "song"}


def test_bundled_data_has_no_columns():
    assert "columns" not in load_dataset("beauty").meta


# -- the command-line form ---------------------------------------------------------------------

def test_parse_columns():
    assert parse_columns("user=userId, item = movieId,time=timestamp") == {
        "user": "userId", "item": "movieId", "timestamp": "timestamp"}
    assert parse_columns("ITEM=1,user=0,rating=r") == {"item": "1", "user": "0", "rating": "r"}


@pytest.mark.parametrize("text,problem", [
    ("", "expected role=column pairs"),
    ("user=a,item", "expected role=column pairs"),
    ("user=a,item=", "expected role=column pairs"),
    ("user=a,=b", "expected role=column pairs"),
    ("user=a,item=b,user=c", "user is given twice"),
    ("user=a,item=b,time=c,timestamp=d", "timestamp is given twice"),
    ("user=a,item=b,genre=c", "unknown role 'genre'"),
    ("user=a,time=t", "item column not given"),
])
def test_parse_columns_refuses_bad_forms(text, problem):
    with pytest.raises(ConfigError) as caught:
        parse_columns(text)
    assert isinstance(caught.value, GsauError) and problem in str(caught.value)
    assert str(caught.value).startswith(f"columns {text!r}: ") and "\n" not in str(caught.value)


def test_a_bad_columns_dict_is_refused_before_reading(tmp_path):
    with pytest.raises(ConfigError, match="unknown role 'who'"):
        read_interactions(tmp_path / "missing.csv", columns={"who": "x", "item": "y"})


def test_indexes_still_skip_a_header_of_known_names(tmp_path):
    # Indexes do not say whether line 1 is a header; a known name there still does.
    raw = read_interactions(write(tmp_path / "ok.csv", MOVIELENS), columns={"user": "0", "item": "1"})
    assert text(raw.items) == ["31", "1029", "10", "1061", "1129"]
    assert raw.columns_used == {"user": "userId", "item": "movieId"}
