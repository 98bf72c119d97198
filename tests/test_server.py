"""`gsau serve` over real HTTP: a subprocess on a loopback port, queried with httpx. Its answers
equal `gsau recommend` and the Python API; malformed requests are 4xx and the server stays up;
concurrent requests are scored in shared batches."""

import asyncio
import json
import socket

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
pytest.importorskip("pandas")

from app_runs import ENV, tiny_run  # noqa: E402

import gsau  # noqa: E402
from gsau.cli import main  # noqa: E402
from gsau.errors import GsauError  # noqa: E402
from gsau.server import spawn  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    run = tiny_run(tmp_path_factory)
    proc, url = spawn(run, env=ENV)
    with httpx.Client(base_url=url, timeout=30) as client:
        yield run, client, proc
    proc.terminate()
    proc.wait(timeout=30)


def cli_recommend(capsys, run, user, k, exclude_seen=False) -> list[tuple[str, float]]:
    """What `gsau recommend` prints (run in this process: the same command, without a second
    interpreter's start-up)."""
    capsys.readouterr()
    assert main(["recommend", str(run), "--user", user, "-k", str(k), *(["--exclude-seen"] if exclude_seen else [])]) == 0
    out = capsys.readouterr().out
    return [(item, float(score)) for _, item, score in (line.split("\t") for line in out.splitlines())]


def pairs(listing: list[dict]) -> list[tuple[str, float]]:
    assert [e["rank"] for e in listing] == list(range(1, len(listing) + 1))
    return [(e["item"], e["score"]) for e in listing]


def same(http: list[tuple[str, float]], cli: list[tuple[str, float]]) -> bool:
    """The same items in the same order, scores equal to the CLI's 4 printed decimals."""
    return [i for i, _ in http] == [i for i, _ in cli] and all(abs(a - b) <= 6e-5 for (_, a), (_, b) in zip(http, cli))


def test_answers_equal_gsau_recommend(server, capsys):
    run, client, _ = server
    users = ["u0", "u11", "u42"]
    batch = client.post("/recommendations", json={"users": users, "k": 7}).json()["recommendations"]
    assert [r["user"] for r in batch] == users
    for user, answer in zip(users, batch):
        cli = cli_recommend(capsys, run, user, 7)
        assert same(pairs(answer["items"]), cli)
        one = client.get(f"/users/{user}/recommendations", params={"k": 7}).json()
        assert same(pairs(one["items"]), cli)
    unseen = client.get("/users/u5/recommendations", params={"k": 5, "exclude_seen": "true"}).json()
    assert same(pairs(unseen["items"]), cli_recommend(capsys, run, "u5", 5, exclude_seen=True))


def test_a_history_gives_the_python_apis_top_k(server):
    run, client, _ = server
    model = gsau.Model.load(run)
    history = ["sku-131", "sku-132", "sku-133", "sku-134"]
    answer = client.post("/recommendations", json={"items": history, "k": 10}).json()
    want = model.recommend_sequence(history, k=10)
    got = answer["recommendations"][0]["items"]
    assert [e["item"] for e in got] == want["item"].tolist()
    assert np.allclose([e["score"] for e in got], want["score"], atol=1e-5)
    reported = client.post("/recommendations", json={"items": history + ["nope"], "k": 10, "unknown_items": "report"})
    assert reported.json()["unknown_items"] == ["nope"] and reported.json()["recommendations"][0]["items"] == got
    similar = client.get("/items/sku-131/similar", params={"k": 5}).json()
    assert [e["item"] for e in similar["items"]] == model.similar_items("sku-131", k=5)["similar"].tolist()


@pytest.mark.parametrize("method, path, body, status, says", [
    ("POST", "/recommendations", b'{"users": ["u0"', 422, "JSON decode error"),                  # bad JSON
    ("POST", "/recommendations", {"users": ["u0", "ghost"]}, 404, "unknown user 'ghost'"),
    ("GET", "/users/ghost/recommendations", None, 404, "unknown user 'ghost'"),
    ("POST", "/recommendations", {"users": ["u0"], "k": 0}, 422, '"k"'),                        # k <= 0
    ("GET", "/users/u0/recommendations?k=-3", None, 422, '"k"'),
    ("POST", "/recommendations", {"users": ["u0"], "k": 10**12}, 422, '"k"'),                   # huge k
    ("POST", "/recommendations", b'{"users": ["' + b"x" * (1 << 20) + b'"]}', 413, "over the limit of 65536 bytes"),  # 1 MB
    ("POST", "/recommendations", {"users": "u0"}, 422, '"users"'),                              # wrong types
    ("POST", "/recommendations", {"users": ["u0"], "k": "10"}, 422, '"k"'),
    ("POST", "/recommendations", {"users": [1.5]}, 422, '"users"'),
    ("POST", "/recommendations", {"users": ["u0"], "exclude_seen": "maybe"}, 422, '"exclude_seen"'),
    ("POST", "/recommendations", {"users": ["u0"], "colour": "red"}, 422, '"colour"'),
    ("POST", "/recommendations", {"users": ["u0"], "items": ["sku-101"]}, 422, "either users"),
    ("POST", "/recommendations", {"items": ["sku-101", "zz"], "unknown_items": "error"}, 404, "unknown item 'zz'"),
    ("POST", "/recommendations", {"items": ["zz"]}, 404, "unknown item 'zz'"),
    ("GET", "/items/zz/similar", None, 404, "unknown item 'zz'"),
])
def test_malformed_requests_are_4xx_and_the_server_stays_up(server, method, path, body, status, says):
    _, client, proc = server
    content = body if isinstance(body, bytes) else None
    payload = body if isinstance(body, dict) else None
    response = client.request(method, path, json=payload, content=content,
                              headers={"content-type": "application/json"} if content else None)
    assert response.status_code == status, response.text
    assert says in response.text
    assert proc.poll() is None and client.get("/health").status_code == 200


def test_k_is_capped_by_the_catalogue_and_unknown_users_may_fall_back(server):
    _, client, _ = server
    everything = client.get("/users/u0/recommendations", params={"k": 1000}).json()["items"]
    assert len(everything) == 60 and len({e["item"] for e in everything}) == 60
    mixed = client.post("/recommendations", json={"users": ["ghost", "u0"], "k": 3, "fallback": "popular"}).json()
    ghost, known = mixed["recommendations"]
    assert ghost["fallback"] == "popular" and "fallback" not in known
    assert pairs(known["items"]) == pairs(everything[:3])


def test_model_describes_the_run(server):
    run, client, _ = server
    info = client.get("/model").json()
    metrics = json.loads((run / "metrics.json").read_text())
    assert (info["preset"], info["users"], info["items"]) == ("gsau-rec", 80, 60)
    assert info["metrics"]["test"] == metrics["test"] and info["config"] == metrics["config"]
    assert client.get("/docs").status_code == 200 and "/recommendations" in client.get("/openapi.json").text


def test_concurrent_requests_are_scored_in_shared_batches(server):
    run, client, _ = server
    before = client.get("/model").json()["served"]
    users = [f"u{n}" for n in range(40)]

    async def burst():
        async with httpx.AsyncClient(base_url=str(client.base_url), timeout=30) as aclient:
            return await asyncio.gather(*(aclient.get(f"/users/{u}/recommendations", params={"k": 5}) for u in users))
    answers = asyncio.run(burst())
    after = client.get("/model").json()["served"]
    assert after["requests_scored"] - before["requests_scored"] == len(users)
    assert after["batches"] - before["batches"] < len(users)  # some requests shared a forward pass
    model = gsau.Model.load(run)
    want = model.recommend(users, k=5)
    for user, answer in zip(users, answers):
        assert [e["item"] for e in answer.json()["items"]] == want[want.user == user]["item"].tolist()


def test_serve_refuses_what_is_not_a_finished_run(tmp_path_factory, tmp_path, capsys):
    run = tiny_run(tmp_path_factory)
    for name in ("config.yaml", "data.json", "best.pt", "last.pt"):
        (tmp_path / name).write_bytes((run / name).read_bytes())
    with pytest.raises(GsauError, match=f"gsau serve {tmp_path} did not start: gsau: error: .*not a finished run"):
        spawn(tmp_path, env=ENV)  # the child's one line, passed on
    assert main(["serve", str(tmp_path), "--port", "0"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"gsau: error: {tmp_path}: not a finished run (no metrics.json: still "
                                                f"training, stopped or failed); finish it with `gsau train --resume {tmp_path}`"]


def test_a_graph_scored_run_answers_users_and_refuses_histories(tmp_path_factory):
    from fastapi.testclient import TestClient
    from gsau.server import create_app
    with TestClient(create_app(tiny_run(tmp_path_factory, "lightgcn"))) as client:
        assert len(client.get("/users/u3/recommendations", params={"k": 4}).json()["items"]) == 4
        refused = client.post("/recommendations", json={"items": ["sku-101"]})
        assert refused.status_code == 400 and "ranks with its graph encoder" in refused.json()["detail"]


def test_the_micro_batcher_scores_mixed_jobs_as_alone(tmp_path_factory):
    from gsau.server import Job, MicroBatcher
    from gsau.serving import Recommendations
    recs = Recommendations.from_run(tiny_run(tmp_path_factory))
    batcher = MicroBatcher(recs)
    history = recs.item_indices(["sku-101", "sku-102"])[0]
    everything = recs.n_items
    jobs = [Job("users", [1, 2], 3), Job("history", [history], everything, True), Job("users", [5], 2, True),
            Job("similar", [7], 3)]
    together = batcher.score(jobs)
    alone = [batcher.score([job])[0] for job in jobs]
    for a, b in zip(together, alone):
        assert [r.items.tolist() for r in a] == [r.items.tolist() for r in b]
    assert [len(r.items) for r in together[0]] == [3, 3] and len(together[2][0].items) == 2
    assert set(together[1][0].items.tolist()) == set(range(1, everything + 1)) - set(history.tolist())


def test_the_listening_socket_sends_without_delay():
    from gsau.server import listen
    sock = listen("127.0.0.1", 0)
    try:  # accepted connections inherit it; without it each keep-alive answer waits 40 ms for an ACK
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        sock.close()


def test_serve_refuses_a_device_the_machine_lacks(tmp_path_factory):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(GsauError, match="did not start: .*device cuda: no CUDA device is available"):
        spawn(tiny_run(tmp_path_factory), "--device", "cuda", env=ENV)


def test_a_chunked_body_past_the_limit_is_413(server):
    _, client, proc = server
    chunks = (b'{"users": ["' if n == 0 else b"x" * 4096 for n in range(64))  # no Content-Length: 256 KB streamed
    response = client.post("/recommendations", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert proc.poll() is None and client.get("/health").status_code == 200


def test_stored_user_vectors_rank_as_the_encoder(tmp_path_factory):
    from gsau.serving import Recommendations
    for preset in ("gsau-rec", "lightgcn"):
        recs = Recommendations.from_run(tiny_run(tmp_path_factory, preset))
        users = np.arange(1, recs.data.n_users + 1)
        encoder = recs.scores(users)
        recs.store_user_vectors()  # what the server does at start-up
        stored = recs.scores(users)
        assert np.allclose(stored[:, 1:].numpy(), encoder[:, 1:].numpy(), atol=1e-5)
        assert recs._stored is not None
