"""`gsau export RUN_DIR --out DIR`: a trained run's embeddings, its sequence encoder as ONNX, and an
item index for faiss, each checked against gsau's own ranking before it is reported written.

The embeddings are those the scorer ranks with, as an inner product: a user's scores are
user_vector . item_vector over every item. For a graph scorer (LightGCN, DirectAU) they are the
final propagated user and item embeddings; for a sequence scorer they are the representation of the
user's whole known history (L2-normalised for GSAU (rec), as it is scored) and the shared item
table, with BERT4Rec's output bias as one extra item column met by a 1 in every user vector. A
visitor's history is turned into a user vector by the ONNX encoder, whose `query` output goes
straight to the faiss index.

    DIR/manifest.json        what each file holds, how to score, the checks and their outcome
    DIR/embeddings.npz       user_ids, user_vectors, item_ids, item_vectors   (--format npz)
    DIR/users.parquet, DIR/items.parquet   id and vector columns              (--format parquet)
    DIR/sequence_encoder.onnx  inputs items [B, W] (left-aligned, 0-padded), lengths [B];
                               outputs scores [B, I + 1] (column 0: padding) and query [B, d']
    DIR/items.faiss          IndexFlatIP (exact) or IndexHNSWFlat (approximate), row n = item_ids[n]
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gsau import checkpoint
from gsau.errors import GsauError
from gsau.extras import need
from gsau.serving import Recommendations

FORMATS = ("npz", "parquet")
INDEXES = ("flat", "hnsw")
CHECK_K = 10


def same_ranking(got: np.ndarray, want: np.ndarray, scores: np.ndarray) -> bool:
    """Whether two top-k lists are the same ranking under reference `scores` (all items of the
    row): item for item, except where tied items (equal scores up to float rounding) swap places."""
    if len(got) != len(want):
        return False
    tol = 1e-5 * max(1.0, float(np.abs(scores).max()))
    return bool(np.all(np.abs(scores[got] - scores[want]) <= tol))


def ranking_agreement(found: np.ndarray, recs: Recommendations, users: np.ndarray) -> int:
    """How many users' top-k rows `found` (internal item ids) equal gsau's own ranking."""
    reference = recs.scores(users).cpu().numpy()
    own = recs.recommend(users, found.shape[1])
    return sum(same_ranking(found[n], own[n].items, reference[n]) for n in range(len(users)))


class SequenceScorer(nn.Module):
    """What `Recommendations.history_scores` computes for left-aligned windows, as one module for
    the ONNX exporter: (items, lengths) -> (scores over every item, query vector)."""

    def __init__(self, recs: Recommendations):
        super().__init__()
        self.recs = recs
        self.model = recs.model
        self.register_buffer("item_vectors", recs.item_vectors().detach().clone())

    def forward(self, items: torch.Tensor, lengths: torch.Tensor):
        m = self.model
        query = self.recs.as_query(m.sequence(m.item_table.weight, items, lengths))
        return query @ self.item_vectors.T, query


def check_users(recs: Recommendations, n: int, seed: int = 0) -> np.ndarray:
    """Up to n users to check exports on: a random sample plus the longest histories (the windows
    that fill the encoder's whole width)."""
    by_length = np.argsort(-recs.data.lengths, kind="stable") + 1
    n = min(n, len(by_length))
    longest, rest = by_length[: max(1, n // 8)], by_length[max(1, n // 8):]
    sample = np.random.default_rng(seed).choice(rest, size=min(n - len(longest), len(rest)), replace=False)
    return np.sort(np.concatenate([longest, sample]))


def write_vectors(out: Path, fmt: str, user_ids, users: np.ndarray, item_ids, items: np.ndarray) -> list[str]:
    if fmt == "npz":
        checkpoint._written(out / "embeddings.npz", lambda f: np.savez(
            f, user_ids=np.asarray(user_ids, dtype=str), user_vectors=users,
            item_ids=np.asarray(item_ids, dtype=str), item_vectors=items))
        return ["embeddings.npz"]
    pa = need("pyarrow", "parquet", "--format parquet")
    pq = need("pyarrow.parquet", "parquet", "--format parquet")
    written = []
    for name, key, ids, vectors in (("users.parquet", "user", user_ids, users), ("items.parquet", "item", item_ids, items)):
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[1])
        table = pa.table({key: pa.array(np.asarray(ids, dtype=str).tolist(), pa.string()), "vector": column})
        checkpoint._written(out / name, lambda f, t=table: pq.write_table(t, f))
        written.append(name)
    return written


def onnx_ready(recs: Recommendations):
    """onnxruntime, once the ONNX libraries are there and the run has a sequence encoder to export."""
    need("onnx", "onnx", "--onnx")
    need("onnxscript", "onnx", "--onnx")  # torch's ONNX exporter (torch.export based) writes through it
    ort = need("onnxruntime", "onnx", "--onnx")
    if not recs.takes_histories:
        raise GsauError(f"--onnx exports a sequence encoder; {recs.cfg.preset} ranks with its graph encoder "
                        "(scorer=graph), whose user and item embeddings are the whole model: export those alone")
    return ort


def export_onnx(recs: Recommendations, path: Path, users: np.ndarray) -> dict:
    """Write the sequence encoder and scorer as ONNX and check it with onnxruntime on `users`'
    real histories: the same top-k as torch for every one, or an error."""
    ort = onnx_ready(recs)
    m = recs.model
    width = m.history_cap + int(m.sequence.needs_free_slot)
    scorer = SequenceScorer(recs).eval()
    example = tuple(torch.from_numpy(a) for a in recs.windows(users[:2], width))
    batch = torch.export.Dim("batch", min=1)
    # The exporter's notes on its own internals (skipped torchvision ops, attribute defaults).
    quiet = [logging.getLogger(name) for name in ("torch.onnx", "onnx_ir", "onnxscript")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # strict: traced by dynamo, which keeps the batch size symbolic where the encoders
            # take len() of a tensor (non-strict tracing fixes it at the example's).
            program = torch.export.export(scorer, example, dynamic_shapes={"items": {0: batch}, "lengths": {0: batch}},
                                          strict=True)
            onnx_program = torch.onnx.export(program, example, dynamo=True, input_names=["items", "lengths"],
                                             output_names=["scores", "query"], optimize=True, verbose=False)
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    checkpoint._written(path, lambda f: f.write(onnx_program.model_proto.SerializeToString()))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    seqs, lengths = recs.windows(users, width)
    scores = session.run(["scores"], {"items": seqs, "lengths": lengths})[0]
    reference = recs.scores(users).cpu().numpy()
    scores[:, 0] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :CHECK_K]
    agree = ranking_agreement(top, recs, users)
    diff = float(np.abs(scores[:, 1:] - reference[:, 1:]).max())
    if agree < len(users):
        raise GsauError(f"{path}: onnxruntime's top-{CHECK_K} differs from torch's for {len(users) - agree} of "
                        f"{len(users)} users (max score difference {diff:.2g}); the file is not usable")
    return {"file": path.name, "input_width": width, "checked_users": len(users), f"same_top{CHECK_K}": agree,
            "max_abs_score_diff": diff}


def export_faiss(items: np.ndarray, path: Path, kind: str, recs: Recommendations, users: np.ndarray) -> dict:
    """An inner-product index over the item vectors: exact (flat; its top-k must equal gsau's for
    every checked user, or an error) or HNSW (approximate; its recall of the exact top-k is reported)."""
    faiss = need("faiss", "ann", "--faiss")
    dim = items.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction, index.hnsw.efSearch = 200, 128
    index.add(np.ascontiguousarray(items, dtype=np.float32))
    checkpoint._written(path, lambda f: f.write(faiss.serialize_index(index).tobytes()))
    queries = np.ascontiguousarray(recs.query_vectors(users).float().cpu().numpy())
    _, found = index.search(queries, CHECK_K)
    found = found + 1  # rows are items 1..I
    result = {"file": path.name, "index": "IndexFlatIP" if kind == "flat" else "IndexHNSWFlat(M=32, efSearch=128)",
              "checked_users": len(users)}
    if kind == "flat":
        agree = ranking_agreement(found, recs, users)
        if agree < len(users):
            raise GsauError(f"{path}: the exact faiss index's top-{CHECK_K} differs from gsau's for "
                            f"{len(users) - agree} of {len(users)} users")
        result[f"same_top{CHECK_K}"] = agree
    else:
        own = recs.recommend(users, CHECK_K)
        hits = sum(len(np.intersect1d(found[n], own[n].items)) for n in range(len(users)))
        result[f"recall@{CHECK_K}_of_exact"] = hits / (CHECK_K * len(users))
    return result


def export(run_dir: str | Path, out: str | Path, fmt: str = "npz", onnx: bool = False, faiss: str | None = None,
           n_check: int = 256) -> dict:
    """Export a finished run into `out`; returns (and writes as manifest.json) what was written."""
    if fmt not in FORMATS:
        raise GsauError(f"--format must be {' or '.join(FORMATS)}, not {fmt!r}")
    if faiss not in (None, *INDEXES):
        raise GsauError(f"--faiss must be {' or '.join(INDEXES)}, not {faiss!r}")
    out = Path(out)
    if (out / "manifest.json").exists():
        raise GsauError(f"{out} already holds an export (manifest.json); pick another --out")
    recs = Recommendations.from_run(run_dir, finished=True)
    # Every extra is looked for before anything is written: a missing one costs no half export.
    if fmt == "parquet":
        need("pyarrow", "parquet", "--format parquet")
    if onnx:
        onnx_ready(recs)
    if faiss:
        need("faiss", "ann", "--faiss")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GsauError(f"{out}: cannot create the export directory ({e.strerror or e})") from None
    users = recs.user_vectors()[1:].float().cpu().numpy()
    items = recs.item_vectors()[1:].float().cpu().numpy()
    cfg = recs.cfg
    manifest = {
        "run": str(Path(run_dir).resolve()), "preset": cfg.preset, "dataset": cfg.data.dataset,
        "scorer": cfg.net.scorer, "users": int(users.shape[0]), "items": int(items.shape[0]),
        "dim": int(items.shape[1]),
        "score": "user_vector . item_vector (inner product); higher ranks first",
        "user_vectors": ("final LightGCN user embeddings" + (", L2-normalised" if cfg.net.cosine_scores else "")
                         if cfg.net.scorer == "graph" else
                         "sequence representation of the user's whole known history"
                         + (", L2-normalised" if cfg.net.ce_normalize or cfg.net.cosine_scores else "")
                         + (", then a 1 for the item bias column" if recs.model.output_bias is not None else "")),
        "item_vectors": ("final LightGCN item embeddings" if cfg.net.scorer == "graph" else "the shared item table")
                        + (", L2-normalised" if cfg.net.cosine_scores else "")
                        + (", then the output bias as the last column" if recs.model.output_bias is not None else ""),
        "files": write_vectors(out, fmt, recs.data.user_ids, users, recs.data.item_ids, items),
    }
    checked = check_users(recs, n_check)
    if onnx:
        manifest["onnx"] = export_onnx(recs, out / "sequence_encoder.onnx", checked)
        manifest["files"].append("sequence_encoder.onnx")
    if faiss:
        manifest["faiss"] = export_faiss(items, out / "items.faiss", faiss, recs, checked)
        manifest["files"].append("items.faiss")
    checkpoint.write_json(out / "manifest.json", manifest)
    return manifest
