"""The MMSR recommender: node embeddings -> MMSR layers -> last-item readout -> scores over all items."""
from __future__ import annotations

import math
from dataclasses import dataclass

import dgl
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..graph import MSGraphSchema, ViewKey
from .batch import Batch
from .dropout import RandMaskDropout
from .layer import MMSRLayer
from .scoring import FullSortRecommender, Items, Query


@dataclass
class MMSRConfig:
    dim: int = 64
    n_layers: int = 1
    fusion: str = "async"  # async | homo_first | hetero_first | sync | id_only
    dropout: float = 0.2  # on node embeddings and on each layer's update
    attn_dropout: float = 0.1
    readout: str = "mixture"  # last: the last item's node (the paper) | last+pool: plus an attention pool |
    # mixture: the `last` and `last+pool` readouts as two queries whose softmaxes over the items are averaged
    # id: item embedding = id embedding (the paper) | id+codes: plus its mean code embedding per modality |
    # id+codes+features: plus a linear map of its reduced features per modality
    item_repr: str = "id+codes+features"
    temperature: float = 0.1  # 0: dot-product scores (the paper); > 0: cosine similarity / temperature


def _centroid_init(centroids: np.ndarray, dim: int, std: float) -> torch.Tensor:
    """Code embeddings from k-means centroids: their top principal directions, rescaled to `std`."""
    x = centroids - centroids.mean(0, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    proj = (u * s)[:, :dim]
    out = np.zeros((len(centroids), dim), dtype=np.float32)
    out[:, :proj.shape[1]] = proj / (proj.std() + 1e-8) * std
    return torch.from_numpy(out)


class AttentionPool(nn.Module):
    """SR-GNN's hybrid readout: W [h_last; sum_i a_i h_i] with a_i = w . sigmoid(W1 h_last + W2 h_i)."""

    def __init__(self, dim: int):
        super().__init__()
        self.query, self.key = nn.Linear(dim, dim), nn.Linear(dim, dim, bias=False)
        self.weight = nn.Linear(dim, 1, bias=False)
        self.out = nn.Linear(2 * dim, dim, bias=False)

    def forward(self, batch: Batch, items: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        g = batch.graph
        query = dgl.broadcast_nodes(g, self.query(last), ntype="item")  # [N_item, d]
        alpha = self.weight(torch.sigmoid(query + self.key(items)))  # [N_item, 1]
        with g.local_scope():
            g.nodes["item"].data["x"] = alpha * items
            pooled = dgl.sum_nodes(g, "x", ntype="item")  # [B, d]
        return self.out(torch.cat([last, pooled], dim=-1))


class MMSR(FullSortRecommender):
    """Model contract (RecBole's): forward(batch) -> [B, d]; calculate_loss(batch); full_sort_predict(batch).

    Scores cover item ids 0..n_items-1 where id 0 is padding and always scores -inf.
    """

    def __init__(self, config: MMSRConfig, n_items: int, max_len: int, modalities: dict[str, np.ndarray],
                 item_codes: dict[str, np.ndarray], item_features: dict[str, np.ndarray]):
        """modalities: modality -> k-means centroids [n_codes, reduced_dim] (ignored under fusion 'id_only');
        item_codes, item_features: modality -> [n_items, k] codes, [n_items, reduced_dim] reduced features of
        every item (see `set_item_content`)."""
        super().__init__()
        self.config = config
        self.temperature = config.temperature
        if config.fusion == "id_only":
            modalities = {}
        self.modalities = sorted(modalities)
        self.schema = MSGraphSchema(tuple(self.modalities))
        d, std = config.dim, 0.02
        self.item_emb = nn.Embedding(n_items, d, padding_idx=0)
        nn.init.normal_(self.item_emb.weight, std=std)
        self.code_emb = nn.ModuleDict()
        for m in self.modalities:
            centroids = modalities[m]
            emb = nn.Embedding(len(centroids), d)
            emb.weight.data.copy_(_centroid_init(centroids, d, std))
            self.code_emb[m] = emb
        self.type_emb = nn.Embedding(len(self.schema.ntypes), d)
        nn.init.normal_(self.type_emb.weight, std=std)
        self.pos_emb = nn.Parameter(torch.randn(max_len, d) * std)
        # without modality nodes only the homogeneous group has edges other than self-loops: the item-graph path
        fusion = "homo_only" if not self.modalities else config.fusion
        self.layers = nn.ModuleList([MMSRLayer(self.schema, d, fusion, config.dropout, config.attn_dropout)
                                     for _ in range(config.n_layers)])
        self.input_norm = nn.LayerNorm(d)
        self.dropout = RandMaskDropout(config.dropout)
        if config.readout != "last":
            self.pool = AttentionPool(d)
        if "features" in config.item_repr:
            self.feature_proj = nn.ModuleDict({m: nn.Linear(modalities[m].shape[1], d, bias=False)
                                               for m in self.modalities})
        self.set_item_content(item_codes, item_features)

    def set_item_content(self, codes: dict[str, np.ndarray], features: dict[str, np.ndarray]) -> None:
        """The codes (int [n_items, k], -1 = none) and reduced features (float [n_items, reduced_dim], 0 = none) of
        every item, per modality, read by `item_repr`. Not saved with the weights: set from the dataset, so that
        dropping a modality at test time applies."""
        device = self.item_emb.weight.device
        for m in self.modalities:
            item_codes = torch.as_tensor(codes[m], dtype=torch.long, device=device)  # [n_items, k]
            present = (item_codes >= 0).float()
            self.register_buffer(f"item_codes_{m}", item_codes, persistent=False)
            # the mean over an item's codes as one weighted embedding bag: weight 1 / count per present code
            self.register_buffer(f"code_weights_{m}", present / present.sum(1, keepdim=True).clamp(min=1),
                                 persistent=False)
            self.register_buffer(f"item_features_{m}", torch.as_tensor(features[m], dtype=torch.float32,
                                                                       device=device), persistent=False)

    def item_table(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """[n_items, d] (with `ids` [U]: only their rows, [U, d]): id embeddings, plus (item_repr 'id+codes') the
        mean code embedding per modality, plus ('id+codes+features') a linear map of the reduced features per
        modality."""
        table = self.item_emb.weight if ids is None else self.item_emb(ids)
        if self.config.item_repr == "id":
            return table
        for m in self.modalities:
            codes, weights = getattr(self, f"item_codes_{m}"), getattr(self, f"code_weights_{m}")  # [n_items, k]
            if ids is not None:
                codes, weights = codes[ids], weights[ids]
            table = table + F.embedding_bag(codes.clamp(min=0), self.code_emb[m].weight, mode="sum",
                                            per_sample_weights=weights)  # [U, d]: the mean of its codes' rows
            if "features" in self.config.item_repr:
                features = getattr(self, f"item_features_{m}")
                table = table + self.feature_proj[m](features if ids is None else features[ids])  # zero rows stay 0
        return table

    def node_inputs(self, batch: Batch, items: Items) -> dict[str, torch.Tensor]:
        """Per node type [N_t, d]: item (a row of `items`) or code embedding + type embedding + mean embedding of
        its positions."""
        h = {}
        for k, t in enumerate(self.schema.ntypes):
            data = batch.graph.nodes[t].data
            ids = data["id"]
            pos = data["pos"]  # [N_t, max_len] multi-hot, column 0 = most recent
            emb = items[ids] if t == "item" else self.code_emb[t](ids)
            x = emb + self.type_emb.weight[k] + (pos @ self.pos_emb) / pos.sum(1, keepdim=True)
            h[t] = self.dropout(self.input_norm(x))
        return h

    def graph_spec(self, all_nodes: bool = False) -> tuple[list[str], set[ViewKey]]:
        views = set().union(*(layer.views() for layer in self.layers[:-1]), self.layers[-1].views("item"))
        return self.modalities, views | (self.layers[-1].views() if all_nodes else set())

    def encode(self, batch: Batch, items: Items) -> Query:
        h = self.node_inputs(batch, items)
        for k, layer in enumerate(self.layers):
            h = {**h, **layer(batch.views, h, "item" if k == len(self.layers) - 1 else None)}  # the last: items only
        return self.readout(batch, h["item"])

    def readout(self, batch: Batch, items: torch.Tensor) -> Query:
        """The query (or the mixture's two queries) from the item nodes' last states [N_item, d]."""
        last = items[batch.last]  # [B, d]
        if self.config.readout == "last":
            return last
        pooled = self.pool(batch, items, last)  # [B, d]
        if self.config.readout == "mixture":
            return torch.stack([last, pooled], dim=1), last.new_full((len(last), 2), math.log(0.5))  # [B, 2, d]
        return pooled

    @torch.no_grad()
    def explain(self, batch: Batch) -> list[dict]:
        """What each layer computed, as in the forward pass (the last layer updates the item nodes only): {"gates": node
        type -> [N_t, 2], the update gate's weights of orders A and B for the types the layer updates (fusion async;
        empty otherwise), "attention": [(view key, relation -> [E_r, 1] weights), ...], one entry per phase in the
        order they ran}. The batch needs the views of `graph_spec()`."""
        h = self.node_inputs(batch, self.item_table())
        out = []
        for k, layer in enumerate(self.layers):
            layer.trace = []
            try:
                updated, gates = layer.update(batch.views, h, "item" if k == len(self.layers) - 1 else None)
                h = {**h, **updated}
                out.append({"gates": gates, "attention": layer.trace})
            finally:
                layer.trace = None
        return out

    def gates(self, batch: Batch) -> list[dict[str, torch.Tensor]]:
        """Per layer, updated node type -> [N_t, 2]: the update gate's weights (see `explain`)."""
        return [layer["gates"] for layer in self.explain(batch)]
