"""`gsau data stats` and `gsau data import`: results, bad input, bundled datasets."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gsau.cli import main

LOOSE = ["--min-user-count", "1", "--min-item-count", "1"]
# Users ann (4), bo (3), cy (3): three users, items x, y, z, w.
CSV = ("user,item,timestamp\nann,x,3\nann,y,1\nbo,x,2\nbo,z,5\nann,z,4\ncy,y,1\ncy,x,0\n"
       "bo,w,9\ncy,w,8\nann,w,0\n")


def stats(capsys, *args):
    capsys.readouterr()
    rc = main(["data", "stats", *map(str, args), "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out)


def counts(s):
    return {k: s[k] for k in ("users", "items", "interactions", "split", "sequence_length", "density")}


def test_stats_of_a_file(tmp_path, capsys):
    path = tmp_path / "shop.csv"
    path.write_text(CSV)
    s = stats(capsys, path, *LOOSE)
    assert s["dataset"] == "shop"
    assert (s["users"], s["items"], s["interactions"]) == (3, 4, 10)
    assert s["split"] == {"train": 4, "valid": 3, "test": 3}
    assert s["sequence_length"] == {"min": 3, "median": 3.0, "max": 4}
    assert s["density"] == pytest.approx(10 / 12)
    assert "warnings" not in s


def test_stats_text_output(tmp_path, capsys):
    path = tmp_path / "shop.csv"
    path.write_text(CSV)
    assert main(["data", "stats", str(path), *LOOSE]) == 0
    out = capsys.readouterr().out
    assert "users          3" in out and "interactions   10" in out
    assert "train 4  valid 3  test 3" in out


def test_import_then_stats_gives_the_same_counts(tmp_path, capsys):
    path = tmp_path / "shop.csv"
    path.write_text(CSV)
    out = tmp_path / "imported"
    capsys.readouterr()
    assert main(["data", "import", str(path), "--out", str(out), *LOOSE]) == 0
    assert "3 users, 4 items, 10 interactions" in capsys.readouterr().out
    assert os.listdir(out) == ["dataset.npz"]
    from_dir = stats(capsys, out)
    assert from_dir["dataset"] == "shop"
    assert counts(from_dir) == counts(stats(capsys, path, *LOOSE))
    # The npz path itself works too.
    assert counts(stats(capsys, out / "dataset.npz")) == counts(from_dir)


def test_import_applies_thresholds_and_dedup(tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_text("u,a\nu,a\nu,b\nu,c\nv,a\nv,b\nv,c\nw,a\nw,b\n")
    out = tmp_path / "o"
    assert main(["data", "import", str(path), "--out", str(out), "--min-user-count", "3",
                 "--min-item-count", "1", "--dedup"]) == 0
    s = stats(capsys, out)
    # dedup: u has a, b, c; w has 2 and goes.
    assert (s["users"], s["items"], s["interactions"]) == (2, 3, 6)


@pytest.mark.parametrize("existing", [False, True])
def test_failed_import_writes_nothing(tmp_path, capsys, existing):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,x,1\nb,y\n")
    out = tmp_path / "out"
    if existing:
        out.mkdir()
    assert main(["data", "import", str(bad), "--out", str(out), *LOOSE]) == 2
    assert f"{bad}:2:" in capsys.readouterr().err
    if existing:
        assert os.listdir(out) == []
    else:
        assert not out.exists()


def test_import_into_a_file_path_fails_cleanly(tmp_path, capsys):
    path = tmp_path / "shop.csv"
    path.write_text(CSV)
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    assert main(["data", "import", str(path), "--out", str(taken), *LOOSE]) == 2
    err = capsys.readouterr().err
    assert f"{taken}: cannot create output directory" in err
    assert taken.read_text() == "keep me"


# -- short users -------------------------------------------------------------------------------

def test_short_users_fail_or_drop(tmp_path, capsys):
    path = tmp_path / "s.txt"
    path.write_text("1 1 2 3\n2 1 2\n3 3 2 1 4\n")
    capsys.readouterr()
    assert main(["data", "stats", str(path), *LOOSE]) == 2
    err = capsys.readouterr().err
    assert f"{path}: 1 users have fewer than 3 interactions (e.g. user '2')" in err
    s = stats(capsys, path, "--drop-short", *LOOSE)
    assert s["users"] == 3  # the dataset as loaded; the split dropped one
    assert s["split"] == {"train": 3, "valid": 2, "test": 2}
    assert s["warnings"] == ["dropped 1 users with fewer than 3 interactions"]


# -- bad input ---------------------------------------------------------------------------------

def truncated_gzip():
    whole = gzip.compress(b"1 2 3 4\n2 3 4 5\n" * 50)
    return whole[: len(whole) // 2]


BAD = [
    # (file name, content, expected "path:LINE:" line or None, problem)
    ("ids.txt", "1 2 3\n2 4 x5 6\n", 2, "non-numeric id 'x5'"),
    ("one.txt", "1 2 3\n\n4\n", 3, "at least one item id, found 1 column"),
    ("again.txt", "1 2 3\n2 3 4\n1 5\n", 3, "user 1 appears again (first on line 1)"),
    ("huge.txt", "1 2 3\n2 3 99999999999999999999\n", 2, "id '99999999999999999999' is too large"),
    ("cols.csv", "a,x,1\nb,y,2\nc,z\n", 3, "wrong column count: expected 3, found 2"),
    ("wide.csv", "a,x,5,1,extra\n", 1, "wrong column count"),
    ("head.csv", "user,item,timestamp\na,x,1\nb,y,2,9\n", 3, "wrong column count: expected 3, found 4"),
    ("time.tsv", "a\tx\t1\nb\ty\tyesterday\n", 2, "non-numeric timestamp 'yesterday'"),
    ("rate.csv", "user,item,rating\na,x,5\nb,y,good\n", 3, "non-numeric rating 'good'"),
    ("cols.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n1\t2\n", 3,
     "wrong column count: expected 3, found 2"),
    ("field.inter", "user_id:token\ttimestamp:float\n1\t3\n", 1, "missing header field 'item_id'"),
    ("time.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n1\t2\tsoon\n", 3,
     "non-numeric timestamp 'soon'"),
    ("empty.txt", "", None, "file is empty"),
    ("blank.csv", "\n  \n\n", None, "file is empty"),
    ("header.inter", "user_id:token\titem_id:token\n", None, "a header but no interactions"),
    ("header.csv", "user,item,timestamp\n", None, "a header but no interactions"),
    ("magic.txt.gz", b"\x1f\x8b" + b"this is not deflate data", None, "unreadable gzip"),
    ("cut.txt.gz", truncated_gzip(), None, "unreadable gzip"),
    ("latin.txt", "1 2 3\n2 3 4\n".encode() + "3 é\n".encode("latin-1"), 3, "not UTF-8 text"),
]


@pytest.mark.parametrize("name,content,line,problem", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_naming_file_and_line(tmp_path, capsys, name, content, line, problem):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    capsys.readouterr()
    rc = main(["data", "stats", str(path), *LOOSE])
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    where = f"{path}:{line}:" if line is not None else f"{path}:"
    assert err.startswith(f"gsau: error: {where} ")
    assert problem in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("spec", ["nosuchdataset", "beauty2"])
def test_unknown_dataset(tmp_path, capsys, monkeypatch, spec):
    monkeypatch.chdir(tmp_path)
    assert main(["data", "stats", spec]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gsau: error: {spec}: unknown dataset")
    assert "beauty, sports, toys" in err


def test_directory_without_dataset(tmp_path, capsys):
    assert main(["data", "stats", str(tmp_path)]) == 2
    assert f"{tmp_path}: directory holds no dataset.npz" in capsys.readouterr().err


def test_console_script_reports_without_traceback(tmp_path):
    """The installed `gsau` command, in a fresh process: exit status 2 and one line on stderr."""
    gz = tmp_path / "broken.txt.gz"
    gz.write_bytes(b"\x1f\x8b\x08\x00garbage")
    script = Path(sys.executable).parent / "gsau"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "gsau.cli"]
    proc = subprocess.run(cmd + ["data", "stats", str(gz)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"gsau: error: {gz}: unreadable gzip")
    assert "Traceback" not in proc.stderr and proc.stdout == ""


# -- bundled data ------------------------------------------------------------------------------

BUNDLED = {"beauty": (22363, 12101, 198502), "sports": (35598, 18357, 296337), "toys": (19412, 11924, 167597)}


@pytest.mark.parametrize("name", list(BUNDLED))
def test_bundled_counts(capsys, name):
    users, items, interactions = BUNDLED[name]
    s = stats(capsys, name)
    assert s["dataset"] == name
    assert (s["users"], s["items"], s["interactions"]) == (users, items, interactions)
    assert s["split"] == {"train": interactions - 2 * users, "valid": users, "test": users}
    assert s["sequence_length"]["min"] == 5


def test_bundled_ids_are_internal_ids():
    from gsau.data import load_dataset
    from gsau.data.interactions import bundled_path
    data = load_dataset("Beauty")  # names are case-insensitive
    assert data.user_ids.tolist() == [str(u) for u in range(1, data.n_users + 1)]
    assert data.item_ids.tolist() == [str(i) for i in range(1, data.n_items + 1)]
    with gzip.open(bundled_path("beauty"), "rt") as f:
        lines = [list(map(int, ln.split())) for ln in f if ln.strip()]
    assert len(lines) == data.n_users
    for tokens in lines:
        assert data.sequence(tokens[0]).tolist() == tokens[1:]
