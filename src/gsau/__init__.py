"""gsau: graph and sequential recommenders with alignment and uniformity (GSAU, arXiv 2412.04276)."""

__version__ = "0.1.0"
