"""The model contract shared by every recommender here (RecBole's): forward, full_sort_predict, calculate_loss."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..graph import ViewKey
from .batch import Batch

Query = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # [B, d], or H queries [B, H, d] and log weights [B, H]


class FullSortRecommender(nn.Module):
    """Subclasses define `item_emb` (ids 0..n_items-1, 0 = padding), `modalities`, `temperature` and
    `encode(batch, items)`, which reads the item table `items` [n_items, d] computed once per step and returns a
    query [B, d], or H queries [B, H, d] with their log mixture weights [B, H].

    Scores are dot products with every item embedding (with `temperature` > 0: cosine similarities divided by
    it); padding always scores -inf; the loss is cross-entropy over all items. With H queries the scores are the
    log of the weighted sum of their H softmaxes (a mixture of softmaxes), so they are log-probabilities, and the
    loss is the mixture's cross-entropy.
    """

    item_emb: nn.Embedding
    modalities: list[str]
    temperature: float = 0.0
    n_negatives: int = 0  # > 0: the training loss is a sampled softmax over the target and this many negatives

    def set_item_content(self, codes: dict[str, np.ndarray], features: dict[str, np.ndarray]) -> None:
        """Tell the model the codes (modality -> [n_items, k]) and reduced features (modality -> [n_items, f]) of
        every item; only models that read them care."""

    def graph_spec(self, all_nodes: bool = False) -> tuple[list[str], set[ViewKey]] | None:
        """The modalities and relation-group views of the batched MSGraph this model reads (`all_nodes`: also what
        updating every node, not only what the readout reads, needs); None: it reads only `Batch.seq`."""
        return None

    def item_table(self) -> torch.Tensor:
        """[n_items, d]: the embeddings every item is scored with."""
        return self.item_emb.weight

    def encode(self, batch: Batch, items: torch.Tensor) -> Query:
        raise NotImplementedError

    def forward(self, batch: Batch) -> Query:
        return self.encode(batch, self.item_table())

    def head_scores(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scores [B, n_items] (padding at -inf) and None; or, with H queries, [B, H, n_items] and the log mixture
        weights [B, H]."""
        items = self.item_table()  # [n_items, d]
        query = self.encode(batch, items)
        query, log_weights = query if isinstance(query, tuple) else (query, None)  # [B, d] or [B, H, d]
        return self.scores(query, items), log_weights

    def scores(self, query: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[..., n_items] scores of queries [..., d] against the item table, padding at -inf."""
        if self.temperature > 0:
            query, items = F.normalize(query, dim=-1) / self.temperature, F.normalize(items, dim=-1)
        scores = query @ items.T
        # out of place: an in-place write would make autograd copy the whole [B, n_items] gradient
        return scores.index_fill(-1, torch.zeros(1, dtype=torch.long, device=scores.device), float("-inf"))

    def full_sort_predict(self, batch: Batch) -> torch.Tensor:
        scores, log_weights = self.head_scores(batch)
        if log_weights is None:
            return scores
        return torch.logsumexp(log_weights.unsqueeze(-1) + scores.log_softmax(-1), dim=1)  # [B, n_items]

    def sampled_loss(self, query: Query, targets: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of each query [N, d] (or mixture of H queries [N, H, d]) over its target [N] and
        `n_negatives` items drawn uniformly (padding excluded) for it; a negative that is the target itself is
        masked out. Its cost grows with `n_negatives`, not with the number of items."""
        query, log_weights = query if isinstance(query, tuple) else (query, None)
        negatives = torch.randint(1, len(items), (len(targets), self.n_negatives), device=targets.device)
        candidates = torch.cat([targets[:, None], negatives], dim=1)  # [N, 1 + K]
        if self.temperature > 0:
            query, items = F.normalize(query, dim=-1) / self.temperature, F.normalize(items, dim=-1)
        queries = query if log_weights is not None else query[:, None]  # [N, H, d]
        logits = torch.einsum("nhd,nkd->nhk", queries, F.embedding(candidates, items))  # [N, H, 1 + K]
        same = torch.cat([torch.zeros_like(targets[:, None], dtype=torch.bool), negatives == targets[:, None]], dim=1)
        target = logits.masked_fill(same[:, None], float("-inf")).log_softmax(-1)[..., 0]  # [N, H]
        if log_weights is None:
            return -target[:, 0].mean()
        return -torch.logsumexp(log_weights + target, dim=1).mean()

    def calculate_loss(self, batch: Batch) -> torch.Tensor:
        if self.n_negatives:
            items = self.item_table()
            return self.sampled_loss(self.encode(batch, items), batch.targets, items)
        scores, log_weights = self.head_scores(batch)
        if log_weights is None:
            return F.cross_entropy(scores, batch.targets)
        # -log of the mixture's probability of the target, from each query's log-softmax at the target only: the
        # full mixture costs twice as much, and its logsumexp over -inf padding entries has a NaN gradient
        index = batch.targets.view(-1, 1, 1).expand(-1, scores.shape[1], 1)  # [B, H, 1]
        target = scores.log_softmax(-1).gather(-1, index).squeeze(-1)  # [B, H]
        return -torch.logsumexp(log_weights + target, dim=1).mean()
