"""A training/inference batch: the batched MSGraph, its relation groups, readout nodes, targets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import dgl
import numpy as np
import torch

from .groups import RelationGroup, relation_group
from .msgraph import MSGraphSchema, collate_msgraphs, last_item_nodes


@dataclass
class MSGraphBatch:
    graph: dgl.DGLHeteroGraph  # all relations
    homo: RelationGroup  # the homogeneous relations
    hetero: RelationGroup  # the heterogeneous relations (self-loops first)
    joint: RelationGroup  # the homogeneous relations, then the heterogeneous ones but the self-loops (for 'sync')
    last: torch.Tensor  # int64 [B]: item node of each history's most recent item
    seq: torch.Tensor  # int64 [B, max_len]: the histories, left-padded with 0
    targets: torch.Tensor | None = None  # int64 [B]
    seen: torch.Tensor | None = None  # int64 [B, S]: every item of the untruncated histories, 0-padded

    def __len__(self) -> int:
        return len(self.last)


def pad_left(histories: Sequence[np.ndarray], width: int | None = None) -> torch.Tensor:
    """int64 [B, width] with each history right-aligned (most recent item last) and 0-padded on the left."""
    width = width or max(len(h) for h in histories)
    out = np.zeros((len(histories), width), dtype=np.int64)
    for row, history in enumerate(histories):
        history = history[-width:]
        out[row, width - len(history):] = history
    return torch.from_numpy(out)


def make_batch(histories: Sequence[np.ndarray], codes: dict[str, np.ndarray], max_len: int,
               targets: np.ndarray | None = None, seen: Sequence[np.ndarray] | None = None) -> MSGraphBatch:
    """Build everything a model needs for these histories; graph construction happens here, never in forward."""
    schema = MSGraphSchema(tuple(codes))
    graph = collate_msgraphs(histories, codes, max_len)
    return MSGraphBatch(
        graph=graph,
        homo=relation_group(graph, schema.homogeneous, schema.ntypes),
        hetero=relation_group(graph, schema.heterogeneous, schema.ntypes),
        joint=relation_group(graph, schema.homogeneous + [r for r in schema.heterogeneous if r[1] != "self"],
                             schema.ntypes),
        last=last_item_nodes(graph),
        seq=pad_left(histories, max_len),
        targets=None if targets is None else torch.as_tensor(np.asarray(targets), dtype=torch.int64),
        seen=None if seen is None else pad_left(seen))


def batch_to(batch: MSGraphBatch, device: torch.device | str) -> MSGraphBatch:
    """The same batch on another device."""
    def move(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.to(device)

    return MSGraphBatch(graph=batch.graph.to(device), homo=batch.homo.to(device), hetero=batch.hetero.to(device),
                        joint=batch.joint.to(device), last=batch.last.to(device), seq=batch.seq.to(device),
                        targets=move(batch.targets), seen=move(batch.seen))
