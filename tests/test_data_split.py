"""Leave-one-out by time."""

import numpy as np
import pytest

from gsau.data import LeaveOneOut, load_dataset
from gsau.errors import DataError


def split_of(tmp_path, text, **kw):
    path = tmp_path / "seq.txt"
    path.write_text(text)
    return LeaveOneOut.from_interactions(load_dataset(path, min_user=1, min_item=1), **kw)


def rows(indptr, items):
    return [items[indptr[u]:indptr[u + 1]].tolist() for u in range(len(indptr) - 1)]


# Items are dense 1..7 already, so internal ids equal the file's ids.
HAND = "1 1 2 3 4\n2 5 6 7\n3 7 1 5 6 2\n"


def test_leave_one_out_by_time(tmp_path):
    split = split_of(tmp_path, HAND)
    assert rows(split.train_indptr, split.train_items) == [[1, 2], [5], [7, 1, 5]]
    assert split.targets("valid").tolist() == [3, 6, 6]
    assert split.targets("test").tolist() == [4, 7, 2]
    assert split.valid[0] == 0 and split.test[0] == 0  # index 0 is no user
    assert rows(*split.history("valid")) == [[1, 2], [5], [7, 1, 5]]
    assert rows(*split.history("test")) == [[1, 2, 3], [5, 6], [7, 1, 5, 6]]
    assert split.sizes() == {"train": 6, "valid": 3, "test": 3}


def test_train_pairs_hold_no_held_out_interaction(tmp_path):
    # User 3 sees item 5 in training; its valid item 6 and test item 2 are not in its training.
    split = split_of(tmp_path, HAND)
    users, items = split.train_pairs()
    assert list(zip(users.tolist(), items.tolist())) == [(1, 1), (1, 2), (2, 5), (3, 7), (3, 1), (3, 5)]
    for u in (1, 2, 3):
        mine = set(items[users == u].tolist())
        assert split.valid[u] not in mine and split.test[u] not in mine
    assert len(items) == split.data.n_interactions - 2 * split.n_users


def test_repeated_item_is_held_out_by_position_not_by_value(tmp_path):
    # User 1 buys item 2 again last: the test interaction is held out, the earlier one stays in training.
    split = split_of(tmp_path, "1 2 1 3 2\n")
    assert split.train_items.tolist() == [2, 1]
    assert split.valid.tolist() == [0, 3] and split.test.tolist() == [0, 2]


SHORT = "1 1 2 3\n2 4\n3 5 6\n4 1 2 3 4 5 6\n"  # users 2 and 3 have 1 and 2 interactions


def test_short_users_are_rejected_with_their_count(tmp_path):
    with pytest.raises(DataError) as err:
        split_of(tmp_path, SHORT)
    message = str(err.value)
    assert "2 users have fewer than 3 interactions" in message
    assert "user '2'" in message  # an example, in the file's ids
    assert "--drop-short" in message
    assert err.value.path.endswith("seq.txt")


def test_short_users_dropped_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match="dropped 2 users with fewer than 3 interactions"):
        split = split_of(tmp_path, SHORT, drop_short=True)
    assert split.data.user_ids.tolist() == ["1", "4"]
    assert split.data.meta["dropped_short_users"] == 2
    assert rows(split.train_indptr, split.train_items) == [[1], [1, 2, 3, 4]]
    assert split.targets("test").tolist() == [3, 6]
    # Items keep their ids (dropping users does not renumber the catalogue).
    assert split.n_items == 6


def test_exactly_three_interactions_is_enough(tmp_path):
    split = split_of(tmp_path, "1 1 2 3\n")
    assert split.train_items.tolist() == [1]


def test_unknown_stage(tmp_path):
    with pytest.raises(ValueError, match="stage"):
        split_of(tmp_path, HAND).history("train")


def test_split_follows_timestamps_not_file_order(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("u,a,4\nu,b,1\nu,c,3\nu,d,2\n")
    split = LeaveOneOut.from_interactions(load_dataset(path, min_user=1, min_item=1))
    ids = split.data.item_ids
    # Time order: b, d, c, a.
    assert [ids[i - 1] for i in split.train_items] == ["b", "d"]
    assert ids[split.valid[1] - 1] == "c" and ids[split.test[1] - 1] == "a"
    assert np.array_equal(split.train_indptr, [0, 2])
