"""The model contract shared by every recommender here (RecBole's): forward, full_sort_predict, calculate_loss."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..graph import MSGraphBatch


class FullSortRecommender(nn.Module):
    """Subclasses define `item_emb` (ids 0..n_items-1, 0 = padding), `modalities`, `temperature` and
    `encode(batch, items) -> [B, d]`, which reads the item table `items` [n_items, d] computed once per step.

    Scores are dot products with every item embedding (with `temperature` > 0: cosine similarities divided by
    it); padding always scores -inf; the loss is cross-entropy over all items.
    """

    item_emb: nn.Embedding
    modalities: list[str]
    temperature: float = 0.0

    def set_item_content(self, codes: dict[str, np.ndarray], features: dict[str, np.ndarray]) -> None:
        """Tell the model the codes (modality -> [n_items, k]) and reduced features (modality -> [n_items, f]) of
        every item; only models that read them care."""

    def item_table(self) -> torch.Tensor:
        """[n_items, d]: the embeddings every item is scored with."""
        return self.item_emb.weight

    def encode(self, batch: MSGraphBatch, items: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, batch: MSGraphBatch) -> torch.Tensor:
        return self.encode(batch, self.item_table())

    def full_sort_predict(self, batch: MSGraphBatch) -> torch.Tensor:
        items = self.item_table()  # [n_items, d]
        query = self.encode(batch, items)  # [B, d]
        if self.temperature > 0:
            query, items = F.normalize(query, dim=-1) / self.temperature, F.normalize(items, dim=-1)
        scores = query @ items.T  # [B, n_items]
        # out of place: an in-place write would make autograd copy the whole [B, n_items] gradient
        return scores.index_fill(1, torch.zeros(1, dtype=torch.long, device=scores.device), float("-inf"))

    def calculate_loss(self, batch: MSGraphBatch) -> torch.Tensor:
        return F.cross_entropy(self.full_sort_predict(batch), batch.targets)
