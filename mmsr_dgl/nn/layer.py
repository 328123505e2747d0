"""One MMSR propagation layer: dual attention with asynchronous, non-invasive fusion and an update gate."""
from __future__ import annotations

import torch
from torch import nn

from ..graph import MSGraphBatch, MSGraphSchema
from .attention import Feats, HeterogeneousAttention, HomogeneousAttention, attend
from .dropout import RandMaskDropout

FUSIONS = ("async", "homo_first", "hetero_first", "sync", "homo_only")


class MMSRLayer(nn.Module):
    """Orders of update (fusion):
      homo_first    A: z = Homo(scores h, values h);   out = Hetero(scores z, values h)
      hetero_first  B: y = Hetero(scores h, values h); out = Homo(scores y, values h)
      async         both, mixed per node by an update gate softmax(W_t [A; B]) over the two orders
      sync          one softmax over all in-edges (both groups), scores and values from h
      homo_only     out = Homo(scores h, values h): for graphs without modality nodes (the id_only ablation)
    Each phase is one softmax and one message-passing call over its relation group's flat graph
    (`RelationGroup`). The output is LayerNorm(h + dropout(out)).
    """

    def __init__(self, schema: MSGraphSchema, dim: int, fusion: str = "async", dropout: float = 0.1,
                 attn_dropout: float = 0.1):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.fusion = fusion
        ntypes = schema.ntypes
        n_copies = 2 if fusion == "async" else 1
        # index i: the attention used in order A (i=0) or B (i=1 under async) for that group
        self.homo = nn.ModuleList([HomogeneousAttention(schema.homogeneous, dim) for _ in range(n_copies)])
        self.hetero = nn.ModuleList([HeterogeneousAttention(ntypes, dim)
                                     for _ in range(0 if fusion == "homo_only" else n_copies)])
        if fusion == "async":
            self.gate = nn.ModuleDict({t: nn.Linear(2 * dim, 2) for t in ntypes})
        self.norm = nn.ModuleDict({t: nn.LayerNorm(dim) for t in ntypes})
        self.dropout = RandMaskDropout(dropout)
        self.attn_dropout = RandMaskDropout(attn_dropout)
        self.gates: Feats = {}  # node type -> [N_t, 2] gate values of the last forward (async only)

    def _homo(self, i: int, batch: MSGraphBatch, scores: Feats, values: Feats) -> Feats:
        att = self.homo[i]
        return attend(batch.homo, att.logits(batch.homo, scores), att.values(batch.homo, values), self.attn_dropout)

    def _hetero(self, i: int, batch: MSGraphBatch, scores: Feats, values: Feats) -> Feats:
        att = self.hetero[i]
        return attend(batch.hetero, att.logits(batch.hetero, scores), att.values(batch.hetero, values),
                      self.attn_dropout)

    def order_homo_hetero(self, batch: MSGraphBatch, h: Feats, i: int = 0) -> Feats:
        z = self._homo(i, batch, h, h)
        return self._hetero(i, batch, z, h)

    def order_hetero_homo(self, batch: MSGraphBatch, h: Feats, i: int = 0) -> Feats:
        y = self._hetero(i, batch, h, h)
        return self._homo(i, batch, y, h)

    def _sync(self, batch: MSGraphBatch, h: Feats) -> Feats:
        """One softmax over all in-edges (batch.joint: the homogeneous group, then the heterogeneous one without
        its self-loops); homogeneous edges score and carry as in their group, heterogeneous ones likewise."""
        homo, hetero = self.homo[0], self.hetero[0]
        edges, slots = batch.hetero.span(batch.joint.relations[len(batch.homo.relations):])
        logits = torch.cat([homo.logits(batch.homo, h), hetero.logits(batch.hetero, h)[edges]])  # [E_joint, 1]
        values = torch.cat([homo.values(batch.homo, h), hetero.values(batch.hetero, h)[slots]])  # [S_joint, d]
        return attend(batch.joint, logits, values, self.attn_dropout)

    def forward(self, batch: MSGraphBatch, h: Feats) -> Feats:
        self.gates = {}
        if self.fusion == "homo_only":
            out = self._homo(0, batch, h, h)
        elif self.fusion == "homo_first":
            out = self.order_homo_hetero(batch, h)
        elif self.fusion == "hetero_first":
            out = self.order_hetero_homo(batch, h)
        elif self.fusion == "sync":
            out = self._sync(batch, h)
        else:
            a, b = self.order_homo_hetero(batch, h, 0), self.order_hetero_homo(batch, h, 1)
            out = {}
            for t in a:
                gate = torch.softmax(self.gate[t](torch.cat([a[t], b[t]], dim=-1)), dim=-1)  # [N_t, 2]
                self.gates[t] = gate.detach()
                out[t] = gate[:, :1] * a[t] + gate[:, 1:] * b[t]
        return {t: self.norm[t](h[t] + self.dropout(out[t])) if t in out else h[t] for t in h}
