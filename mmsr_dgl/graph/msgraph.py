"""The MSGraph heterograph (MMSR, Hu et al. 2023) for one history and, fast, for a batch of histories.

Node types: `item` and one per modality (`image`, `text`, ...), each node a distinct item or code of the
history, in ascending id order. Node data: `id` (the item or code id) and `pos` (float [N, max_len], a
multi-hot of the positions where the node occurs, counted from the end: column 0 is the most recent item).

Relations (canonical edge types):
  homogeneous   (T, "next", T), (T, "prev", T)  between nodes of consecutive positions, for every type T
                (T, "self", T)                   a self-loop on every node
  heterogeneous (item, "has_code", M), (M, "code_of", item)   an item and its codes, for every modality M
                (M1, "same_item", M2)            the codes of one item across two modalities, both ways
Edges are deduplicated; within a relation they are ordered by (source, destination).
The self-loops also belong to the heterogeneous group, so that each node attends to itself there too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import dgl
import numpy as np
import torch

CanonicalEType = tuple[str, str, str]


@dataclass(frozen=True)
class MSGraphSchema:
    """Which modalities a graph has; derives the node types and the two relation groups."""

    modalities: tuple[str, ...] = ("image", "text")

    @property
    def ntypes(self) -> list[str]:
        return ["item", *self.modalities]

    @property
    def homogeneous(self) -> list[CanonicalEType]:
        return [(t, r, t) for t in self.ntypes for r in ("next", "prev", "self")]

    @property
    def heterogeneous(self) -> list[CanonicalEType]:
        rels = [(t, "self", t) for t in self.ntypes]
        for m in self.modalities:
            rels += [("item", "has_code", m), (m, "code_of", "item")]
        for i, m1 in enumerate(self.modalities):
            for m2 in self.modalities[i + 1 :]:
                rels += [(m1, "same_item", m2), (m2, "same_item", m1)]
        return rels

    @property
    def etypes(self) -> list[CanonicalEType]:
        return list(dict.fromkeys(self.homogeneous + self.heterogeneous))


# The two relation groups of the default schema (image and text); other modalities: MSGraphSchema(...).
HOMOGENEOUS: list[CanonicalEType] = MSGraphSchema().homogeneous
HETEROGENEOUS: list[CanonicalEType] = MSGraphSchema().heterogeneous


def build_msgraph(items: Sequence[int], codes: dict[str, np.ndarray], max_len: int) -> dgl.DGLHeteroGraph:
    """The MSGraph of one history: a plain, readable reference construction.

    items: item ids in chronological order (the last `max_len` are used).
    codes: modality -> int array [n_items + 1, k] of code ids per item, -1 where the item has none.
    """
    items = [int(i) for i in items][-max_len:]
    schema = MSGraphSchema(tuple(codes))
    n = len(items)
    # occurrences[type] = list of (position, id); position 0 is the oldest kept item
    occurrences = {"item": [(p, i) for p, i in enumerate(items)]}
    per_position = {"item": [[i] for i in items]}
    for m, table in codes.items():
        per_position[m] = [[int(c) for c in table[i] if c >= 0] for i in items]
        occurrences[m] = [(p, c) for p in range(n) for c in per_position[m][p]]
    node_of, ndata = {}, {}
    for t, occ in occurrences.items():
        ids = sorted({i for _, i in occ})
        node_of[t] = {i: k for k, i in enumerate(ids)}
        pos = torch.zeros(len(ids), max_len)
        for p, i in occ:
            pos[node_of[t][i], n - 1 - p] = 1.0
        ndata[t] = {"id": torch.tensor(ids, dtype=torch.int64), "pos": pos}

    edges: dict[CanonicalEType, set] = {e: set() for e in schema.etypes}
    for t in schema.ntypes:
        for p in range(n - 1):
            for a in per_position[t][p]:
                for b in per_position[t][p + 1]:
                    edges[(t, "next", t)].add((node_of[t][a], node_of[t][b]))
                    edges[(t, "prev", t)].add((node_of[t][b], node_of[t][a]))
        edges[(t, "self", t)] = {(k, k) for k in range(len(node_of[t]))}
    for p, item in enumerate(items):
        for m in schema.modalities:
            for c in per_position[m][p]:
                edges[("item", "has_code", m)].add((node_of["item"][item], node_of[m][c]))
                edges[(m, "code_of", "item")].add((node_of[m][c], node_of["item"][item]))
        for i, m1 in enumerate(schema.modalities):
            for m2 in schema.modalities[i + 1 :]:
                for c1 in per_position[m1][p]:
                    for c2 in per_position[m2][p]:
                        edges[(m1, "same_item", m2)].add((node_of[m1][c1], node_of[m2][c2]))
                        edges[(m2, "same_item", m1)].add((node_of[m2][c2], node_of[m1][c1]))
    data = {}
    for etype, pairs in edges.items():
        pairs = sorted(pairs)
        data[etype] = (
            torch.tensor([s for s, _ in pairs], dtype=torch.int64),
            torch.tensor([d for _, d in pairs], dtype=torch.int64),
        )
    g = dgl.heterograph(data, {t: len(node_of[t]) for t in schema.ntypes}, idtype=torch.int64)
    for t in schema.ntypes:
        g.nodes[t].data.update(ndata[t])
    return g


def _sorted_unique(key: np.ndarray) -> np.ndarray:
    """np.unique for int keys by sort-and-compare (numpy 2's hash-based unique is several times slower here)."""
    key = np.sort(key)
    keep = np.ones(len(key), dtype=bool)
    keep[1:] = key[1:] != key[:-1]
    return key[keep]


def _unique_pairs(src: np.ndarray, dst: np.ndarray, n_dst: int) -> tuple[np.ndarray, np.ndarray]:
    """Deduplicated (src, dst) pairs sorted by source, then destination."""
    key = _sorted_unique(src.astype(np.int64) * n_dst + dst)
    return key // n_dst, key % n_dst


def collate_msgraphs(
    histories: Sequence[Sequence[int]], codes: dict[str, np.ndarray], max_len: int
) -> dgl.DGLHeteroGraph:
    """One batched MSGraph for many histories, built from flat arrays with offsets.

    Equal to `dgl.batch([build_msgraph(h, codes, max_len) for h in histories])`, about a hundred times faster.
    Every history must hold at least one item.
    """
    schema = MSGraphSchema(tuple(codes))
    hist = [np.asarray(h, dtype=np.int64)[-max_len:] for h in histories]
    lengths = np.array([len(h) for h in hist])
    if (lengths == 0).any():
        raise ValueError("collate_msgraphs: every history needs at least one item")
    B = len(hist)
    graph_of_pos = np.repeat(np.arange(B), lengths)  # [P]
    rpos = np.concatenate([np.arange(n)[::-1] for n in lengths])  # [P] position counted from the end
    same_graph_next = graph_of_pos[:-1] == graph_of_pos[1:]  # [P-1] position p and p+1 in one graph

    # node of every (position, slot): per type, a [P, k] array of global node ids (-1 = none)
    slot_node, ndata, n_nodes, graph_nodes = {}, {}, {}, {}
    values = {"item": np.concatenate(hist)[:, None]}
    values.update({m: table[values["item"][:, 0]] for m, table in codes.items()})
    for t in schema.ntypes:
        v = values[t]  # [P, k]
        valid = v >= 0
        span = int(v.max()) + 1 if valid.any() else 1
        key = (graph_of_pos[:, None] * span + v)[valid]
        uniq = _sorted_unique(key)
        inverse = np.searchsorted(uniq, key)
        node = np.full(v.shape, -1, dtype=np.int64)
        node[valid] = inverse
        slot_node[t] = node
        pos = np.zeros((len(uniq), max_len), dtype=np.float32)
        pos[inverse, np.broadcast_to(rpos[:, None], v.shape)[valid]] = 1.0
        ndata[t] = {"id": torch.from_numpy(uniq % span), "pos": torch.from_numpy(pos)}
        n_nodes[t] = len(uniq)
        graph_nodes[t] = np.bincount(uniq // span, minlength=B)

    data = {}
    for t in schema.ntypes:
        a, b = slot_node[t][:-1][same_graph_next], slot_node[t][1:][same_graph_next]  # [P', k]
        src = np.repeat(a, b.shape[1], axis=1).ravel()
        dst = np.tile(b, (1, a.shape[1])).ravel()
        ok = (src >= 0) & (dst >= 0)
        data[(t, "next", t)] = _unique_pairs(src[ok], dst[ok], n_nodes[t])
        data[(t, "prev", t)] = _unique_pairs(dst[ok], src[ok], n_nodes[t])
        data[(t, "self", t)] = (np.arange(n_nodes[t]), np.arange(n_nodes[t]))
    item_node = slot_node["item"][:, 0]
    for m in schema.modalities:
        ok = slot_node[m] >= 0
        items = np.broadcast_to(item_node[:, None], ok.shape)[ok]
        data[("item", "has_code", m)] = _unique_pairs(items, slot_node[m][ok], n_nodes[m])
        data[(m, "code_of", "item")] = _unique_pairs(slot_node[m][ok], items, n_nodes["item"])
    for i, m1 in enumerate(schema.modalities):
        for m2 in schema.modalities[i + 1 :]:
            a, b = slot_node[m1], slot_node[m2]
            src = np.repeat(a, b.shape[1], axis=1).ravel()
            dst = np.tile(b, (1, a.shape[1])).ravel()
            ok = (src >= 0) & (dst >= 0)
            data[(m1, "same_item", m2)] = _unique_pairs(src[ok], dst[ok], n_nodes[m2])
            data[(m2, "same_item", m1)] = _unique_pairs(dst[ok], src[ok], n_nodes[m1])

    node_graph = {t: np.repeat(np.arange(B), graph_nodes[t]) for t in schema.ntypes}
    g = dgl.heterograph(
        {e: (torch.from_numpy(s), torch.from_numpy(d)) for e, (s, d) in data.items()}, n_nodes, idtype=torch.int64
    )
    g.set_batch_num_nodes({t: torch.from_numpy(graph_nodes[t]) for t in schema.ntypes})
    g.set_batch_num_edges(
        {e: torch.from_numpy(np.bincount(node_graph[e[0]][s], minlength=B)) for e, (s, _) in data.items()}
    )
    for t in schema.ntypes:
        g.nodes[t].data.update(ndata[t])
    return g


def last_item_nodes(g: dgl.DGLHeteroGraph) -> torch.Tensor:
    """Index of the most recent item's node in each graph of the batch, [B]."""
    return torch.nonzero(g.nodes["item"].data["pos"][:, 0] > 0, as_tuple=True)[0]
