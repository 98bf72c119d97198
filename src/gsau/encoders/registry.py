"""Which encoder a config name means. Config validation reads the names without importing torch;
the model imports the class when it builds one. A new encoder is a new module implementing
`gsau.encoders.base.GraphEncoder` or `SequenceEncoder`, plus one line here."""

from __future__ import annotations

import importlib

GRAPH_ENCODERS = {
    "lightgcn": "gsau.encoders.lightgcn:LightGCN",
    "sage": "gsau.encoders.sage:GraphSAGE",
    "gat": "gsau.encoders.gat:GAT",
}
SEQUENCE_ENCODERS = {
    "sasrec": "gsau.encoders.transformer:SASRec",
    "bert4rec": "gsau.encoders.transformer:BERT4Rec",
}


def _load(registry: dict[str, str], name: str):
    module, _, cls = registry[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def graph_encoder(name: str):
    return _load(GRAPH_ENCODERS, name)


def sequence_encoder(name: str):
    return _load(SEQUENCE_ENCODERS, name)
