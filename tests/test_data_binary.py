"""The binary form written by `gsau data import`."""

import json
import os

import numpy as np
import pytest

from gsau.data import Interactions, load_dataset
from gsau.data.interactions import BINARY_NAME
from gsau.errors import DataError

CSV = "user,item,timestamp\nann,x,3\nann,y,1\nbo,x,2\nbo,z,5\nann,z,4\ncy,y,1\ncy,x,0\n"


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "shop.csv"
    path.write_text(CSV)
    return load_dataset(path, min_user=1, min_item=1)


def assert_same(a, b):
    for name in ("user_ids", "item_ids", "indptr", "items"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.name == b.name


def test_save_load_round_trip(tmp_path, data):
    target = data.save(tmp_path / "out" / "nested")
    assert target == tmp_path / "out" / "nested" / BINARY_NAME
    for spec in (target, target.parent):
        back = Interactions.load(spec)
        assert_same(back, data)
        assert back.items.dtype == np.int64 and back.indptr.dtype == np.int64
        assert back.meta["has_timestamps"] is True and back.meta["min_user_count"] == 1
        assert back.user_index("bo") == data.user_index("bo")
    # Only the dataset file is left behind: the temporary file was renamed into place.
    assert os.listdir(target.parent) == [BINARY_NAME]


def test_load_dataset_accepts_the_directory_and_ignores_thresholds(tmp_path, data):
    data.save(tmp_path / "d")
    back = load_dataset(tmp_path / "d", min_user=50, min_item=50)
    assert_same(back, data)
    assert back.name == "shop"


def test_failed_save_leaves_the_previous_file_and_no_temp(tmp_path, data, monkeypatch):
    out = tmp_path / "d"
    data.save(out)
    before = (out / BINARY_NAME).read_bytes()

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        data.save(out)
    assert os.listdir(out) == [BINARY_NAME]
    assert (out / BINARY_NAME).read_bytes() == before


def test_truncated_or_foreign_files_are_data_errors(tmp_path, data):
    whole = data.save(tmp_path / "d").read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(whole[:100])
    with pytest.raises(DataError, match="not a gsau dataset file"):
        Interactions.load(cut)
    junk = tmp_path / "junk.npz"
    junk.write_text("hello")
    with pytest.raises(DataError, match="not a gsau dataset file"):
        Interactions.load(junk)
    with pytest.raises(DataError, match="no such file"):
        Interactions.load(tmp_path / "missing.npz")


def test_other_format_version_is_refused(tmp_path, data):
    target = data.save(tmp_path / "d")
    with np.load(target) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.array(json.dumps(dict(meta, format_version=99)))
    np.savez(target, **arrays)
    with pytest.raises(DataError, match="format version 99"):
        Interactions.load(target)


def test_directory_without_dataset_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no dataset.npz"):
        load_dataset(tmp_path / "empty")


def test_output_path_that_is_a_file_is_a_data_error(tmp_path, data):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(DataError, match="cannot create output directory"):
        data.save(tmp_path / "taken")


def test_saved_dataset_gets_a_normal_file_mode_not_the_temp_files_0600(tmp_path, data):
    old = os.umask(0o022)
    try:
        target = data.save(tmp_path / "out")
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o644
