"""A batch as the models read it: left-padded sequences, and for graph models the batched MSGraph with the
relation-group views their layers use. Graphs are built here, never in `forward`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import dgl
import numpy as np
import torch

from ..graph import MSGraphSchema, ViewKey, collate_msgraphs, group_views, last_item_nodes


@dataclass
class Batch:
    seq: torch.Tensor  # int64 [B, max_len]: the histories, left-padded with 0
    graph: dgl.DGLHeteroGraph | None = None  # the batched MSGraph (None for models that read only `seq`)
    views: dict[ViewKey, dgl.DGLHeteroGraph | None] = field(default_factory=dict)  # relation-group views of `graph`
    last: torch.Tensor | None = None  # int64 [B]: item node of each history's most recent item
    targets: torch.Tensor | None = None  # int64 [B]
    seen: torch.Tensor | None = None  # int64 [B, S]: every item of the untruncated histories, 0-padded

    def item_ids(self) -> torch.Tensor:
        """int64: the item ids the batch's inputs hold (the graph's item nodes, or the padded sequences)."""
        return self.seq.reshape(-1) if self.graph is None else self.graph.nodes["item"].data["id"]

    def __len__(self) -> int:
        return len(self.seq)

    def to(self, device: torch.device | str) -> Batch:
        def move(x):
            return None if x is None else x.to(device)

        return replace(
            self,
            seq=self.seq.to(device),
            graph=move(self.graph),
            last=move(self.last),
            views={k: move(v) for k, v in self.views.items()},
            targets=move(self.targets),
            seen=move(self.seen),
        )


def pad_left(histories: Sequence[np.ndarray], width: int | None = None) -> torch.Tensor:
    """int64 [B, width] with each history right-aligned (most recent item last) and 0-padded on the left."""
    width = width or max(len(h) for h in histories)
    out = np.zeros((len(histories), width), dtype=np.int64)
    for row, history in enumerate(histories):
        history = history[-width:]
        out[row, width - len(history) :] = history
    return torch.from_numpy(out)


def make_batch(
    histories: Sequence[np.ndarray],
    max_len: int,
    codes: dict[str, np.ndarray] | None = None,
    views: set[ViewKey] = frozenset(),
    targets: np.ndarray | None = None,
    seen: Sequence[np.ndarray] | None = None,
) -> Batch:
    """A batch of these histories; with `codes` (modality -> [n_items, k] code table; {} for an item-only graph)
    also their batched MSGraph and the named relation-group views of it."""
    batch = Batch(
        seq=pad_left(histories, max_len),
        targets=None if targets is None else torch.as_tensor(np.asarray(targets), dtype=torch.int64),
        seen=None if seen is None else pad_left(seen),
    )
    if codes is None:
        return batch
    graph = collate_msgraphs(histories, codes, max_len)
    return replace(
        batch, graph=graph, views=group_views(graph, MSGraphSchema(tuple(codes)), views), last=last_item_nodes(graph)
    )
