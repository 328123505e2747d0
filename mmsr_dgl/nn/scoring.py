"""The model contract shared by every recommender here (RecBole's): forward, full_sort_predict, calculate_loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..graph import MSGraphBatch


class FullSortRecommender(nn.Module):
    """Subclasses define `item_emb` (ids 0..n_items-1, 0 = padding), `modalities` and `forward(batch) -> [B, d]`.

    Scores are dot products with every item embedding; padding always scores -inf; the loss is cross-entropy
    over all items.
    """

    item_emb: nn.Embedding
    modalities: list[str]

    def full_sort_predict(self, batch: MSGraphBatch) -> torch.Tensor:
        scores = self(batch) @ self.item_emb.weight.T  # [B, n_items]
        # out of place: an in-place write would make autograd copy the whole [B, n_items] gradient
        return scores.index_fill(1, torch.zeros(1, dtype=torch.long, device=scores.device), float("-inf"))

    def calculate_loss(self, batch: MSGraphBatch) -> torch.Tensor:
        return F.cross_entropy(self.full_sort_predict(batch), batch.targets)
