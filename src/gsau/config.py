"""Typed run configuration: plain values, grouped as data -> net -> training.

A preset (presets/NAME.yaml) is a partial config; a user's YAML file and `--set key=value`
overrides are applied on top, in that order. Keys may be written flat (`gamma=0.2`) or with their
section (`net.gamma=0.2`); every flat name is unique across sections.

Names: `Config.preset` is the preset's name (what `--model` picks; written as `model:` in a run's
config.yaml), `Config.net` the network and objective settings (`NetConfig`), and "model" in code is
the `Recommender` nn.Module built from them.

Each field's type is its contract: a `Literal[...]` declares the allowed values once, and checks
and messages are derived from it. Command-line values are parsed by the field's type, never as
YAML, so a dataset called `0123` or `my data #2.csv` stays what it was typed as.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from gsau.errors import ConfigError
from gsau.protocol import DEFAULT_KS, METRICS

RESUMABLE = {"resumable": True}
# Keys of a preset file that describe the preset rather than configure a run.
PRESET_METADATA = ("description", "catalog")


GraphLoss = Literal["au", "layer_au", "bpr"]  # DirectAU's L_GA + gamma L_GU, GraphAU's per-layer AU, BPR
# L_SA (+ gamma L_SU), softmax cross-entropy over all items, or sampled softmax with logQ correction
SequenceLoss = Literal["au", "ce", "sampled_ce"]
Sampling = Literal["uniform", "popularity"]
Scorer = Literal["sequence", "graph"]
# L_SU's representation-item term: each sample against one shuffled target (the paper's code);
# against every other sample's target in the batch (the same expectation from B - 1 times the
# pairs); or "rows": that log-mean-exp taken per sample, then averaged (each sample weighs the
# same, as in an InfoNCE denominator, instead of the batch's closest pairs weighing most).
SuNegatives = Literal["shuffled", "batch", "rows", "items"]
# xavier_normal: the GSAU family's init, every table and layer; encoder_default: each baseline's own
# published init (N(0, 0.02) for the Transformers, BERT-style; Xavier-uniform tables for LightGCN).
Init = Literal["xavier_normal", "encoder_default"]
CeDtype = Literal["float32", "bfloat16"]
LrSchedule = Literal["constant", "cosine", "linear"]
SeqBatching = Literal["packed", "prefix", "padded"]
Precision = Literal["float32", "bf16"]
Optimizer = Literal["adam", "lazy_adam"]

# Values older run records hold, read as today's name (results/runs/* were written with them).
LEGACY_VALUES = {"init": {"classic": "encoder_default"}}


@dataclass
class DataConfig:
    dataset: str = "beauty"
    # For a CSV/TSV/.inter file: which columns hold what, e.g. "user=userId,item=movieId,time=timestamp"
    # (null: recognised header names, else the user,item[,rating],time layout).
    columns: str | None = None
    min_user_count: int = 5
    min_item_count: int = 5
    dedup: bool = False
    drop_short: bool = False  # drop users with < 3 interactions instead of refusing the data


@dataclass
class NetConfig:
    # Encoders by registry name (gsau/encoders/registry.py); null leaves the slot empty.
    graph_encoder: str | None = "lightgcn"
    sequence_encoder: str | None = "sasrec"
    graph_loss: GraphLoss | None = "au"
    # true: both encoders read the one shared item table (the paper). false: the graph encoder
    # gets its own item table (users are the graph's alone either way), so the encoders share
    # nothing but the joint loss; the sequential encoder ranks (issue #18, question 1).
    shared_table: bool = True
    # sequence_uniformity adds gamma L_SU to the sequence loss.
    sequence_loss: SequenceLoss | None = "au"
    sequence_uniformity: bool = True
    # L_SU's representation-item term: "shuffled" (the paper: one other sample's target a sample),
    # "batch" (every other sample's target, one log-mean-exp over the batch), "rows" (the same,
    # a log-mean-exp per sample), "items" (every item of the catalogue but the sample's own target,
    # per sample: with gamma t = 1, L_SA + gamma L_SU's term is a softmax over all items on cosines
    # at temperature 1/(2t), its own target left out of the denominator).
    su_negatives: SuNegatives = "shuffled"
    # t of L_SU's kernel exp(-t ||x - y||^2) (2 in the paper and in Wang & Isola); for unit vectors
    # exp(-t ||x - y||^2) = exp(2t (cos - 1)): a larger t weighs the closest pairs more, as an
    # InfoNCE temperature of 1/(2t) does.
    su_t: float = 2.0
    # L_SU's representation-item term leaves out accidental hits: pairs whose item is the very item
    # the sample predicts (the same item as another sample's target, or drawn as its shuffled
    # partner), which would otherwise push each representation from its own target.
    su_mask_hits: bool = False
    # su_negatives=batch or rows: each distinct item of the batch weighs 1 among the negatives, its
    # c copies 1/c each (popular targets recur in a batch, so plain batch negatives push from
    # popular items most; the all-item softmax weighs every item alike). The weights count the whole
    # batch, so in a sample's row its own target's other copies weigh (c - 1)/c: pair it with
    # su_mask_hits to leave them out.
    su_unique_items: bool = False
    ce_normalize: bool = False  # CE logits from the L2-normalised sequence representation (GSAU (rec))
    gamma: float = 0.1
    scorer: Scorer = "sequence"  # which encoder ranks items at evaluation
    # Rank by cosine: the query (sequence representation, or LightGCN user) and the item vectors
    # L2-normalised, the geometry alignment and uniformity train; false ranks by the inner product.
    cosine_scores: bool = False
    mask_history: bool = False  # exclude the user's known items when ranking
    init: Init = "xavier_normal"
    embedding_dim: int = 64
    graph_layers: int = 2
    max_len: int = 50
    n_layers: int = 2
    n_heads: int = 2
    inner_size: int = 256
    hidden_dropout: float = 0.5
    attn_dropout: float = 0.5
    layer_norm_eps: float = 1e-12
    mask_ratio: float = 0.2  # BERT4Rec
    bpr_reg: float = 1e-5
    # Dropout masks from random bits (fast on CPU); false uses torch's Bernoulli sampler (benchmarks).
    fast_dropout: bool = True
    # Exact shortcuts (same values and gradients, less work): the final Transformer layer computed
    # only where samples are read, the all-item cross-entropy in one reused buffer, LightGCN's last
    # layer only at the batch's nodes. false computes all of it the straightforward way (benchmarks).
    shortcuts: bool = True
    # Operand precision of the all-item cross-entropy's three [B, I]-sized products (bfloat16 is
    # opt-in and needs shortcuts); max, softmax, loss and gradients stay float32.
    ce_dtype: CeDtype = "float32"
    # The exact CE over the items in chunks of this many (0: one [batch x items] buffer), for
    # catalogues whose score matrix does not fit in memory: same value and gradients, one more
    # [batch x items] product per step.
    ce_chunk_items: int = 0
    # sequence_loss=sampled_ce: this many candidate items per step, shared by the batch, drawn
    # "uniform"ly or by "popularity" (how often each item has been a training target so far).
    sampled_negatives: int = 1000
    sampling: Sampling = "uniform"
    # 0: LightGCN propagates the current tables every step (exact). R > 0 (large graphs): layers
    # 1..K of every node are computed once every R steps and at each epoch's start, without
    # gradient, and a step reads them at its batch's nodes beside the fresh layer 0 (the tables'
    # rows): the graph terms' gradients reach only the batch's own rows, and a step no longer
    # propagates over the whole graph. An approximation (historical embeddings): SCALING.md
    # measures what it costs.
    graph_refresh: int = 0


@dataclass
class TrainConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    # Learning-rate schedule over the whole run (`epochs`), set every step: "constant" (the paper),
    # "cosine" or "linear" decay toward 0 at the end of `epochs` (the last step gets about lr / the
    # number of decay steps), after `warmup_epochs` of linear warm-up from 0. A decaying schedule is
    # laid over `epochs`; early stopping still applies. With `decay_epochs` > 0 the rate holds at lr
    # and decays only over the last `decay_epochs` epochs (warm-up, stable, decay): on the bundled
    # data progress tracks the rate summed over steps, so a decay over the whole run stalls below
    # the constant rate's accuracy while a short decay at the end keeps it (BENCHMARKS.md).
    lr_schedule: LrSchedule = "constant"
    warmup_epochs: float = 0.0
    decay_epochs: float = 0.0
    batch_size: int = 512
    # Fields with RESUMABLE metadata may be changed when a run is resumed (`--resume` with
    # `--epochs`, `--threads`): how long and where it runs, not what it trains.
    epochs: int = field(default=300, metadata=RESUMABLE)
    patience: int = 10
    metric: str = "ndcg@20"
    ks: list[int] = field(default_factory=lambda: list(DEFAULT_KS))
    seed: int = 2020
    eval_batch_size: int = 1024
    # How the paper's (prefix, next item) samples are laid out for the encoder (same samples, same
    # model, same loss in every mode): "packed" end to end in rows with a per-sample attention mask,
    # "prefix" in length buckets, "padded" each to max_len (the authors' pipeline, for benchmarks).
    seq_batching: SeqBatching = "packed"
    threads: int = field(default=0, metadata=RESUMABLE)  # torch intra-op threads; 0 keeps torch's default
    # Where to train: "auto" (CUDA when available, else the CPU), "cpu", "cuda" or "cuda:N". A
    # checkpoint loads on any device, so a run may be resumed elsewhere.
    device: str = field(default="auto", metadata=RESUMABLE)
    # "float32" (the paper's arithmetic) or "bf16": the forward pass under bfloat16 autocast, with
    # the all-item softmax, the graph propagation, the losses and the optimiser in float32.
    precision: Precision = "float32"
    # "adam" (the paper) or "lazy_adam": the embedding tables' rows updated only on the steps that
    # read them, with row-sparse gradients (gsau/optim.py); for large catalogues (SCALING.md).
    optimizer: Optimizer = "adam"
    # Training dynamics: this many probe users and items (a fixed seeded sample), on which each
    # epoch's record (log.jsonl) gets alignment, uniformity and cross-encoder similarity fields
    # (gsau.research.dynamics); 0 = off. Reads the model only: the run trains the same bits.
    probe: int = 0


@dataclass
class Config:
    preset: str = "gsau"
    data: DataConfig = field(default_factory=DataConfig)
    net: NetConfig = field(default_factory=NetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    SECTIONS = ("data", "net", "train")

    def to_dict(self) -> dict:
        # The preset is written as `model`, the name users give it with --model.
        return {"model": self.preset, **{s: dataclasses.asdict(getattr(self, s)) for s in self.SECTIONS}}

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "Config":
        cfg = cls(preset=str(d.get("model", "gsau")))
        for s in cls.SECTIONS:
            section = d.get(s) or {}
            if not isinstance(section, dict):
                raise ConfigError(f"{source}: section {s!r} must be a mapping of options")
            for k, v in section.items():
                cfg.set(f"{s}.{k}", v, source)
        return cfg

    def update(self, values: dict, source: str = "overrides") -> None:
        """Apply a partial config: sectioned ({"net": {...}}) or flat ({"gamma": 0.2}) keys."""
        for k, v in values.items():
            if k == "model":
                self.preset = str(v)
            elif k in self.SECTIONS and isinstance(v, dict):
                for kk, vv in v.items():
                    self.set(f"{k}.{kk}", vv, source)
            elif k in PRESET_METADATA:
                continue
            else:
                self.set(k, v, source)

    def set(self, key: str, value: Any, source: str = "overrides") -> None:
        section, name = _locate(key, source)
        obj = getattr(self, section)
        setattr(obj, name, _coerce(value, get_type_hints(type(obj))[name], name, source))

    def validate(self) -> None:
        from gsau.encoders.registry import GRAPH_ENCODERS, SEQUENCE_ENCODERS
        n, t = self.net, self.train
        checks = [
            # The run's length first: every schedule check below is relative to it.
            (t.epochs >= 1, f"epochs must be at least 1, not {t.epochs}"),
            (t.patience >= 0, f"patience must be >= 0, not {t.patience}"),
            (n.graph_encoder is None or n.graph_encoder in GRAPH_ENCODERS,
             f"graph_encoder must be {_choices(GRAPH_ENCODERS, True)}, not {n.graph_encoder!r}"),
            (n.sequence_encoder is None or n.sequence_encoder in SEQUENCE_ENCODERS,
             f"sequence_encoder must be {_choices(SEQUENCE_ENCODERS, True)}, not {n.sequence_encoder!r}"),
            (n.graph_encoder or n.sequence_encoder, "a model needs at least one encoder"),
            ((n.graph_loss is None) == (n.graph_encoder is None), "graph_loss and graph_encoder go together"),
            ((n.sequence_loss is None) == (n.sequence_encoder is None), "sequence_loss and sequence_encoder go together"),
            (n.scorer != "sequence" or n.sequence_encoder, "scorer=sequence needs a sequence encoder"),
            (n.scorer != "graph" or n.graph_encoder, "scorer=graph needs a graph encoder"),
            (n.shared_table or (n.graph_encoder and n.sequence_encoder and n.scorer == "sequence"),
             "shared_table=false needs a graph and a sequence encoder, and scorer=sequence"),
            (n.ce_dtype == "float32" or n.shortcuts, "ce_dtype=bfloat16 needs shortcuts=true"),
            (n.ce_dtype == "float32" or (n.sequence_loss != "sampled_ce" and n.ce_chunk_items == 0),
             "ce_dtype=bfloat16 is for the one-buffer all-item CE, not sampled_ce or ce_chunk_items > 0"),
            (n.ce_chunk_items >= 0, f"ce_chunk_items must be >= 0 (0: one buffer), not {n.ce_chunk_items}"),
            (n.sampled_negatives >= 1, f"sampled_negatives must be at least 1, not {n.sampled_negatives}"),
            (n.gamma >= 0, f"gamma must be >= 0, not {n.gamma}"),
            (n.su_t > 0, f"su_t must be > 0, not {n.su_t}"),
            (not (n.su_mask_hits or n.su_unique_items) or (n.sequence_uniformity and n.sequence_encoder),
             "su_mask_hits and su_unique_items shape L_SU: they need sequence_uniformity=true and a sequence encoder"),
            (not n.su_mask_hits or n.su_negatives != "items",
             "su_mask_hits: su_negatives=items already leaves out each sample's own target (the only hit)"),
            (not n.su_unique_items or n.su_negatives in ("batch", "rows"),
             "su_unique_items needs su_negatives=batch or rows (the shuffled term has one item a sample)"),
            (n.bpr_reg >= 0, f"bpr_reg must be >= 0, not {n.bpr_reg}"),
            (n.layer_norm_eps > 0, f"layer_norm_eps must be > 0, not {n.layer_norm_eps}"),
            (t.batch_size >= 2, "batch_size must be at least 2"),
            (0 <= n.hidden_dropout < 1 and 0 <= n.attn_dropout < 1, "dropout must be in [0, 1)"),
            (0 < n.mask_ratio < 1, "mask_ratio must be in (0, 1)"),
            (n.max_len >= 2, "max_len must be at least 2"),
            (n.embedding_dim >= 1, "embedding_dim must be at least 1"),
            (n.embedding_dim % n.n_heads == 0 if n.n_heads >= 1 else False,
             f"embedding_dim {n.embedding_dim} must be a multiple of n_heads {n.n_heads}"),
            (n.n_layers >= 1 and n.inner_size >= 1, "n_layers and inner_size must be at least 1"),
            (n.graph_layers >= 0, "graph_layers must be at least 0"),
            (n.graph_loss != "layer_au" or n.graph_layers >= 1, "layer_au (GraphAU) needs graph_layers >= 1"),
            (t.lr > 0 and t.weight_decay >= 0, "lr must be > 0 and weight_decay >= 0"),
            (0 <= t.warmup_epochs < t.epochs, f"warmup_epochs must be in [0, epochs), not {t.warmup_epochs}"),
            (t.decay_epochs >= 0, f"decay_epochs must be >= 0, not {t.decay_epochs}"),
            (t.warmup_epochs + t.decay_epochs <= t.epochs,
             f"warmup_epochs + decay_epochs must fit within epochs "
             f"({t.warmup_epochs} + {t.decay_epochs} > {t.epochs})"),
            (t.decay_epochs == 0 or t.lr_schedule != "constant",
             "decay_epochs needs lr_schedule=cosine or linear (the shape of the decay)"),
            (t.eval_batch_size >= 1, "eval_batch_size must be at least 1"),
            (t.threads >= 0, "threads must be >= 0 (0 keeps torch's default)"),
            (t.probe >= 0, f"probe must be >= 0 (0: off), not {t.probe}"),
            (n.graph_refresh >= 0, f"graph_refresh must be >= 0 (0: exact every step), not {n.graph_refresh}"),
            # Stale layers carry no gradient: an encoder with weights of its own (sage, gat) would
            # leave them untrained.
            (n.graph_refresh == 0 or n.graph_encoder == "lightgcn",
             "graph_refresh > 0 is for graph_encoder=lightgcn, whose layers have no weights of their own"),
            # lazy_adam: every lookup of a table must give a row-sparse gradient.
            (t.optimizer != "lazy_adam" or n.sequence_loss != "ce",
             "optimizer=lazy_adam needs sequence_loss=sampled_ce or au: the all-item CE gives every item row a gradient"),
            (t.optimizer != "lazy_adam" or not (n.sequence_uniformity and n.su_negatives == "items"),
             "optimizer=lazy_adam does not support su_negatives=items: it gives every item row a gradient"),
            (t.optimizer != "lazy_adam" or not n.graph_encoder or n.graph_refresh > 0,
             "optimizer=lazy_adam with a graph encoder needs graph_refresh > 0: exact propagation gives every row a gradient"),
            (t.optimizer != "lazy_adam" or n.graph_loss != "bpr",
             "optimizer=lazy_adam does not support graph_loss=bpr (its L2 term reads the whole tables)"),
            (t.optimizer != "lazy_adam" or t.weight_decay == 0,
             "optimizer=lazy_adam has no weight decay (torch.optim.SparseAdam): set weight_decay=0"),
            (re.fullmatch(r"auto|cpu|cuda(:\d+)?", t.device) is not None,
             f"device must be auto, cpu, cuda or cuda:N, not {t.device!r}"),
            (len(t.ks) > 0 and all(k >= 1 for k in t.ks), "ks must be positive cut-offs"),
            (self.data.min_user_count >= 1 and self.data.min_item_count >= 1, "min_user_count and min_item_count must be at least 1"),
        ]
        metric_name, _, k = t.metric.partition("@")
        checks.append((metric_name in METRICS and k.isdigit() and int(k) in t.ks,
                       f"metric {t.metric!r} must be {_choices([m + '@K' for m in METRICS])} with K in ks {t.ks}"))
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


def _choices(names, nullable: bool = False) -> str:
    names = list(names) + (["null"] if nullable else [])
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def _locate(key: str, source: str) -> tuple[str, str]:
    if "." in key:
        section, name = key.split(".", 1)
        if section not in Config.SECTIONS or name not in _field_names(section):
            raise ConfigError(f"{source}: unknown option {key!r}")
        return section, name
    owners = [s for s in Config.SECTIONS if key in _field_names(s)]
    if not owners:
        raise ConfigError(f"{source}: unknown option {key!r} (see `gsau config MODEL` for every option)")
    return owners[0], key


def _field_names(section: str) -> set[str]:
    return {f.name for f in fields(get_type_hints(Config)[section])}


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
_NULL = ("null", "none", "~", "")


def _coerce(value: Any, hint, key: str, source: str):
    """A value from YAML (already typed) or the command line (a string) into the field's type.
    Strings are parsed by the field's type alone: text fields keep the text as given."""
    args = get_args(hint)
    nullable = get_origin(hint) in (Union, types.UnionType) and type(None) in args
    if nullable:
        hint = next(a for a in args if a is not type(None))
    text = value.strip() if isinstance(value, str) else None

    def bad(why: str):
        return ConfigError(f"{source}: bad value {value!r} for {key}: {why}")

    if value is None or (nullable and text is not None and text.lower() in _NULL):
        if nullable:
            return None
        raise bad("null is not allowed")
    if get_origin(hint) is Literal:
        allowed = get_args(hint)
        v = LEGACY_VALUES.get(key, {}).get(str(value), str(value) if text is None else text)
        if v not in allowed:
            raise ConfigError(f"{source}: {key} must be {_choices(allowed, nullable)}, not {value!r}")
        return v
    if hint is bool:
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise bad("expected true or false")
    if hint is int:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = value
            if text is not None:
                try:
                    number = int(text)
                except ValueError:
                    number = float(text)  # "1e3", "20.0": whole numbers written as floats
            if isinstance(number, float) and number.is_integer():
                number = int(number)
            if not isinstance(number, int):
                raise ValueError
            return number
        except (TypeError, ValueError):
            raise bad("expected an integer") from None
    if hint is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(text if text is not None else value)
        except (TypeError, ValueError):
            raise bad("expected a number") from None
        if not math.isfinite(number):
            raise bad("expected a finite number")
        return number
    if get_origin(hint) is list:
        items = value
        if text is not None:
            items = [t for t in text.strip("[]").replace(" ", "").split(",") if t]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            items = [value]
        if not isinstance(items, (list, tuple)):
            raise bad("expected a list of integers, e.g. 5,10,20")
        return [_coerce(v, int, key, source) for v in items]
    return value if isinstance(value, str) else str(value)


def presets_dir() -> Path:
    return Path(str(resources.files("gsau") / "presets"))


def load_preset(name: str) -> dict:
    path = presets_dir() / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(preset_names())}")
    return yaml.safe_load(path.read_text()) or {}


def preset_info(name: str) -> dict:
    """A preset's description and catalog entry: {"description", "order", "group", "priority",
    "role"} (a preset without a catalog entry sorts last, in group 0, as a baseline)."""
    raw = load_preset(name)
    catalog = raw.get("catalog") or {}
    return {"name": name, "description": raw.get("description", ""), "order": catalog.get("order", 10**6),
            "group": catalog.get("group", 0), "priority": catalog.get("priority", 10**6),
            "role": catalog.get("role", "baseline")}


def preset_names() -> list[str]:
    """Every installed preset, in the catalog's listing order (then by name)."""
    found = sorted(p.stem for p in presets_dir().glob("*.yaml"))
    return sorted(found, key=lambda n: (preset_info(n)["order"], n))


def resolve(model: str, config_file: str | None = None, overrides: list[str] | None = None, **direct) -> Config:
    """Preset, then the user's YAML file, then `key=value` overrides, then direct keyword values."""
    cfg = Config(preset=model)
    cfg.update(load_preset(model), source=f"preset {model}")
    if config_file:
        loaded = read_yaml(config_file) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{config_file}: expected a mapping of options")
        cfg.update(loaded, source=config_file)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        cfg.set(k.strip(), v, source="--set")
    for k, v in direct.items():
        if v is not None:
            cfg.set(k, v, source="command line")
    cfg.validate()
    return cfg


def read_yaml(path: str | Path):
    """A YAML file's content, or a one-line ConfigError naming the file (and the line, where the
    parser gives one). safe_load: a tag such as !!python/object is refused, never executed."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
