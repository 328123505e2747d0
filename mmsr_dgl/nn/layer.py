"""One MMSR propagation layer: dual attention with asynchronous, non-invasive fusion and an update gate."""

from __future__ import annotations

import dgl
import torch
from torch import nn

from ..graph import MSGraphSchema, ViewKey, group_relations
from .attention import EdgeFeats, Feats, HeterogeneousAttention, HomogeneousAttention, attend
from .dropout import RandMaskDropout

FUSIONS = ("async", "homo_first", "hetero_first", "sync", "none")
Views = dict[ViewKey, dgl.DGLHeteroGraph | None]


class MMSRLayer(nn.Module):
    """Orders of update (fusion), each phase one `multi_update_all` on its group's view:
      homo_first    A: z = Homo(scores h, values h);   out = Hetero(scores z, values h)
      hetero_first  B: y = Hetero(scores h, values h); out = Homo(scores y, values h)
      async         both, mixed per node by an update gate softmax(W_t [A; B]) over the two orders
      sync          one softmax over all in-edges (the joint view), scores and values from h
      none          out = Homo(scores h, values h): item nodes only (no code nodes)
    The output is LayerNorm(h + dropout(out)) for the node types updated: all of them, or with `into` only that
    type (phase two then runs on the relations into it, and phase one on no more than phase two reads).
    """

    def __init__(
        self, schema: MSGraphSchema, dim: int, fusion: str = "async", dropout: float = 0.1, attn_dropout: float = 0.1
    ):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.schema, self.fusion = schema, fusion
        ntypes = schema.ntypes
        n_orders = 2 if fusion == "async" else 1
        # index i: the attentions of order A (i=0), or of order B (i=1, async only)
        self.homo = nn.ModuleList([HomogeneousAttention(schema.homogeneous, dim) for _ in range(n_orders)])
        self.hetero = nn.ModuleList(
            [HeterogeneousAttention(ntypes, dim) for _ in range(0 if fusion == "none" else n_orders)]
        )
        if fusion == "async":
            self.gate = nn.ModuleDict({t: nn.Linear(2 * dim, 2) for t in ntypes})
        self.norm = nn.ModuleDict({t: nn.LayerNorm(dim) for t in ntypes})
        self.dropout = RandMaskDropout(dropout)
        self.attn_dropout = RandMaskDropout(attn_dropout)
        self.trace: list[tuple[ViewKey, EdgeFeats]] | None = None  # a list: each phase appends its weights

    def _phase_views(self, first: str, second: str, into: str | None) -> tuple[ViewKey, ViewKey]:
        """The views of a two-phase order: phase two's relations end at `into`; phase one updates only `into`
        when that is all phase two reads (as sources and destinations), else every node."""
        sources = {src for src, _, _ in group_relations(self.schema, second, into)}
        return (first, into if sources <= {into} else None), (second, into)

    def views(self, into: str | None = None) -> set[ViewKey]:
        """The relation-group views `forward(..., into)` reads."""
        if self.fusion == "none":
            return {("homogeneous", into)}
        if self.fusion == "sync":
            return {("joint", into)}
        keys = set()
        if self.fusion in ("async", "homo_first"):
            keys.update(self._phase_views("homogeneous", "heterogeneous", into))
        if self.fusion in ("async", "hetero_first"):
            keys.update(self._phase_views("heterogeneous", "homogeneous", into))
        return keys

    def _phase(
        self,
        att: HomogeneousAttention | HeterogeneousAttention | _Joint,
        views: Views,
        key: ViewKey,
        scores: Feats,
        values: Feats,
    ) -> Feats:
        """One attention phase on the view `key`: the outputs [N_t, d] of the node types it updates (`key`'s
        destination type, or all); zero for nodes without in-edges, as a sum over no neighbours."""
        view = views[key]
        out, weights = {}, {}
        if view is not None:
            out, weights = attend(view, att.logits(view, scores), att.values(view, values), self.attn_dropout)
        if self.trace is not None:
            self.trace.append((key, weights))
        return {
            t: out[t] if t in out else torch.zeros_like(values[t]) for t in ([key[1]] if key[1] else self.schema.ntypes)
        }

    def homo_then_hetero(self, views: Views, h: Feats, into: str | None = None, i: int = 0) -> Feats:
        first, second = self._phase_views("homogeneous", "heterogeneous", into)
        z = self._phase(self.homo[i], views, first, h, h)
        return self._phase(self.hetero[i], views, second, {**h, **z}, h)

    def hetero_then_homo(self, views: Views, h: Feats, into: str | None = None, i: int = 0) -> Feats:
        first, second = self._phase_views("heterogeneous", "homogeneous", into)
        y = self._phase(self.hetero[i], views, first, h, h)
        return self._phase(self.homo[i], views, second, {**h, **y}, h)

    def _sync(self, views: Views, h: Feats, into: str | None) -> Feats:
        """One softmax over the joint view: homogeneous relations (the self-loops among them) score and carry as in
        their group, the heterogeneous ones as in theirs."""
        return self._phase(_Joint(self.schema, self.homo[0], self.hetero[0]), views, ("joint", into), h, h)

    def update(self, views: Views, h: Feats, into: str | None = None) -> tuple[Feats, Feats]:
        """(The updated node types -> [N_t, d], the async update gate per updated node type -> [N_t, 2] weights of
        orders A and B; empty for other fusions)."""
        gates = {}
        if self.fusion == "none":
            out = self._phase(self.homo[0], views, ("homogeneous", into), h, h)
        elif self.fusion == "homo_first":
            out = self.homo_then_hetero(views, h, into)
        elif self.fusion == "hetero_first":
            out = self.hetero_then_homo(views, h, into)
        elif self.fusion == "sync":
            out = self._sync(views, h, into)
        else:
            a, b = self.homo_then_hetero(views, h, into, 0), self.hetero_then_homo(views, h, into, 1)
            out = {}
            for t in a:
                gates[t] = torch.softmax(self.gate[t](torch.cat([a[t], b[t]], dim=-1)), dim=-1)  # [N_t, 2]
                out[t] = gates[t][:, :1] * a[t] + gates[t][:, 1:] * b[t]
        return {t: self.norm[t](h[t] + self.dropout(x)) for t, x in out.items()}, gates

    def forward(self, views: Views, h: Feats, into: str | None = None) -> Feats:
        return self.update(views, h, into)[0]


class _Joint:
    """The `sync` fusion's attention over the joint view: each relation scored and carried by its group's attention."""

    def __init__(self, schema: MSGraphSchema, homo: HomogeneousAttention, hetero: HeterogeneousAttention):
        self.schema, self.homo, self.hetero = schema, homo, hetero

    def _split(self, view: dgl.DGLHeteroGraph) -> tuple[list, list]:
        homo = [r for r in view.canonical_etypes if r in self.schema.homogeneous]
        return homo, [r for r in view.canonical_etypes if r not in homo]

    def logits(self, view: dgl.DGLHeteroGraph, s: Feats) -> EdgeFeats:
        homo, hetero = self._split(view)
        return {**self.homo.logits(view, s, homo), **self.hetero.logits(view, s, hetero)}

    def values(self, view: dgl.DGLHeteroGraph, h: Feats) -> EdgeFeats:
        homo, hetero = self._split(view)
        return {**self.homo.values(view, h, homo), **self.hetero.values(view, h, hetero)}
