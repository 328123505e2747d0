"""The MMSR recommender: node embeddings -> MMSR layers -> last-item readout -> scores over all items."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..graph import MSGraphSchema, ViewKey
from . import readout
from .batch import Batch
from .content import ContentRecommender, code_embeddings, feature_maps
from .dropout import RandMaskDropout
from .layer import MMSRLayer
from .scoring import Items, Query


@dataclass
class MMSRConfig:
    dim: int = 64
    n_layers: int = 1
    fusion: str = "async"  # one of layer.FUSIONS; none: no code nodes (item nodes only)
    dropout: float = 0.2  # on node embeddings and on each layer's update
    attn_dropout: float = 0.1
    readout: str = "mixture"  # one of readout.READOUTS; the paper: last
    item_repr: str = "id+codes+features"  # one of content.ITEM_REPRS; the paper: id
    temperature: float = 0.1  # 0: dot-product scores (the paper); > 0: cosine similarity / temperature


class MMSR(ContentRecommender):
    """Model contract (RecBole's): forward(batch) -> [B, d]; calculate_loss(batch); full_sort_predict(batch).

    Scores cover item ids 0..n_items-1 where id 0 is padding and always scores -inf.
    """

    def __init__(
        self,
        config: MMSRConfig,
        n_items: int,
        max_len: int,
        modalities: dict[str, np.ndarray],
        item_codes: dict[str, np.ndarray],
        item_features: dict[str, np.ndarray],
    ):
        """modalities: modality -> k-means centroids [n_codes, reduced_dim]: the code nodes of the graph (none
        under fusion 'none') and the content of the item table (`item_repr`); item_codes, item_features: modality ->
        [n_items, k] codes, [n_items, reduced_dim] reduced features of every item (see `set_item_content`)."""
        super().__init__()
        self.config = config
        self.temperature, self.item_repr = config.temperature, config.item_repr
        graph_modalities = [] if config.fusion == "none" else sorted(modalities)
        if not graph_modalities and config.item_repr == "id":
            modalities = {}  # no content anywhere
        self.modalities = sorted(modalities)
        self.schema = MSGraphSchema(tuple(graph_modalities))
        d, std = config.dim, 0.02
        self.item_emb = nn.Embedding(n_items, d, padding_idx=0)
        nn.init.normal_(self.item_emb.weight, std=std)
        self.code_emb = code_embeddings(modalities, d, std)
        self.type_emb = nn.Embedding(len(self.schema.ntypes), d)
        nn.init.normal_(self.type_emb.weight, std=std)
        self.pos_emb = nn.Parameter(torch.randn(max_len, d) * std)
        # without code nodes only the homogeneous group has edges other than self-loops: the item-graph path
        fusion = config.fusion if graph_modalities else "none"
        self.layers = nn.ModuleList(
            [MMSRLayer(self.schema, d, fusion, config.dropout, config.attn_dropout) for _ in range(config.n_layers)]
        )
        self.input_norm = nn.LayerNorm(d)
        self.dropout = RandMaskDropout(config.dropout)
        if config.readout != "last":
            self.pool = readout.AttentionPool(d)
        if "features" in config.item_repr:
            self.feature_proj = feature_maps(modalities, d)
        self.set_item_content(item_codes, item_features)

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
        return list(self.schema.modalities), views | (self.layers[-1].views() if all_nodes else set())

    def encode(self, batch: Batch, items: Items) -> Query:
        h = self.node_inputs(batch, items)
        for k, layer in enumerate(self.layers):
            h = {**h, **layer(batch.views, h, "item" if k == len(self.layers) - 1 else None)}  # the last: items only
        last = h["item"][batch.last]  # [B, d]
        pooled = None if self.config.readout == "last" else self.pool.over_graph(batch.graph, h["item"], last)
        return readout.query(self.config.readout, last, pooled)

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
