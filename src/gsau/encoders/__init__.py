"""Encoders over the shared embedding table: LightGCN (graph), SASRec and BERT4Rec (sequential)."""

from gsau.encoders.lightgcn import LightGCN, normalized_adjacency
from gsau.encoders.transformer import BERT4Rec, SASRec, TransformerLayer

__all__ = ["LightGCN", "normalized_adjacency", "SASRec", "BERT4Rec", "TransformerLayer"]
