"""From a history's final states to the query the items are scored with (`readout`).

last       the most recent item's state (the paper)
last+pool  SR-GNN's hybrid: W [h_last; sum_i a_i h_i] with a_i = w . sigmoid(W1 h_last + W2 h_i)
mixture    `last` and `last+pool` as two queries whose softmaxes over the items are averaged
"""

from __future__ import annotations

import math

import dgl
import torch
from torch import nn

from .scoring import Query

READOUTS = ("last", "last+pool", "mixture")


class AttentionPool(nn.Module):
    """The attention pool of `last+pool`, over a graph's item nodes or over a sequence's positions."""

    def __init__(self, dim: int):
        super().__init__()
        self.query, self.key = nn.Linear(dim, dim), nn.Linear(dim, dim, bias=False)
        self.weight = nn.Linear(dim, 1, bias=False)
        self.out = nn.Linear(2 * dim, dim, bias=False)

    def over_graph(self, graph: dgl.DGLHeteroGraph, items: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """[B, d] from the item nodes' states [N_item, d] of each batched graph and its last item's [B, d]."""
        query = dgl.broadcast_nodes(graph, self.query(last), ntype="item")  # [N_item, d]
        alpha = self.weight(torch.sigmoid(query + self.key(items)))  # [N_item, 1]
        with graph.local_scope():
            graph.nodes["item"].data["x"] = alpha * items
            pooled = dgl.sum_nodes(graph, "x", ntype="item")  # [B, d]
        return self.out(torch.cat([last, pooled], dim=-1))

    def over_positions(self, states: torch.Tensor, last: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """[..., d] from position states [B, L, d], queries [B, Q, d] (a query per position, or the last one) and
        which positions each query reads, allowed [B, Q, L] (bool)."""
        keys = self.key(states)[:, None]  # [B, 1, L, d]
        alpha = self.weight(torch.sigmoid(self.query(last)[:, :, None] + keys))[..., 0]  # [B, Q, L]
        pooled = (alpha * allowed) @ states  # [B, Q, d]
        return self.out(torch.cat([last, pooled], dim=-1))


def query(readout: str, last: torch.Tensor, pooled: torch.Tensor | None) -> Query:
    """The query of `readout` from the last state [N, d] and the pool's output [N, d] (None under `last`)."""
    if readout == "last":
        return last
    if readout == "mixture":
        return torch.stack([last, pooled], dim=1), last.new_full((len(last), 2), math.log(0.5))  # [N, 2, d]
    return pooled
