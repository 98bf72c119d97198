"""Encoders over the shared embedding table: LightGCN (graph), SASRec and BERT4Rec (sequential).

The slots' interfaces are in `base.py`, the name -> class tables in `registry.py`. Classes load on
first use, so reading the registry (config validation) does not import torch.
"""

_EXPORTS = {
    "LightGCN": "gsau.encoders.lightgcn", "normalized_adjacency": "gsau.encoders.lightgcn",
    "SASRec": "gsau.encoders.transformer", "BERT4Rec": "gsau.encoders.transformer",
    "TransformerLayer": "gsau.encoders.transformer",
    "GraphEncoder": "gsau.encoders.base", "SequenceEncoder": "gsau.encoders.base",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
