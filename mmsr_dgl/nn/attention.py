"""The two attentions of MMSR's dual attention, each run on one relation-group view of the batched MSGraph.

A phase reads *score* features `s` and *value* features `h` (node type -> [N_t, d]): per-relation logits from `s`
(`apply_edges`), one `edge_softmax` over the view, so that each node's weights span exactly its group's in-edges,
then one `multi_update_all` that sums weight * value over all the view's relations. Keeping `s` and `h` apart is
what makes the fusion non-invasive: phase two scores with phase one's output but aggregates the unfused values.
"""

from __future__ import annotations

import math

import dgl
import dgl.function as fn
import torch
from dgl.nn.functional import edge_softmax
from torch import nn

from ..graph import CanonicalEType

Feats = dict[str, torch.Tensor]  # node type -> [N_t, d]
EdgeFeats = dict[CanonicalEType, torch.Tensor]  # relation -> [E_r, 1] (logits, weights) or [N_src, d] (values)


def _name(rel: CanonicalEType) -> str:
    return "|".join(rel)


class HomogeneousAttention(nn.Module):
    """Content-based: logit(u -> v) = a_r . (s_u * s_v), one learned vector a_r per relation; values h_u.

    Unlike the heterogeneous attention, no 1/sqrt(d) and no value projection, as the paper has it: a_r starts at
    scale 1/sqrt(d) and is learned, so it sets the logits' scale itself, and the neighbours' own states are what
    the update adds. Adding both was measured on Toys (benchmarks/NOTES.md, "Homogeneous attention"): validation
    NDCG@10 0.0880 against 0.0888-0.0891 for the three seeds of the default, so the simpler form stays.
    """

    def __init__(self, relations: list[CanonicalEType], dim: int):
        super().__init__()
        self.vectors = nn.ParameterDict({_name(r): nn.Parameter(torch.randn(dim) / math.sqrt(dim)) for r in relations})

    def logits(self, view: dgl.DGLHeteroGraph, s: Feats, rels: list[CanonicalEType] | None = None) -> EdgeFeats:
        out = {}
        with view.local_scope():
            for rel in view.canonical_etypes if rels is None else rels:
                src, _, dst = rel
                view.nodes[src].data["k"] = s[src] * self.vectors[_name(rel)]  # [N_src, d]: the relation's own key
                view.nodes[dst].data["q"] = s[dst]  # [N_dst, d]
                view.apply_edges(fn.u_dot_v("k", "q", "logit"), etype=rel)
                out[rel] = view.edges[rel].data["logit"]  # [E_r, 1]
        return out

    def values(self, view: dgl.DGLHeteroGraph, h: Feats, rels: list[CanonicalEType] | None = None) -> EdgeFeats:
        return {rel: h[rel[0]] for rel in (view.canonical_etypes if rels is None else rels)}


class HeterogeneousAttention(nn.Module):
    """Type-specific transforms: logit(u -> v) = (Q_tv s_v) . (K_tu s_u) / sqrt(d); values V_tu h_u."""

    def __init__(self, ntypes: list[str], dim: int):
        super().__init__()
        self.scale = 1.0 / math.sqrt(dim)
        self.query = nn.ModuleDict({t: nn.Linear(dim, dim, bias=False) for t in ntypes})
        self.key = nn.ModuleDict({t: nn.Linear(dim, dim, bias=False) for t in ntypes})
        self.value = nn.ModuleDict({t: nn.Linear(dim, dim, bias=False) for t in ntypes})

    def logits(self, view: dgl.DGLHeteroGraph, s: Feats, rels: list[CanonicalEType] | None = None) -> EdgeFeats:
        rels = view.canonical_etypes if rels is None else rels
        with view.local_scope():
            for t in {src for src, _, _ in rels}:
                view.nodes[t].data["k"] = self.key[t](s[t])  # [N_t, d]
            for t in {dst for _, _, dst in rels}:
                view.nodes[t].data["q"] = self.query[t](s[t]) * self.scale  # [N_t, d]
            for rel in rels:
                view.apply_edges(fn.u_dot_v("k", "q", "logit"), etype=rel)
            return {rel: view.edges[rel].data["logit"] for rel in rels}  # [E_r, 1] each

    def values(self, view: dgl.DGLHeteroGraph, h: Feats, rels: list[CanonicalEType] | None = None) -> EdgeFeats:
        rels = view.canonical_etypes if rels is None else rels
        value = {t: self.value[t](h[t]) for t in {src for src, _, _ in rels}}  # [N_t, d]
        return {rel: value[rel[0]] for rel in rels}


def attend(
    view: dgl.DGLHeteroGraph, logits: EdgeFeats, values: EdgeFeats, dropout: nn.Module
) -> tuple[Feats, EdgeFeats]:
    """Softmax the logits over all in-edges of each node in the view, then one `multi_update_all`: each destination
    node receives the weighted sum of its in-neighbours' values, summed over relations. Returns the destination
    types' outputs [N_t, d] and the attention weights [E_r, 1] (before dropout)."""
    if len(view.canonical_etypes) == 1:  # a one-relation graph: DGL's edge_softmax takes the tensor itself
        (rel,) = view.canonical_etypes
        weights = {rel: edge_softmax(view, logits[rel])}
    else:
        weights = edge_softmax(view, logits)  # relation -> [E_r, 1], summing to 1 over each node's in-edges
    with view.local_scope():
        funcs = {}
        for i, rel in enumerate(view.canonical_etypes):
            view.nodes[rel[0]].data[f"v{i}"] = values[rel]  # [N_src, d]
            view.edges[rel].data["a"] = dropout(weights[rel])  # [E_r, 1]
            funcs[rel] = (fn.u_mul_e(f"v{i}", "a", "m"), fn.sum("m", "out"))
        view.multi_update_all(funcs, "sum")
        return {t: view.nodes[t].data["out"] for t in {dst for _, _, dst in view.canonical_etypes}}, weights
