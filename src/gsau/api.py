"""`gsau.Model`: fit, recommend, save and load in the shape of RecTools, Cornac and implicit.

    model = gsau.Model("gsau-rec", epochs=20, lr=0.003)
    model.fit(df)                          # a DataFrame of user, item[, timestamp]; or "toys"; or a path
    model.recommend(["42", "7"], k=10)     # DataFrame: user, item, score, rank (the data's own ids)
    model.recommend_sequence(["B01", "B02"], k=10)   # a visitor with no account: items just viewed
    model.similar_items(["B01"], k=10)
    model.save("runs/mine"); gsau.Model.load("runs/mine")

Training is `gsau.trainer.Trainer`, the loop `gsau train` runs, into a run directory: `save` copies
that directory, and a directory written by `gsau train` loads as well. A DataFrame is read into the
same `RawInteractions` a file reader returns and built by `gsau.data.interactions.build`, so ids,
k-core filtering and time order are exactly those of the same data read from a CSV file; it is
written beside the run (`data/dataset.npz`) so the run can be loaded, evaluated and resumed later.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
import weakref
from pathlib import Path
from typing import Sequence

import numpy as np

from gsau.errors import DataError, GsauError, GsauWarning
from gsau.serving import UnknownIds

DATA_SUBDIR = "data"  # where a run trained on an in-memory DataFrame keeps that data


class UnknownItemsWarning(GsauWarning):
    """Items of a history that the model does not know were left out (unknown="report")."""


def _pandas(feature: str):
    from gsau.extras import need
    return need("pandas", "pandas", feature)


def _as_list(ids) -> list:
    """One id or a sequence of ids (a list, array or pandas Series) as a list."""
    if isinstance(ids, (str, bytes, int, np.integer)):
        return [ids]
    return list(ids)


def frame_interactions(frame, source: str = "DataFrame", columns: dict[str, str] | str | None = None):
    """A pandas DataFrame (or a {column: array} mapping) of interactions as the readers'
    RawInteractions: columns found by the same header names a CSV file's are (user, userId, item,
    movieId, timestamp, time, ...) or named with `columns` ({"user": ..., "item": ..., "time": ...}
    or "user=..,item=..,time=.."); ids as text, as a file's; times as float seconds."""
    from gsau.data.readers import RawInteractions, _explicit_columns, _header_roles, parse_columns
    names = [str(c) for c in (frame.columns if hasattr(frame, "columns") else frame.keys())]
    if isinstance(columns, str):
        columns = parse_columns(columns)
    if columns is not None:
        columns = {("timestamp" if role == "time" else role): str(col) for role, col in columns.items()}
        roles = _explicit_columns(Path(source), columns, names, None)
    else:
        roles = _header_roles(Path(source), names, None)
    raw_columns = list(frame.columns) if hasattr(frame, "columns") else list(frame.keys())

    def column(role):
        values = frame[raw_columns[roles[role]]]
        return values.to_numpy() if hasattr(values, "to_numpy") else np.asarray(values)

    if len(column("user")) == 0:
        raise DataError(source, "no interactions (0 rows)")
    ids = {role: _id_text(column(role), names[roles[role]], source) for role in ("user", "item")}
    times = _times(column("timestamp"), names[roles["timestamp"]], source) if "timestamp" in roles else None
    used = {role: names[j] for role, j in roles.items() if role != "rating"}
    return RawInteractions(ids["user"], ids["item"], times, used)


def _id_text(values: np.ndarray, name: str, source: str) -> np.ndarray:
    """Ids as text, as a CSV file gives them: a whole-number float column (pandas turns an int
    column with a gap into floats) reads as integers, so 42.0 is the id "42" a file would hold."""
    missing = _missing(values)
    if missing.any():
        raise DataError(source, f"column {name!r}: {int(missing.sum())} missing ids (row {int(np.flatnonzero(missing)[0])})")
    if values.dtype.kind == "f":
        if not np.all(np.mod(values, 1) == 0):
            raise DataError(source, f"column {name!r}: ids are fractional numbers; ids must be whole numbers or text")
        values = values.astype(np.int64)
    return values.astype(str)


def _missing(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype.kind == "O":
        return np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in values], dtype=bool)
    return np.zeros(len(values), dtype=bool)


def _times(values: np.ndarray, name: str, source: str) -> np.ndarray:
    """Timestamps as float seconds: numbers as they are, datetimes since the epoch."""
    if values.dtype.kind == "M":
        if np.isnat(values).any():
            raise DataError(source, f"column {name!r}: missing times (row {int(np.flatnonzero(np.isnat(values))[0])})")
        return values.astype("datetime64[ns]").astype(np.int64) / 1e9
    try:
        times = values.astype(np.float64)
    except (TypeError, ValueError):
        raise DataError(source, f"column {name!r}: times must be numbers or datetimes, not {values.dtype}") from None
    bad = np.flatnonzero(~np.isfinite(times))
    if bad.size:
        raise DataError(source, f"column {name!r}: time {values[bad[0]]!r} (row {int(bad[0])}) is not a finite number")
    return times


class Model:
    """A gsau preset with fit / recommend / save / load. Keyword options override the preset
    (`epochs=20`, `lr=0.003`, `gamma=0.2`, any option `gsau config MODEL` lists); `config` is a
    YAML file of options; `out` the run directory to train into (default: a temporary one, kept
    while the Model lives; `save` copies it); `callbacks` are trainer callbacks (gsau.track)."""

    def __init__(self, preset: str = "gsau-rec", *, config: str | Path | None = None, out: str | Path | None = None,
                 progress: bool = False, callbacks: Sequence = (), **options):
        from gsau.config import resolve
        resolve(preset, config, None, **options)  # unknown presets and options fail here, not after loading data
        self.preset, self.config_file, self.options = preset, config, options
        self.out = None if out is None else Path(out)
        self.progress, self.callbacks = progress, list(callbacks)
        self.run_dir: Path | None = None
        self.report: dict | None = None
        self._recs = None

    # -- training ------------------------------------------------------------------------------
    def fit(self, data, columns: dict[str, str] | str | None = None) -> "Model":
        """Train on `data`: a bundled name (beauty, sports, toys), a dataset path (an imported
        directory, a text/CSV/TSV/.inter or Parquet file), or a pandas DataFrame with user and item
        columns and optionally a timestamp (without one, row order is time order). `columns` names
        the columns when their headers are not recognised ({"user": .., "item": .., "time": ..})."""
        from gsau import runs
        from gsau.config import resolve
        from gsau.data.interactions import build
        from gsau.serving import Recommendations
        from gsau.trainer import Trainer
        out = self.out or Path(self._temporary())
        present = [f for f in runs.RUN_FILES if (out / f).exists()]
        if present:
            raise GsauError(f"{out} already holds a run ({', '.join(present)}); pick another out")
        spec = data
        if not isinstance(data, (str, Path)):
            if not hasattr(data, "columns") and not isinstance(data, dict):
                raise GsauError(f"fit: data must be a dataset name, a path or a pandas DataFrame, not {type(data).__name__}")
            base = resolve(self.preset, self.config_file, None, **self.options).data
            built = build(frame_interactions(data, "DataFrame", columns), "dataframe", "DataFrame",
                          base.min_user_count, base.min_item_count, base.dedup)
            # Written where the run is, so the run directory alone can be loaded, served or resumed.
            spec = str(built.save(out / DATA_SUBDIR).parent.resolve())
            columns = None
        if isinstance(columns, dict):  # the config records them as the command line writes them
            columns = ",".join(f"{role}={col}" for role, col in columns.items())
        cfg = resolve(self.preset, self.config_file, None, dataset=runs.dataset_spec(spec), columns=columns, **self.options)
        trainer = Trainer(cfg, out, progress=self.progress, callbacks=self.callbacks)
        self.report = trainer.run()
        trainer.model.eval()
        self.run_dir, self._recs = out, Recommendations(cfg, trainer.split, trainer.model)
        return self

    def _temporary(self) -> str:
        path = tempfile.mkdtemp(prefix="gsau-model-")
        weakref.finalize(self, shutil.rmtree, path, ignore_errors=True)
        return path

    @property
    def recommender(self):
        """The fitted model's `gsau.serving.Recommendations` (the scoring core)."""
        if self._recs is None:
            raise GsauError("this Model is not fitted: call fit(data) or gsau.Model.load(run_dir) first")
        return self._recs

    # -- saving --------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Copy the run directory to `directory` (which must not hold a run): config.yaml,
        data.json, log.jsonl, metrics.json, best.pt, last.pt, and the data of a DataFrame fit."""
        from gsau import checkpoint, runs
        source, target = self._fitted_dir(), Path(directory)
        if target.exists() and target.resolve() == source.resolve():
            return target
        present = [f for f in runs.RUN_FILES if (target / f).exists()]
        if present:
            raise GsauError(f"{target} already holds a run ({', '.join(present)}); pick another directory")
        runs.make_run_dir(target)
        cfg = runs.read_config(source)
        own_data = source / DATA_SUBDIR
        if own_data.is_dir() and Path(cfg.data.dataset).resolve() == own_data.resolve():
            shutil.copytree(own_data, target / DATA_SUBDIR, dirs_exist_ok=True)
            cfg.data.dataset = str((target / DATA_SUBDIR).resolve())
        for name in runs.RUN_FILES:
            if (source / name).exists() and name != "config.yaml":
                shutil.copy2(source / name, target / name)
        import yaml
        # config.yaml last: a directory is a run only once everything it points to is in place.
        checkpoint.write_text(target / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return target

    @classmethod
    def load(cls, directory: str | Path) -> "Model":
        """A finished run directory (from `save`, or `gsau train`) ready to recommend."""
        import json
        from gsau.serving import Recommendations
        recs = Recommendations.from_run(directory, finished=True)
        model = cls.__new__(cls)  # no preset check: the run's own config is what it was trained with
        model.preset, model.config_file, model.options = recs.cfg.preset, None, {}
        model.out, model.progress, model.callbacks = None, False, []
        model.run_dir, model._recs = Path(directory), recs
        model.report = json.loads((Path(directory) / "metrics.json").read_text(encoding="utf-8"))
        return model

    def _fitted_dir(self) -> Path:
        self.recommender  # noqa: B018 (the not-fitted error)
        return self.run_dir

    # -- recommending --------------------------------------------------------------------------
    def recommend(self, users, k: int = 10, exclude_seen: bool = False, fallback: str | None = None):
        """Top-k for known users (one id or many), scored in batches: a DataFrame of user, item,
        score, rank in the data's own ids. Unknown users are an error naming them, or with
        fallback="popular" get the most popular items (score: their interaction count)."""
        pd = _pandas("Model.recommend")
        recs, users = self.recommender, [str(u) for u in _as_list(users)]
        _check_k(k)
        ranked = recs.recommend(recs.user_indices(users, fallback), k, exclude_seen)
        return _frame(pd, recs, list(zip(users, ranked)), "user")

    def recommend_sequence(self, items, k: int = 10, exclude_seen: bool = False, unknown: str = "skip"):
        """Top-k for a history of item ids (oldest first) with no user behind it: a visitor who just
        viewed these items. Unknown ids are skipped, an error (unknown="error"), or skipped with an
        UnknownItemsWarning naming them (unknown="report"; also in the frame's attrs["unknown_items"]).
        A DataFrame of item, score, rank."""
        pd = _pandas("Model.recommend_sequence")
        recs = self.recommender
        _check_k(k)
        history, missing = recs.history(_as_list(items), unknown)
        if missing and unknown == "report":
            warnings.warn(f"left out {len(missing)} unknown item{'s' if len(missing) > 1 else ''} of the history: "
                          f"{', '.join(map(repr, missing[:5]))}{' ...' if len(missing) > 5 else ''}",
                          UnknownItemsWarning, stacklevel=2)
        frame = _frame(pd, recs, [(None, recs.recommend_histories([history], k, exclude_seen)[0])], None)
        frame.attrs["unknown_items"] = missing
        return frame

    def similar_items(self, items, k: int = 10):
        """The k most similar items to each given item (cosine of the item embeddings the model
        ranks with), the item itself left out: a DataFrame of item, similar, score, rank."""
        pd = _pandas("Model.similar_items")
        recs, items = self.recommender, [str(i) for i in _as_list(items)]
        _check_k(k)
        known, unknown = recs.item_indices(items)
        if unknown:
            raise UnknownIds("item", unknown, recs.data.name)
        return _frame(pd, recs, list(zip(items, recs.similar(known, k))), "item", item_column="similar")

    @property
    def metrics(self) -> dict:
        """metrics.json of the fitted run: best epoch, validation and test metrics, config."""
        self.recommender  # noqa: B018
        return self.report


def _check_k(k) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise GsauError(f"k must be a whole number >= 1, not {k!r}")


def _frame(pd, recs, rows, key: str | None, item_column: str = "item"):
    """rows [(key value, Ranked)] as one DataFrame: [key,] item, score, rank."""
    columns: dict[str, list] = {key: []} if key else {}
    columns.update({item_column: [], "score": [], "rank": []})
    for value, ranked in rows:
        n = len(ranked.items)
        if key:
            columns[key] += [value] * n
        columns[item_column] += recs.item_ids(ranked.items)
        columns["score"] += ranked.scores.astype(float).tolist()
        columns["rank"] += list(range(1, n + 1))
    return pd.DataFrame(columns)
