"""The evaluation protocol's names, defined once and free of torch so that configuration, reports
and the command line can use them without loading it."""

METRICS = ("recall", "ndcg", "mrr")  # Recall@K (= Hit@K with one held-out item), NDCG@K, MRR@K
DEFAULT_KS = (5, 10, 20, 50)
STAGES = ("valid", "test")
