"""A training/inference batch: the batched MSGraph, its two relation-group views, readout nodes, targets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import dgl
import numpy as np
import torch

from .msgraph import MSGraphSchema, collate_msgraphs, last_item_nodes


@dataclass
class MSGraphBatch:
    graph: dgl.DGLHeteroGraph  # all relations
    homo: dgl.DGLHeteroGraph  # view with the homogeneous relations only
    hetero: dgl.DGLHeteroGraph  # view with the heterogeneous relations (and self-loops) only
    last: torch.Tensor  # int64 [B]: item node of each history's most recent item
    seq: torch.Tensor  # int64 [B, max_len]: the histories, left-padded with 0
    targets: torch.Tensor | None = None  # int64 [B]

    def __len__(self) -> int:
        return len(self.last)


def make_batch(histories: Sequence[np.ndarray], codes: dict[str, np.ndarray], max_len: int,
               targets: np.ndarray | None = None) -> MSGraphBatch:
    """Build everything a model needs for these histories; graph construction happens here, never in forward."""
    schema = MSGraphSchema(tuple(codes))
    graph = collate_msgraphs(histories, codes, max_len)
    seq = np.zeros((len(histories), max_len), dtype=np.int64)
    for row, history in enumerate(histories):
        history = history[-max_len:]
        seq[row, max_len - len(history):] = history
    return MSGraphBatch(
        graph=graph,
        homo=dgl.edge_type_subgraph(graph, schema.homogeneous),
        hetero=dgl.edge_type_subgraph(graph, schema.heterogeneous),
        last=last_item_nodes(graph),
        seq=torch.from_numpy(seq),
        targets=None if targets is None else torch.as_tensor(np.asarray(targets), dtype=torch.int64))


def batch_to(batch: MSGraphBatch, device: torch.device | str) -> MSGraphBatch:
    """The same batch on another device."""
    move = (lambda x: None if x is None else x.to(device))
    return MSGraphBatch(graph=batch.graph.to(device), homo=batch.homo.to(device), hetero=batch.hetero.to(device),
                        last=batch.last.to(device), seq=batch.seq.to(device), targets=move(batch.targets))
