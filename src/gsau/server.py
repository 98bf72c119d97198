"""`gsau serve RUN_DIR`: a trained run behind HTTP, on FastAPI and uvicorn (the `serve` extra).

    POST /recommendations              {"users": [...]} or {"items": [...]} (a visitor's history), k, ...
    GET  /users/{id}/recommendations   ?k=10&exclude_seen=false&fallback=popular
    GET  /items/{id}/similar           ?k=10
    GET  /health, GET /model           liveness; preset, dataset, metrics, config
    GET  /docs                         the OpenAPI documentation

The run is loaded once, before the port opens. Requests are validated by pydantic (a 422 names the
field), bodies are bounded (a 413 naming the limit), unknown ids are a 404 naming them. Scoring runs in one worker
thread, off the event loop, and concurrent requests are scored together: those that arrive while a
batch is being scored form the next batch (optionally waiting `max_wait_ms` for more), so a loaded
server makes one scoring pass per batch rather than per request. Known users are scored from
vectors computed once at start-up (`Recommendations.store_user_vectors`).
"""

from __future__ import annotations

import asyncio
import gc
import re
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Union

import numpy as np

from gsau.errors import GsauError
from gsau.extras import need

need("fastapi", "serve", "gsau serve")

from fastapi import FastAPI, Path as PathParam, Query, Request  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator  # noqa: E402

from gsau.serving import Ranked, Recommendations, UnknownIds  # noqa: E402

MAX_K = 1000  # per request; within it, k is capped by the catalogue
MAX_USERS = 1000  # users per request
MAX_HISTORY = 1000  # items per history (the encoder reads only its latest max_len)
MAX_BODY = 64 * 1024  # bytes; a full request of MAX_USERS long ids fits

Id = Union[StrictStr, StrictInt]  # ids as text; whole numbers are accepted as the text they print as


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    users: list[Id] | None = Field(None, min_length=1, max_length=MAX_USERS,
                                   description="known user ids (or give items)")
    items: list[Id] | None = Field(None, min_length=1, max_length=MAX_HISTORY,
                                   description="a visitor's history of item ids, oldest first (or give users)")
    k: StrictInt = Field(10, ge=1, le=MAX_K, description="items per list (capped by the catalogue)")
    exclude_seen: StrictBool = Field(False, description="leave out the user's (or the history's) items")
    unknown_items: Literal["skip", "error", "report"] = Field(
        "skip", description="unknown ids in items: left out, a 404, or left out and listed in the answer")
    fallback: Literal["popular"] | None = Field(None, description="popular items for unknown users instead of a 404")

    @model_validator(mode="after")
    def _one_input(self):
        if (self.users is None) == (self.items is None):
            raise ValueError("give either users (known user ids) or items (a history of item ids), not both or neither")
        return self


class Scored(BaseModel):
    item: str
    score: float
    rank: int


class RecommendationList(BaseModel):
    user: str | None = None
    items: list[Scored]
    fallback: str | None = None  # "popular" when the user was unknown and the caller asked for it


class RecommendResponse(BaseModel):
    recommendations: list[RecommendationList]
    unknown_items: list[str] | None = None


class SimilarResponse(BaseModel):
    item: str
    items: list[Scored]


@dataclass
class Job:
    """One request's scoring work: rows of one kind, scored in a batch with other requests'."""

    kind: Literal["users", "history", "similar"]
    rows: list  # internal user ids, histories (arrays of internal item ids) or internal item ids
    k: int
    exclude_seen: bool = False


class MicroBatcher:
    """Scores the jobs of concurrent requests together in one worker thread.

    Jobs that arrive while a batch is being scored are taken together next (up to `max_rows`
    rows), so batches grow with the load and an idle server answers at once; with `max_wait` > 0
    a batch also waits that long for more. Each kind of job in a batch is one call of the batched
    scorer (Recommendations.recommend / recommend_histories / similar)."""

    def __init__(self, recs: Recommendations, max_rows: int = 64, max_wait: float = 0.0):
        self.recs, self.max_rows, self.max_wait = recs, max_rows, max_wait
        self.batches = self.jobs = 0  # served so far, for /model and the load test

    async def start(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="gsau-score")
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        self.task.cancel()
        self.executor.shutdown(wait=True)

    async def submit(self, job: Job) -> list[Ranked]:
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((job, future))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            self._take_waiting(batch)
            if self.max_wait > 0 and self._rows(batch) < self.max_rows:
                await asyncio.sleep(self.max_wait)  # one timer per batch, not one per request
                self._take_waiting(batch)
            results = await loop.run_in_executor(self.executor, self.score, [job for job, _ in batch])
            self.batches, self.jobs = self.batches + 1, self.jobs + len(batch)
            for (_, future), result in zip(batch, results):
                if future.done():  # the client went away
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    @staticmethod
    def _rows(batch: list) -> int:
        return sum(len(job.rows) for job, _ in batch)

    def _take_waiting(self, batch: list) -> None:
        """Add the queued jobs to `batch` while it has fewer than max_rows rows."""
        while self._rows(batch) < self.max_rows and not self.queue.empty():
            batch.append(self.queue.get_nowait())

    def score(self, jobs: list[Job]) -> list:
        """Each job's rankings (or the exception its kind raised), one scorer call per kind."""
        results: list = [None] * len(jobs)
        recs = self.recs
        scorers = {"users": recs.recommend, "history": recs.recommend_histories,
                   "similar": lambda rows, ks, _seen: recs.similar(np.asarray(rows), ks)}
        for kind, scorer in scorers.items():
            mine = [n for n, job in enumerate(jobs) if job.kind == kind]
            if not mine:
                continue
            rows = [row for n in mine for row in jobs[n].rows]
            ks = [jobs[n].k for n in mine for _ in jobs[n].rows]
            seen = [jobs[n].exclude_seen for n in mine for _ in jobs[n].rows]
            try:
                ranked = scorer(np.asarray(rows) if kind != "history" else rows, ks, seen)
            except Exception as e:  # noqa: BLE001 (handed to the requests of this kind, the server stays up)
                ranked = None
                for n in mine:
                    results[n] = e
            if ranked is not None:
                start = 0
                for n in mine:
                    results[n] = ranked[start:start + len(jobs[n].rows)]
                    start += len(jobs[n].rows)
        return results


class AnnouncedBodyLimit:
    """A body whose Content-Length is over the limit: a JSON 413 that names both sizes, like every
    other error here, before any of it is read. (FastAPI's max_body_size still stops a chunked body
    that grows past the limit, with its own plain-text 413.)"""

    def __init__(self, app, max_body: int):
        self.app, self.max_body = app, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length", b"")
            if length.isdigit() and int(length) > self.max_body:
                detail = f"request body of {int(length)} bytes is over the limit of {self.max_body} bytes"
                await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _listing(recs: Recommendations, ranked: Ranked) -> list[dict]:
    ids = recs.item_ids(ranked.items)
    return [{"item": i, "score": float(s), "rank": r} for r, (i, s) in enumerate(zip(ids, ranked.scores.tolist()), start=1)]


def model_info(recs: Recommendations, run_dir: Path) -> dict:
    import json
    report = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    return {"run": str(run_dir), "preset": recs.cfg.preset, "dataset": recs.cfg.data.dataset,
            "users": recs.data.n_users, "items": recs.data.n_items, "scorer": recs.cfg.net.scorer,
            "takes_histories": recs.takes_histories, "best_epoch": report.get("best_epoch"),
            "metrics": {"valid": report.get("valid"), "test": report.get("test")}, "config": recs.cfg.to_dict(),
            "limits": {"max_k": MAX_K, "max_users": MAX_USERS, "max_history": MAX_HISTORY, "max_body_bytes": MAX_BODY}}


def create_app(run_dir: str | Path, max_batch: int = 64, max_wait_ms: float = 0.0, max_body: int = MAX_BODY,
               device: str | None = None) -> FastAPI:
    """The application for a finished run directory (loaded here, once, on `device`)."""
    run_dir = Path(run_dir)
    recs = Recommendations.from_run(run_dir, finished=True, device=device)
    recs.store_user_vectors()
    info = model_info(recs, run_dir)
    batcher = MicroBatcher(recs, max_batch, max_wait_ms / 1000)

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    # max_body_size: a body over it is a 413 ("Content Too Large"; the limit is in GET /model),
    # whether Content-Length announces it or a chunked body grows past it.
    app = FastAPI(title="gsau", version=__import__("gsau").__version__, lifespan=lifespan, max_body_size=max_body,
                  description=f"Recommendations from {recs.cfg.preset} trained on {recs.cfg.data.dataset}.")
    app.state.recs, app.state.batcher, app.state.max_body = recs, batcher, max_body

    @app.exception_handler(UnknownIds)
    async def unknown(request: Request, e: UnknownIds):
        return JSONResponse({"detail": str(e), "unknown": e.ids}, status_code=404)

    @app.exception_handler(GsauError)
    async def refused(request: Request, e: GsauError):
        return JSONResponse({"detail": str(e)}, status_code=400)

    async def for_users(users: list[str], k: int, exclude_seen: bool, fallback: str | None) -> list[dict]:
        internal = recs.user_indices(users, fallback)
        known = internal[internal > 0]
        ranked = iter(await batcher.submit(Job("users", known.tolist(), k, exclude_seen)) if len(known) else [])
        return [{"user": u, "items": _listing(recs, next(ranked))} if i
                else {"user": u, "items": _listing(recs, recs.popular(k)), "fallback": "popular"}
                for u, i in zip(users, internal)]

    @app.post("/recommendations", response_model=RecommendResponse, response_model_exclude_none=True)
    async def recommendations(body: RecommendRequest):
        """Top-k for known users, or for a history of items with no user (a visitor)."""
        if body.users is not None:
            return {"recommendations": await for_users([str(u) for u in body.users], body.k, body.exclude_seen, body.fallback)}
        history, missing = recs.history([str(i) for i in body.items], body.unknown_items)
        ranked = (await batcher.submit(Job("history", [history], body.k, body.exclude_seen)))[0]
        answer = {"recommendations": [{"items": _listing(recs, ranked)}]}
        if body.unknown_items == "report":
            answer["unknown_items"] = missing
        return answer

    @app.get("/users/{user_id}/recommendations", response_model=RecommendationList, response_model_exclude_none=True)
    async def user_recommendations(user_id: Annotated[str, PathParam(max_length=256)],
                                   k: Annotated[int, Query(ge=1, le=MAX_K)] = 10, exclude_seen: bool = False,
                                   fallback: Literal["popular"] | None = None):
        """Top-k for one known user (404 when unknown, unless fallback=popular)."""
        return (await for_users([user_id], k, exclude_seen, fallback))[0]

    @app.get("/items/{item_id}/similar", response_model=SimilarResponse)
    async def similar(item_id: Annotated[str, PathParam(max_length=256)], k: Annotated[int, Query(ge=1, le=MAX_K)] = 10):
        """The k items most similar to one item (cosine of the embeddings the model ranks with)."""
        known, missing = recs.item_indices([item_id])
        if missing:
            raise UnknownIds("item", missing, recs.data.name)
        ranked = (await batcher.submit(Job("similar", [int(known[0])], k)))[0]
        return {"item": item_id, "items": _listing(recs, ranked)}

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/model")
    async def model():
        """The run: preset, dataset, sizes, validation and test metrics, the full config, limits."""
        return {**info, "served": {"requests_scored": batcher.jobs, "batches": batcher.batches}}

    return app


def listen(host: str, port: int) -> socket.socket:
    """A bound socket, or a one-line error (a port in use, an address not on this machine)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Inherited by every accepted connection. Without it an answer written in two parts (headers,
    # body) waits for the client's delayed ACK: 40 ms per keep-alive request on Linux, whatever the
    # model. uvicorn sets it itself only on sockets it opens.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise GsauError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    return sock


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, max_batch: int = 64,
          max_wait_ms: float = 0.0, log_level: str = "warning", device: str | None = None) -> None:
    """Load the run, open the port, and serve until interrupted."""
    uvicorn = need("uvicorn", "serve", "gsau serve")
    app = create_app(run_dir, max_batch, max_wait_ms, device=device)
    sock = listen(host, port)
    bound = sock.getsockname()[1]
    recs = app.state.recs
    print(f"serving {run_dir} ({recs.cfg.preset} on {recs.cfg.data.dataset}: {recs.data.n_users} users, "
          f"{recs.data.n_items} items, scored on {recs.device}) at http://{host}:{bound} (API docs: http://{host}:{bound}/docs)", flush=True)
    # Everything alive now (torch, the run, the id maps, FastAPI's models: a few hundred thousand
    # objects) lives as long as the server. Without freezing, each full collection walks all of
    # it: a 100-130 ms pause that stalls every request in flight (the load test's p99).
    gc.collect()
    gc.freeze()
    # Outside FastAPI's own limit, which would answer an announced oversize body in plain text.
    config = uvicorn.Config(AnnouncedBodyLimit(app, app.state.max_body), log_level=log_level, access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
    sys.stdout.flush()


def spawn(run_dir: str | Path, *options, env: dict | None = None, timeout: float = 300.0):
    """`gsau serve RUN_DIR --port 0 OPTIONS` in a child process, for a notebook, an integration
    test or a load test: (the process, its base URL) once GET /health answers. A server that does
    not start is a one-line error with its own last line; stop it with process.terminate()."""
    import urllib.request
    errors = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty server never blocks on it
    proc = subprocess.Popen([sys.executable, "-m", "gsau.cli", "serve", str(run_dir), "--port", "0", *map(str, options)],
                            stdout=subprocess.PIPE, stderr=errors, text=True, env=env)

    def failed(why: str):
        proc.kill()
        proc.wait()
        errors.seek(0)
        last = (errors.read().strip().splitlines() or [why])[-1]
        return GsauError(f"gsau serve {run_dir} did not start: {last}")
    line = proc.stdout.readline()  # the "serving ... at URL" line, printed once the run is loaded
    match = re.search(r" at (http://\S+?:\d+) ", line)
    if not match:
        raise failed("no address printed")
    url, deadline = match.group(1), time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url + "/health", timeout=5):
                return proc, url
        except OSError:
            time.sleep(0.1)
    raise failed(f"no answer from {url}/health in {timeout:g} s")
