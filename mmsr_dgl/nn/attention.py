"""The two attentions of MMSR's dual attention, written as score functions plus one aggregation routine.

Each attention gives, over one relation group (`RelationGroup`), edge logits computed from *score* features and
the values its source slots send, computed from *value* features. Keeping the two inputs apart is what makes the
non-invasive fusion possible: phase two scores with the phase-one output but aggregates the unfused values.
"""
from __future__ import annotations

import math

import dgl
import torch
from dgl.nn.functional import edge_softmax
from torch import nn

from ..graph import CanonicalEType, Feats, RelationGroup


class HomogeneousAttention(nn.Module):
    """Content-based: logit(u -> v) = a_r . (h_u * h_v), one learned vector a_r per relation; values h_u."""

    def __init__(self, relations: list[CanonicalEType], dim: int):
        super().__init__()
        self.vectors = nn.ParameterDict({"|".join(r): nn.Parameter(torch.randn(dim) / math.sqrt(dim))
                                         for r in relations})

    def logits(self, group: RelationGroup, h: Feats) -> torch.Tensor:
        keys = torch.cat([h[rel[0]] * self.vectors["|".join(rel)] for rel in group.relations])  # [S, d]
        return dgl.ops.u_dot_v(group.graph, keys, group.nodes(h))  # queries [N, d] -> [E, 1]

    def values(self, group: RelationGroup, h: Feats) -> torch.Tensor:
        return group.sources(h)  # [S, d]


class HeterogeneousAttention(nn.Module):
    """Type-specific transforms: logit(u -> v) = (Q_tv h_v) . (K_tu h_u) / sqrt(d); values V_tu h_u."""

    def __init__(self, ntypes: list[str], dim: int):
        super().__init__()
        self.scale = 1.0 / math.sqrt(dim)
        self.query = nn.ModuleDict({t: nn.Linear(dim, dim, bias=False) for t in ntypes})
        self.key = nn.ModuleDict({t: nn.Linear(dim, dim, bias=False) for t in ntypes})
        self.value = nn.ModuleDict({t: nn.Linear(dim, dim, bias=False) for t in ntypes})

    def logits(self, group: RelationGroup, h: Feats) -> torch.Tensor:
        queries = group.nodes({t: self.query[t](x) * self.scale for t, x in h.items()})  # [N, d]
        keys = group.sources({t: self.key[t](x) for t, x in h.items()})  # [S, d]
        return dgl.ops.u_dot_v(group.graph, keys, queries)  # [E, 1]

    def values(self, group: RelationGroup, h: Feats) -> torch.Tensor:
        return group.sources({t: self.value[t](x) for t, x in h.items()})  # [S, d]


def attend(group: RelationGroup, logits: torch.Tensor, values: torch.Tensor, dropout: nn.Module) -> Feats:
    """Softmax the logits [E, 1] over all in-edges of each node in the group, then sum the weighted values
    [S, d] of the source slots: one message-passing call over the whole group."""
    weights = dropout(edge_softmax(group.graph, logits))  # [E, 1]
    return group.split(dgl.ops.u_mul_e_sum(group.graph, values, weights))  # node type -> [N_t, d]
