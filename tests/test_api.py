"""gsau.Model: fit on a DataFrame (read exactly as the same CSV file), recommend in batches, a
visitor's history, similar items, save / load with the same answers, and its one-line errors."""

import gc
import sys

import numpy as np
import pytest
import torch

pd = pytest.importorskip("pandas")

from app_runs import TINY, tiny_data, tiny_run  # noqa: E402

import gsau  # noqa: E402
from gsau.api import UnknownItemsWarning, frame_interactions  # noqa: E402
from gsau.data import load_dataset  # noqa: E402
from gsau.data.interactions import build  # noqa: E402
from gsau.errors import DataError, GsauError  # noqa: E402
from gsau.serving import Recommendations, UnknownIds  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def as_frame(data, shuffle_seed: int | None = 0) -> pd.DataFrame:
    """Interactions as a DataFrame of user, item, timestamp rows (rows shuffled: time orders them)."""
    users = np.repeat(data.user_ids, data.lengths)
    times = np.concatenate([np.arange(n) * 10.0 + 1e9 for n in data.lengths])
    frame = pd.DataFrame({"user": users, "item": data.item_ids[data.items - 1], "timestamp": times})
    if shuffle_seed is not None:
        frame = frame.sample(frac=1.0, random_state=shuffle_seed).reset_index(drop=True)
    return frame


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return gsau.Model.load(tiny_run(tmp_path_factory))


def test_a_dataframe_is_read_exactly_as_the_same_csv_file(tmp_path):
    frame = as_frame(tiny_data())
    frame["user"] = frame["user"].str[1:].astype(int)  # numeric ids, as pandas reads them from a file
    frame = frame.rename(columns={"user": "userId", "item": "movieId"})  # header names found as a file's are
    path = tmp_path / "ratings.csv"
    frame.to_csv(path, index=False)
    from_file = load_dataset(path, min_user=9, min_item=5)  # k-core filtering that removes users
    from_frame = build(frame_interactions(frame), "ratings", str(path), 9, 5)
    assert 0 < from_file.n_users < tiny_data().n_users
    for field in ("user_ids", "item_ids", "indptr", "items"):
        assert np.array_equal(getattr(from_file, field), getattr(from_frame, field)), field
    assert from_frame.meta["columns"] == {"user": "userId", "item": "movieId", "timestamp": "timestamp"}


def test_dataframe_columns_can_be_named_and_datetimes_order_them():
    frame = pd.DataFrame({"who": ["a", "a", "b"], "what": ["x", "y", "x"],
                          "when": pd.to_datetime(["2024-01-02", "2024-01-01", "2024-01-01"])})
    raw = frame_interactions(frame, columns="user=who,item=what,time=when")
    assert raw.users.tolist() == ["a", "a", "b"] and raw.timestamps[0] - raw.timestamps[1] == 86400
    with pytest.raises(DataError, match="no user column"):
        frame_interactions(frame)
    gappy = pd.DataFrame({"user": [7, None, 8], "item": [1, 2, 3]}).dropna()  # pandas made the ids floats
    assert gappy["user"].dtype.kind == "f" and frame_interactions(gappy).users.tolist() == ["7", "8"]
    frame.loc[1, "who"] = None
    with pytest.raises(DataError, match="'who': 1 missing ids"):
        frame_interactions(frame, columns={"user": "who", "item": "what"})


def test_fit_on_a_dataframe_then_save_and_load_gives_the_same_answers(tmp_path):
    frame = as_frame(tiny_data())
    model = gsau.Model("gsau-rec", **TINY).fit(frame)
    assert model.metrics["best_epoch"] >= 1 and model.run_dir.exists()
    users = ["u0", "u5", "u17"]
    before = (model.recommend(users, k=5), model.recommend_sequence(["sku-101", "sku-102"], k=5),
              model.similar_items(["sku-103"], k=4))
    saved = model.save(tmp_path / "saved")
    trained_in = model.run_dir
    del model
    gc.collect()  # the temporary training directory (and the data written into it) goes with the Model
    assert not trained_in.exists()
    again = gsau.Model.load(saved)
    after = (again.recommend(users, k=5), again.recommend_sequence(["sku-101", "sku-102"], k=5),
             again.similar_items(["sku-103"], k=4))
    for b, a in zip(before, after):
        pd.testing.assert_frame_equal(b, a)
    assert list(before[0].columns) == ["user", "item", "score", "rank"]
    assert before[0]["user"].tolist() == [u for u in users for _ in range(5)]
    copy = again.save(tmp_path / "copy")  # a loaded model saves as well
    pd.testing.assert_frame_equal(gsau.Model.load(copy).recommend(users, k=5), before[0])
    with pytest.raises(GsauError, match="already holds a run"):
        again.save(copy)


def test_batched_recommendations_equal_one_user_at_a_time(loaded):
    recs = loaded.recommender
    users = recs.data.user_ids[:40].tolist()
    frame = loaded.recommend(users, k=6, exclude_seen=True)
    for user in users[::7]:
        mine = frame[frame.user == user]
        one = recs.top_k(user, k=6, exclude_seen=True)
        assert mine["item"].tolist() == [item for item, _ in one]
        assert np.allclose(mine["score"], [score for _, score in one], atol=1e-5)
        seen = set(recs.data.item_ids[recs.data.sequence(recs.data.user_index(user)) - 1])
        assert not seen & set(mine["item"])
    everything = loaded.recommend("u3", k=10**6, exclude_seen=True)  # k capped by what is left to rank
    assert len(everything) == recs.n_items - len(set(recs.data.sequence(recs.data.user_index("u3")).tolist()))


def test_a_history_scores_like_the_user_who_has_it(loaded):
    recs = loaded.recommender
    user = recs.data.user_index("u4")
    history = recs.data.item_ids[recs.data.sequence(user) - 1].tolist()
    as_user = loaded.recommend("u4", k=8)
    visitor = loaded.recommend_sequence(history, k=8)
    assert visitor["item"].tolist() == as_user["item"].tolist()
    assert np.allclose(visitor["score"], as_user["score"], atol=1e-5)
    # Unknown ids: left out (the same answer), reported, or an error naming them.
    noisy = history[:3] + ["no-such-item"] + history[3:]
    pd.testing.assert_frame_equal(loaded.recommend_sequence(noisy, k=8), visitor)
    with pytest.warns(UnknownItemsWarning, match="'no-such-item'"):
        reported = loaded.recommend_sequence(noisy, k=8, unknown="report")
    assert reported.attrs["unknown_items"] == ["no-such-item"]
    with pytest.raises(UnknownIds, match="unknown item 'no-such-item'"):
        loaded.recommend_sequence(noisy, k=8, unknown="error")
    with pytest.raises(UnknownIds, match="unknown items 'x', 'y'"):
        loaded.recommend_sequence(["x", "y"], k=8)


def test_similar_items_are_the_nearest_by_cosine(loaded):
    recs = loaded.recommender
    table = torch.nn.functional.normalize(recs.model.item_table.weight.detach()[1:], dim=1).numpy()
    frame = loaded.similar_items(["sku-107", "sku-140"], k=3)
    for item in ("sku-107", "sku-140"):
        n = recs.item_indices([item])[0][0] - 1
        cosine = table @ table[n]
        cosine[n] = -np.inf  # never the item itself
        want = recs.data.item_ids[np.argsort(-cosine)[:3]].tolist()
        assert frame[frame["item"] == item]["similar"].tolist() == want


def test_unknown_users_are_named_or_get_popular_items(loaded):
    with pytest.raises(UnknownIds, match="unknown users 'ghost', 'nobody'"):
        loaded.recommend(["u1", "ghost", "nobody"], k=3)
    frame = loaded.recommend(["u1", "ghost"], k=3, fallback="popular")
    counts = np.bincount(loaded.recommender.data.items)
    popular = loaded.recommender.data.item_ids[np.argsort(-counts[1:], kind="stable")[:3]].tolist()
    assert frame[frame.user == "ghost"]["item"].tolist() == popular
    assert frame[frame.user == "u1"]["item"].tolist() == loaded.recommend("u1", k=3)["item"].tolist()
    with pytest.raises(GsauError, match="k must be a whole number >= 1"):
        loaded.recommend("u1", k=0)


def test_a_graph_scored_preset_refuses_a_history_clearly(tmp_path_factory):
    model = gsau.Model.load(tiny_run(tmp_path_factory, "lightgcn"))
    assert len(model.recommend("u2", k=4)) == 4
    with pytest.raises(GsauError, match="ranks with its graph encoder"):
        model.recommend_sequence(["sku-101"], k=4)


def test_load_refuses_a_run_that_did_not_finish(tmp_path_factory, tmp_path):
    run = tiny_run(tmp_path_factory)
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    for name in ("config.yaml", "data.json", "best.pt", "last.pt"):
        (stopped / name).write_bytes((run / name).read_bytes())
    with pytest.raises(GsauError, match="not a finished run .*gsau train --resume"):
        gsau.Model.load(stopped)
    with pytest.raises(GsauError, match="not a gsau run directory"):
        gsau.Model.load(tmp_path)
    assert isinstance(Recommendations.from_run(stopped), Recommendations)  # `gsau recommend` still reads it


def test_unknown_options_fail_before_any_data_is_read():
    with pytest.raises(GsauError, match="unknown option 'gama'"):
        gsau.Model("gsau-rec", gama=0.2)
    with pytest.raises(GsauError, match="unknown model 'gsau-recc'"):
        gsau.Model("gsau-recc")


def test_a_missing_extra_is_one_line_naming_the_install(loaded, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with pytest.raises(GsauError, match=r"Model.recommend needs pandas \(not installed\): pip install 'gsau\[pandas\]'"):
        loaded.recommend("u1")


def test_a_dataframe_is_read_as_the_same_parquet_file(tmp_path):
    pytest.importorskip("pyarrow")
    frame = as_frame(tiny_data())
    frame.to_parquet(tmp_path / "events.parquet")  # read by gsau's Parquet reader, not through pandas
    a = build(frame_interactions(frame), "events", "x")
    b = load_dataset(tmp_path / "events.parquet")
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("user_ids", "item_ids", "indptr", "items"))
