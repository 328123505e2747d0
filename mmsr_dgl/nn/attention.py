"""The two attentions of MMSR's dual attention, written as score functions plus one aggregation routine.

Each attention gives, per relation, edge logits computed from *score* features and, per node type, the
values sent along edges computed from *value* features. Keeping the two inputs apart is what makes the
non-invasive fusion possible: phase two scores with the phase-one output but aggregates the unfused values.
"""
from __future__ import annotations

import math

import dgl
import dgl.function as fn
import torch
from dgl.nn.functional import edge_softmax
from torch import nn

Feats = dict[str, torch.Tensor]  # node type -> [N_type, d]
EType = tuple[str, str, str]


class HomogeneousAttention(nn.Module):
    """Content-based: logit(u -> v) = a_r . (h_u * h_v), one learned vector a_r per relation; values h_u."""

    def __init__(self, relations: list[EType], dim: int):
        super().__init__()
        self.relations = relations
        self.vectors = nn.ParameterDict({"|".join(r): nn.Parameter(torch.randn(dim) / math.sqrt(dim))
                                         for r in relations})

    def logits(self, g: dgl.DGLHeteroGraph, h: Feats) -> dict[EType, torch.Tensor]:
        out, present = {}, set(g.canonical_etypes)
        with g.local_scope():
            for rel in self.relations:
                src, _, dst = rel
                if rel not in present:
                    continue
                g.srcnodes[src].data["k"] = h[src] * self.vectors["|".join(rel)]  # [N_src, d]
                g.dstnodes[dst].data["q"] = h[dst]
                g.apply_edges(fn.u_dot_v("k", "q", "e"), etype=rel)
                out[rel] = g.edges[rel].data["e"]  # [E, 1]
        return out

    def values(self, h: Feats) -> Feats:
        return h


class HeterogeneousAttention(nn.Module):
    """Type-specific transforms: logit(u -> v) = (Q_tv h_v) . (K_tu h_u) / sqrt(d); values V_tu h_u."""

    def __init__(self, relations: list[EType], ntypes: list[str], dim: int):
        super().__init__()
        self.relations = relations
        self.scale = 1.0 / math.sqrt(dim)
        self.query = nn.ModuleDict({t: nn.Linear(dim, dim, bias=False) for t in ntypes})
        self.key = nn.ModuleDict({t: nn.Linear(dim, dim, bias=False) for t in ntypes})
        self.value = nn.ModuleDict({t: nn.Linear(dim, dim, bias=False) for t in ntypes})

    def logits(self, g: dgl.DGLHeteroGraph, h: Feats) -> dict[EType, torch.Tensor]:
        out, present = {}, set(g.canonical_etypes)
        with g.local_scope():
            for t in g.ntypes:
                if g.num_nodes(t):
                    g.nodes[t].data["q"] = self.query[t](h[t]) * self.scale  # [N_t, d]
                    g.nodes[t].data["k"] = self.key[t](h[t])  # [N_t, d]
            for rel in self.relations:
                if rel in present:
                    g.apply_edges(fn.u_dot_v("k", "q", "e"), etype=rel)
                    out[rel] = g.edges[rel].data["e"]  # [E, 1]
        return out

    def values(self, h: Feats) -> Feats:
        return {t: self.value[t](x) for t, x in h.items()}


def attend(g: dgl.DGLHeteroGraph, logits: dict[EType, torch.Tensor], values: Feats, dropout: nn.Module,
           alt_values: Feats | None = None, alt_relations: frozenset[EType] = frozenset()) -> Feats:
    """Softmax the logits over ALL in-edges of each node in `g` (one group), then sum the weighted values.

    `g` must hold exactly the relations of one softmax group, each with edges (see `make_batch`): DGL's
    edge_softmax on a heterograph normalises over every edge type entering a node. Relations in
    `alt_relations` send `alt_values` instead of `values`.
    One `multi_update_all` call aggregates all relations.
    """
    present = g.canonical_etypes
    if len(present) == 1:  # on a single-relation graph edge_softmax takes and returns a plain tensor
        weights = {present[0]: edge_softmax(g, logits[present[0]])}
    else:
        weights = edge_softmax(g, logits)
    with g.local_scope():
        for name, feats in (("v", values), ("w", alt_values or {})):
            for t, x in feats.items():
                if t in g.ntypes and g.num_nodes(t):
                    g.nodes[t].data[name] = x
        funcs = {}
        for rel, a in weights.items():
            g.edges[rel].data["a"] = dropout(a)
            funcs[rel] = (fn.u_mul_e("w" if rel in alt_relations else "v", "a", "m"), fn.sum("m", "out"))
        g.multi_update_all(funcs, "sum")
        return {t: g.nodes[t].data["out"] for t in g.ntypes if "out" in g.nodes[t].data}
