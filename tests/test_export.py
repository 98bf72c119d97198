"""`gsau export`: the exported vectors score as the model does; the ONNX encoder ranks a visitor's
history as torch does (onnxruntime); an exact faiss index ranks every user as gsau does."""

import json

import numpy as np
import pytest

from app_runs import tiny_run

from gsau.cli import main
from gsau.errors import GsauError
from gsau.export import export, same_ranking
from gsau.serving import Recommendations


@pytest.fixture(scope="module")
def gsau_rec(tmp_path_factory):
    run = tiny_run(tmp_path_factory)
    return run, Recommendations.from_run(run)


def all_scores(recs):
    scores = recs.scores(np.arange(1, recs.data.n_users + 1)).numpy()
    return scores[:, 1:]  # column 0 is padding


@pytest.mark.parametrize("preset", ["gsau-rec", "lightgcn", "bert4rec"])
def test_exported_vectors_score_as_the_model(tmp_path_factory, tmp_path, preset):
    # sequence scorer with normalised queries; graph scorer; sequence scorer with an output bias
    run = tiny_run(tmp_path_factory, preset)
    recs = Recommendations.from_run(run)
    manifest = export(run, tmp_path / "out")
    z = np.load(tmp_path / "out" / "embeddings.npz")
    assert z["user_ids"].tolist() == recs.data.user_ids.tolist() and z["item_ids"].tolist() == recs.data.item_ids.tolist()
    assert np.allclose(z["user_vectors"] @ z["item_vectors"].T, all_scores(recs), atol=1e-5)
    assert manifest["dim"] == z["item_vectors"].shape[1] == 16 + (preset == "bert4rec")
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest


def test_parquet_holds_the_same_vectors(gsau_rec, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    run, recs = gsau_rec
    export(run, tmp_path / "npz")
    export(run, tmp_path / "pq", fmt="parquet")
    z = np.load(tmp_path / "npz" / "embeddings.npz")
    items = pq.read_table(tmp_path / "pq" / "items.parquet")
    users = pq.read_table(tmp_path / "pq" / "users.parquet")
    assert items.column("item").to_pylist() == z["item_ids"].tolist()
    assert np.array_equal(np.stack(items.column("vector").to_numpy(zero_copy_only=False)), z["item_vectors"])
    assert np.array_equal(np.stack(users.column("vector").to_numpy(zero_copy_only=False)), z["user_vectors"])


def test_onnx_ranks_users_and_a_visitor_as_torch(gsau_rec, tmp_path, capsys):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    run, recs = gsau_rec
    assert main(["export", str(run), "--out", str(tmp_path), "--onnx", "--check-users", "80"]) == 0
    assert "onnxruntime's top-10 equals torch's for 80 of 80 users" in capsys.readouterr().out
    session = ort.InferenceSession(str(tmp_path / "sequence_encoder.onnx"), providers=["CPUExecutionProvider"])
    width = json.loads((tmp_path / "manifest.json").read_text())["onnx"]["input_width"]
    # Every user (the checks above, repeated here independently of the exporter's own check)...
    users = np.arange(1, recs.data.n_users + 1)
    seqs, lengths = recs.windows(users, width)
    scores, query = session.run(["scores", "query"], {"items": seqs, "lengths": lengths})
    reference = all_scores(recs)
    own = recs.recommend(users, 10)
    for n in range(len(users)):
        assert same_ranking(np.argsort(-scores[n, 1:], kind="stable")[:10] + 1, own[n].items, np.r_[0, reference[n]])
    assert np.allclose(query @ recs.item_vectors().numpy()[1:].T, reference, atol=1e-5)
    # ...and a visitor's history of item ids, which no user has.
    history, _ = recs.history(["sku-120", "sku-121", "sku-150", "sku-151", "sku-152"])
    row = np.zeros((1, width), dtype=np.int64)
    row[0, :len(history)] = history
    visitor = session.run(["scores"], {"items": row, "lengths": np.array([len(history)])})[0][0]
    torch_side = recs.recommend_histories([history], 10)[0]
    visitor[0] = -np.inf
    assert np.argsort(-visitor, kind="stable")[:10].tolist() == torch_side.items.tolist()


@pytest.mark.parametrize("preset", ["gsau-rec", "lightgcn"])
def test_an_exact_faiss_index_ranks_every_user_as_gsau(tmp_path_factory, tmp_path, preset):
    faiss = pytest.importorskip("faiss")
    run = tiny_run(tmp_path_factory, preset)
    recs = Recommendations.from_run(run)
    manifest = export(run, tmp_path, faiss="flat", n_check=40)
    assert manifest["faiss"]["same_top10"] == 40
    index = faiss.read_index(str(tmp_path / "items.faiss"))
    z = np.load(tmp_path / "embeddings.npz")
    _, found = index.search(np.ascontiguousarray(z["user_vectors"]), 10)
    reference = all_scores(recs)
    own = recs.recommend(np.arange(1, recs.data.n_users + 1), 10)
    assert all(same_ranking(found[n] + 1, own[n].items, np.r_[0, reference[n]]) for n in range(len(own)))


def test_hnsw_reports_its_recall_of_the_exact_ranking(gsau_rec, tmp_path):
    pytest.importorskip("faiss")
    run, _ = gsau_rec
    manifest = export(run, tmp_path, faiss="hnsw", n_check=40)
    assert 0.9 <= manifest["faiss"]["recall@10_of_exact"] <= 1.0  # 60 items: HNSW finds them all or nearly


def test_same_ranking_tolerates_ties_only():
    scores = np.array([0.0, 0.9, 0.5, 0.5, 0.1])
    assert same_ranking(np.array([1, 2, 3]), np.array([1, 3, 2]), scores)  # items 2 and 3 tie
    assert not same_ranking(np.array([1, 2, 4]), np.array([1, 2, 3]), scores)
    assert not same_ranking(np.array([2, 1]), np.array([1, 2]), scores)


def test_export_refusals_are_one_line(gsau_rec, tmp_path_factory, tmp_path):
    run, _ = gsau_rec
    export(run, tmp_path / "once")
    with pytest.raises(GsauError, match="already holds an export"):
        export(run, tmp_path / "once")
    with pytest.raises(GsauError, match="ranks with its graph encoder"):
        pytest.importorskip("onnxscript")
        export(tiny_run(tmp_path_factory, "lightgcn"), tmp_path / "graph", onnx=True)
    (tmp_path / "stopped").mkdir()
    (tmp_path / "stopped" / "config.yaml").write_bytes((run / "config.yaml").read_bytes())
    with pytest.raises(GsauError, match="not a finished run"):
        export(tmp_path / "stopped", tmp_path / "x")
