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
    values = {"item": np.concatenate(hist)[:, None]}  # [P, 1], then per modality the item's codes [P, k]
    values.update({m: table[values["item"][:, 0]] for m, table in codes.items()})
    nodes = {t: _Nodes(values[t], graph_of_pos, rpos, B, max_len) for t in schema.ntypes}
    data = _edges(schema, {t: n.slot for t, n in nodes.items()}, graph_of_pos[:-1] == graph_of_pos[1:])

    n_nodes = {t: len(n.ids) for t, n in nodes.items()}
    g = dgl.heterograph(
        {e: (torch.from_numpy(s), torch.from_numpy(d)) for e, (s, d) in data.items()}, n_nodes, idtype=torch.int64
    )
    g.set_batch_num_nodes({t: torch.from_numpy(n.per_graph) for t, n in nodes.items()})
    node_graph = {t: np.repeat(np.arange(B), n.per_graph) for t, n in nodes.items()}
    g.set_batch_num_edges(
        {e: torch.from_numpy(np.bincount(node_graph[e[0]][s], minlength=B)) for e, (s, _) in data.items()}
    )
    for t, n in nodes.items():
        g.nodes[t].data.update({"id": torch.from_numpy(n.ids), "pos": torch.from_numpy(n.pos)})
    return g


class _Nodes:
    """The nodes of one type in a batch: one per distinct (graph, value) among the values [P, k] of the
    positions (-1 = none)."""

    def __init__(self, v: np.ndarray, graph_of_pos: np.ndarray, rpos: np.ndarray, n_graphs: int, max_len: int):
        valid = v >= 0
        span = int(v.max()) + 1 if valid.any() else 1
        key = (graph_of_pos[:, None] * span + v)[valid]
        uniq = _sorted_unique(key)
        inverse = np.searchsorted(uniq, key)
        self.slot = np.full(v.shape, -1, dtype=np.int64)  # [P, k]: the node of each (position, slot), -1 = none
        self.slot[valid] = inverse
        self.pos = np.zeros((len(uniq), max_len), dtype=np.float32)  # [N, max_len]: positions from the end
        self.pos[inverse, np.broadcast_to(rpos[:, None], v.shape)[valid]] = 1.0
        self.ids = uniq % span  # [N]: item id or code
        self.per_graph = np.bincount(uniq // span, minlength=n_graphs)  # [B]


def _all_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (a[p, i], b[p, j]) of each row p where both are nodes (not -1): sources, destinations."""
    src = np.repeat(a, b.shape[1], axis=1).ravel()
    dst = np.tile(b, (1, a.shape[1])).ravel()
    ok = (src >= 0) & (dst >= 0)
    return src[ok], dst[ok]


def _edges(schema: MSGraphSchema, slot: dict[str, np.ndarray], same_graph_next: np.ndarray) -> dict:
    """Relation -> (sources, destinations) from each type's node of every (position, slot) [P, k];
    same_graph_next [P-1]: whether positions p and p+1 are in one graph."""
    n_nodes = {t: int(s.max()) + 1 for t, s in slot.items()}
    data = {}
    for t in schema.ntypes:
        src, dst = _all_pairs(slot[t][:-1][same_graph_next], slot[t][1:][same_graph_next])
        data[(t, "next", t)] = _unique_pairs(src, dst, n_nodes[t])
        data[(t, "prev", t)] = _unique_pairs(dst, src, n_nodes[t])
        data[(t, "self", t)] = (np.arange(n_nodes[t]), np.arange(n_nodes[t]))
    item_node = slot["item"][:, 0]
    for m in schema.modalities:
        ok = slot[m] >= 0
        items = np.broadcast_to(item_node[:, None], ok.shape)[ok]
        data[("item", "has_code", m)] = _unique_pairs(items, slot[m][ok], n_nodes[m])
        data[(m, "code_of", "item")] = _unique_pairs(slot[m][ok], items, n_nodes["item"])
    for i, m1 in enumerate(schema.modalities):
        for m2 in schema.modalities[i + 1 :]:
            src, dst = _all_pairs(slot[m1], slot[m2])
            data[(m1, "same_item", m2)] = _unique_pairs(src, dst, n_nodes[m2])
            data[(m2, "same_item", m1)] = _unique_pairs(dst, src, n_nodes[m1])
    return data


def last_item_nodes(g: dgl.DGLHeteroGraph) -> torch.Tensor:
    """Index of the most recent item's node in each graph of the batch, [B]."""
    return torch.nonzero(g.nodes["item"].data["pos"][:, 0] > 0, as_tuple=True)[0]
