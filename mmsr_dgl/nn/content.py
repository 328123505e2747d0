"""Item embeddings that hold item content (`item_repr`), for any recommender that scores with an item table.

id                 the id embedding (the paper's items; SASRec's)
id+codes           plus, per modality, the mean embedding of the item's codes
id+codes+features  plus, per modality, a linear map of the item's reduced features
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .scoring import FullSortRecommender

ITEM_REPRS = ("id", "id+codes", "id+codes+features")


def code_embeddings(centroids: dict[str, np.ndarray], dim: int, std: float) -> nn.ModuleDict:
    """Per modality an embedding of its codes [n_codes, dim], initialised from the k-means centroids."""
    out = nn.ModuleDict()
    for m in sorted(centroids):
        emb = nn.Embedding(len(centroids[m]), dim)
        emb.weight.data.copy_(_centroid_init(centroids[m], dim, std))
        out[m] = emb
    return out


def feature_maps(centroids: dict[str, np.ndarray], dim: int) -> nn.ModuleDict:
    """Per modality a linear map of reduced features [reduced_dim] -> [dim]."""
    return nn.ModuleDict({m: nn.Linear(centroids[m].shape[1], dim, bias=False) for m in sorted(centroids)})


def _centroid_init(centroids: np.ndarray, dim: int, std: float) -> torch.Tensor:
    """Code embeddings from k-means centroids: their top principal directions, rescaled to `std`."""
    x = centroids - centroids.mean(0, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    proj = (u * s)[:, :dim]
    out = np.zeros((len(centroids), dim), dtype=np.float32)
    out[:, : proj.shape[1]] = proj / (proj.std() + 1e-8) * std
    return torch.from_numpy(out)


class ContentRecommender(FullSortRecommender):
    """A recommender whose item table is built by `item_repr` from `item_emb`, `code_emb` (modality ->
    embedding of its codes) and, with features, `feature_proj` (modality -> linear map), over `modalities`."""

    item_repr: str = "id"
    code_emb: nn.ModuleDict
    feature_proj: nn.ModuleDict

    def set_item_content(self, codes: dict[str, np.ndarray], features: dict[str, np.ndarray]) -> None:
        """The codes (int [n_items, k], -1 = none) and reduced features (float [n_items, reduced_dim], 0 = none) of
        every item, per modality. Not saved with the weights: set from the dataset, so that dropping a modality at
        test time applies."""
        device = self.item_emb.weight.device
        for m in self.modalities:
            item_codes = torch.as_tensor(codes[m], dtype=torch.long, device=device)  # [n_items, k]
            present = (item_codes >= 0).float()
            self.register_buffer(f"item_codes_{m}", item_codes, persistent=False)
            # the mean over an item's codes as one weighted embedding bag: weight 1 / count per present code
            self.register_buffer(
                f"code_weights_{m}", present / present.sum(1, keepdim=True).clamp(min=1), persistent=False
            )
            self.register_buffer(
                f"item_features_{m}", torch.as_tensor(features[m], dtype=torch.float32, device=device), persistent=False
            )

    def item_table(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """[n_items, d] (with `ids` [U]: only their rows, [U, d]) as `item_repr` says."""
        table = self.item_emb.weight if ids is None else self.item_emb(ids)
        if self.item_repr == "id":
            return table
        for m in self.modalities:
            codes, weights = getattr(self, f"item_codes_{m}"), getattr(self, f"code_weights_{m}")  # [n_items, k]
            if ids is not None:
                codes, weights = codes[ids], weights[ids]
            table = table + F.embedding_bag(
                codes.clamp(min=0), self.code_emb[m].weight, mode="sum", per_sample_weights=weights
            )  # [U, d]: the mean of its codes' rows
            if "features" in self.item_repr:
                features = getattr(self, f"item_features_{m}")
                table = table + self.feature_proj[m](features if ids is None else features[ids])  # zero rows stay 0
        return table
