"""Typed run configuration: plain values, grouped as data -> model -> training.

A preset (presets/NAME.yaml) is a partial config; a user's YAML file and `--set key=value`
overrides are applied on top, in that order. Keys may be written flat (`gamma=0.2`) or with their
section (`net.gamma=0.2`); every flat name is unique across sections.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from gsau.errors import ConfigError


RESUMABLE = {"resumable": True}
# Keys of a preset file that describe the preset rather than configure a run.
PRESET_METADATA = ("description", "catalog")


@dataclass
class DataConfig:
    dataset: str = "beauty"
    min_user_count: int = 5
    min_item_count: int = 5
    dedup: bool = False
    drop_short: bool = False  # drop users with < 3 interactions instead of refusing the data


@dataclass
class ModelConfig:
    graph_encoder: str | None = "lightgcn"  # "lightgcn" or None
    sequence_encoder: str | None = "sasrec"  # "sasrec", "bert4rec" or None
    # Objectives. graph_loss: "au" (L_GA + gamma L_GU), "layer_au" (GraphAU), "bpr", or None.
    graph_loss: str | None = "au"
    # sequence_loss: "au" (L_SA) or "ce" (softmax over all items); sequence_uniformity adds gamma L_SU.
    sequence_loss: str | None = "au"
    sequence_uniformity: bool = True
    ce_normalize: bool = False  # CE logits from the L2-normalised sequence representation (GSAU (rec))
    gamma: float = 0.1
    scorer: str = "sequence"  # which encoder ranks items at evaluation: "sequence" or "graph"
    mask_history: bool = False  # exclude the user's known items when ranking
    init: str = "xavier_normal"  # "xavier_normal" (GSAU family) or "classic" (each baseline's own)
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
    # Operand precision of the all-item cross-entropy's three [B, I]-sized products ("float32" or
    # "bfloat16", opt-in, needs shortcuts); max, softmax, loss and gradients stay float32.
    ce_dtype: str = "float32"


@dataclass
class TrainConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    # Learning-rate schedule over the whole run (`epochs`), set every step: "constant" (the paper),
    # "cosine" or "linear" decay toward 0 at the end of `epochs` (the last step gets about lr / the
    # number of decay steps), after `warmup_epochs` of linear warm-up from 0. A decaying schedule is
    # laid over `epochs`;
    # early stopping still applies. With `decay_epochs` > 0 the rate holds at lr and decays only
    # over the last `decay_epochs` epochs (warm-up, stable, decay): on the bundled data progress
    # tracks the rate summed over steps, so a decay over the whole run (a 40-epoch cosine) stalled far
    # below the constant rate's accuracy (BENCHMARKS.md), while a short decay at the end keeps it.
    # Early stopping may still end a run before its decay starts.
    lr_schedule: str = "constant"
    warmup_epochs: float = 0.0
    decay_epochs: float = 0.0
    batch_size: int = 512
    # Fields with RESUMABLE metadata may be changed when a run is resumed (`--resume` with
    # `--epochs`, `--threads`): how long and where it runs, not what it trains.
    epochs: int = field(default=300, metadata=RESUMABLE)
    patience: int = 10
    metric: str = "ndcg@20"
    ks: list[int] = field(default_factory=lambda: [5, 10, 20, 50])
    seed: int = 2020
    eval_batch_size: int = 1024
    # How the paper's (prefix, next item) samples are laid out for the encoder (same samples, same
    # model, same loss in every mode): "packed" end to end in rows with a per-sample attention mask,
    # "prefix" in length buckets, "padded" each to max_len (the authors' pipeline, for benchmarks).
    seq_batching: str = "packed"
    threads: int = field(default=0, metadata=RESUMABLE)  # torch intra-op threads; 0 keeps torch's default


@dataclass
class Config:
    model: str = "gsau"
    data: DataConfig = field(default_factory=DataConfig)
    net: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    SECTIONS = ("data", "net", "train")

    def to_dict(self) -> dict:
        return {"model": self.model, **{s: dataclasses.asdict(getattr(self, s)) for s in self.SECTIONS}}

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        cfg = cls(model=d.get("model", "gsau"))
        for s in cls.SECTIONS:
            for k, v in (d.get(s) or {}).items():
                cfg.set(f"{s}.{k}", v)
        return cfg

    def update(self, values: dict, source: str = "overrides") -> None:
        """Apply a partial config: sectioned ({"net": {...}}) or flat ({"gamma": 0.2}) keys."""
        for k, v in values.items():
            if k == "model":
                self.model = v
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
        setattr(obj, name, _coerce(value, get_type_hints(type(obj))[name], key, source))

    def validate(self) -> None:
        n = self.net
        checks = [
            (n.graph_encoder in (None, "lightgcn"), f"graph_encoder must be lightgcn or null, not {n.graph_encoder!r}"),
            (n.sequence_encoder in (None, "sasrec", "bert4rec"), f"sequence_encoder must be sasrec, bert4rec or null, not {n.sequence_encoder!r}"),
            (n.graph_encoder or n.sequence_encoder, "a model needs at least one encoder"),
            (n.graph_loss in (None, "au", "layer_au", "bpr"), f"graph_loss must be au, layer_au, bpr or null, not {n.graph_loss!r}"),
            (n.sequence_loss in (None, "au", "ce"), f"sequence_loss must be au, ce or null, not {n.sequence_loss!r}"),
            ((n.graph_loss is None) == (n.graph_encoder is None), "graph_loss and graph_encoder go together"),
            ((n.sequence_loss is None) == (n.sequence_encoder is None), "sequence_loss and sequence_encoder go together"),
            (n.scorer in ("sequence", "graph"), f"scorer must be sequence or graph, not {n.scorer!r}"),
            (n.scorer != "sequence" or n.sequence_encoder, "scorer=sequence needs a sequence encoder"),
            (n.scorer != "graph" or n.graph_encoder, "scorer=graph needs a graph encoder"),
            (n.ce_dtype in ("float32", "bfloat16"), f"ce_dtype must be float32 or bfloat16, not {n.ce_dtype!r}"),
            (n.ce_dtype == "float32" or n.shortcuts, "ce_dtype=bfloat16 needs shortcuts=true"),
            (n.init in ("xavier_normal", "classic"), f"init must be xavier_normal or classic, not {n.init!r}"),
            (self.train.seq_batching in ("packed", "prefix", "padded"),
             f"seq_batching must be packed, prefix or padded, not {self.train.seq_batching!r}"),
            (self.train.batch_size >= 2, "batch_size must be at least 2"),
            (0 <= n.hidden_dropout < 1 and 0 <= n.attn_dropout < 1, "dropout must be in [0, 1)"),
            (0 < n.mask_ratio < 1, "mask_ratio must be in (0, 1)"),
            (n.max_len >= 2, "max_len must be at least 2"),
            (n.embedding_dim >= 1, "embedding_dim must be at least 1"),
            (n.embedding_dim % n.n_heads == 0 if n.n_heads >= 1 else False,
             f"embedding_dim {n.embedding_dim} must be a multiple of n_heads {n.n_heads}"),
            (n.n_layers >= 1 and n.inner_size >= 1, "n_layers and inner_size must be at least 1"),
            (n.graph_layers >= 0, "graph_layers must be at least 0"),
            (n.graph_loss != "layer_au" or n.graph_layers >= 1, "layer_au (GraphAU) needs graph_layers >= 1"),
            (self.train.lr > 0 and self.train.weight_decay >= 0, "lr must be > 0 and weight_decay >= 0"),
            (self.train.lr_schedule in ("constant", "cosine", "linear"),
             f"lr_schedule must be constant, cosine or linear, not {self.train.lr_schedule!r}"),
            (0 <= self.train.warmup_epochs < self.train.epochs,
             f"warmup_epochs must be in [0, epochs), not {self.train.warmup_epochs}"),
            (self.train.decay_epochs >= 0, f"decay_epochs must be >= 0, not {self.train.decay_epochs}"),
            (self.train.warmup_epochs + self.train.decay_epochs <= self.train.epochs,
             f"warmup_epochs + decay_epochs must fit within epochs "
             f"({self.train.warmup_epochs} + {self.train.decay_epochs} > {self.train.epochs})"),
            (self.train.decay_epochs == 0 or self.train.lr_schedule != "constant",
             "decay_epochs needs lr_schedule=cosine or linear (the shape of the decay)"),
            (self.train.eval_batch_size >= 1, "eval_batch_size must be at least 1"),
            (self.train.threads >= 0, "threads must be >= 0 (0 keeps torch's default)"),
            (self.train.epochs >= 1 and self.train.patience >= 0, "epochs must be >= 1 and patience >= 0"),
            (len(self.train.ks) > 0 and all(k >= 1 for k in self.train.ks), "ks must be positive cut-offs"),
        ]
        metric_name, _, k = self.train.metric.partition("@")
        checks.append((metric_name in ("recall", "ndcg", "mrr") and k.isdigit() and int(k) in self.train.ks,
                       f"metric {self.train.metric!r} must be recall@K, ndcg@K or mrr@K with K in ks {self.train.ks}"))
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


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


def _coerce(value: Any, hint, key: str, source: str):
    """Values from YAML or the command line into the field's declared type."""
    if isinstance(value, str):
        parsed = yaml.safe_load(value) if value.strip() else value
        value = parsed
    text = str(hint)
    try:
        if value is None:
            if "None" in text:
                return None
            raise ValueError("null is not allowed")
        if hint is bool:
            if isinstance(value, bool):
                return value
            raise ValueError("expected true or false")
        if hint is int or text.startswith("int"):
            if isinstance(value, bool) or float(value) != int(value):
                raise ValueError("expected an integer")
            return int(value)
        if hint is float:
            return float(value)
        if "list" in text:
            if isinstance(value, (int, float)):
                value = [value]
            return [int(v) for v in value]
        return str(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: bad value {value!r} for {key}: {e}") from None


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
    cfg = Config(model=model)
    cfg.update(load_preset(model), source=f"preset {model}")
    if config_file:
        try:
            loaded = yaml.safe_load(Path(config_file).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"{config_file}: cannot read config ({e})") from None
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
