"""Data layer: read files, k-core filter, map ids, split leave-one-out, build batches."""

from gsau.data.interactions import Interactions, load_dataset, BUNDLED
from gsau.data.split import LeaveOneOut

__all__ = ["Interactions", "LeaveOneOut", "load_dataset", "BUNDLED"]
