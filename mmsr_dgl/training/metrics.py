"""Full-ranking metrics: HR, NDCG and MRR at K, with ties counted pessimistically."""

from __future__ import annotations

import torch

KS = (5, 10, 20)
METRICS = ("hr", "ndcg", "mrr")


def pessimistic_rank(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among all items: every other item scoring >= the target ranks above it.

    scores [B, n_items] (padding and excluded items at -inf), targets [B] -> [B] int64.
    A constant-score model therefore ranks every target last, never first.
    """
    target_scores = scores.gather(1, targets[:, None])  # [B, 1]
    # every item not below the target ranks above it (NaN scores too): n_items - 1 - (items below the target)
    ranks = scores.shape[1] - 1 - (scores < target_scores).sum(1)
    # a NaN score (a diverged model) ranks below everything, wherever it is
    return torch.where(target_scores[:, 0].isnan(), scores.shape[1] - 1, ranks)


def mask_seen(scores: torch.Tensor, seq: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    """Scores with the items of each history (seq [B, L], 0 = padding) set to -inf, in place; the target keeps
    its score."""
    kept = None if targets is None else scores.gather(1, targets[:, None])
    scores.scatter_(1, seq, float("-inf"))
    if targets is not None:
        scores.scatter_(1, targets[:, None], kept)
    return scores


def metric_sums(ranks: torch.Tensor, ks=KS) -> dict[str, float]:
    """Sums (not means) of hr@k, ndcg@k (ideal DCG of one relevant item = 1) and mrr@k over the batch."""
    ranks = ranks.double()
    out = {}
    for k in ks:
        hit = ranks < k
        out[f"hr@{k}"] = hit.sum().item()
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(ranks + 2), 0.0).sum().item()
        out[f"mrr@{k}"] = torch.where(hit, 1.0 / (ranks + 1), 0.0).sum().item()
    return out


class MetricAccumulator:
    """Adds up metric sums over batches; `result()` gives the means."""

    def __init__(self, ks=KS):
        self.ks, self.sums, self.count = ks, {}, 0

    def add(self, ranks: torch.Tensor) -> None:
        for name, value in metric_sums(ranks, self.ks).items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.count += len(ranks)

    def result(self) -> dict[str, float]:
        return {name: value / max(self.count, 1) for name, value in self.sums.items()}
