"""A relation group of the MSGraph (one attention softmax) as one single-relation DGL graph.

On a heterograph, DGL runs its message-passing kernels relation by relation (slower: BENCHMARKS.md, "Flat
relation groups"). Here the sources are (relation, node) slots, so that a relation-specific key (a
homogeneous attention vector, a type-specific transform) is one row per slot; the destinations are the batch's
nodes, one numbering for all types. One softmax over this graph's in-edges is exactly the group's softmax.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import dgl
import torch

from .msgraph import CanonicalEType

Feats = dict[str, torch.Tensor]  # node type -> [N_type, d]


@dataclass
class RelationGroup:
    """Sources: relation k's block holds one slot per node of its source type, slots
    `slot_offsets[k]:slot_offsets[k+1]`, in node order. Destinations: all nodes, type after type in `ntypes`
    order. Edges: relation after relation (`edge_offsets`), each in the heterograph's order."""

    graph: dgl.DGLHeteroGraph  # ("slot", "edge", "node")
    relations: list[CanonicalEType]
    ntypes: list[str]
    num_nodes: list[int]  # per node type
    slot_offsets: list[int]  # [R + 1]
    edge_offsets: list[int]  # [R + 1]

    def nodes(self, feats: Feats) -> torch.Tensor:
        """[N, ...]: per-type node features, concatenated in `ntypes` order."""
        return torch.cat([feats[t] for t in self.ntypes])

    def sources(self, feats: Feats) -> torch.Tensor:
        """[S, ...]: each relation's block filled with the features of its source type."""
        return torch.cat([feats[src] for src, _, _ in self.relations])

    def split(self, x: torch.Tensor) -> Feats:
        """Per-node rows [N, ...] back into node type -> [N_type, ...]."""
        return dict(zip(self.ntypes, torch.split(x, self.num_nodes)))

    def span(self, relations: list[CanonicalEType]) -> tuple[slice, slice]:
        """The edges and the slots of these relations, which must be consecutive in `relations` (none: empty)."""
        if not relations:
            return slice(0, 0), slice(0, 0)
        first = self.relations.index(relations[0])
        last = first + len(relations)
        if self.relations[first:last] != list(relations):
            raise ValueError(f"relations {relations} are not consecutive in {self.relations}")
        return (slice(self.edge_offsets[first], self.edge_offsets[last]),
                slice(self.slot_offsets[first], self.slot_offsets[last]))

    def to(self, device: torch.device | str) -> RelationGroup:
        return dataclasses.replace(self, graph=self.graph.to(device))


def relation_group(graph: dgl.DGLHeteroGraph, relations: list[CanonicalEType], ntypes: list[str]) -> RelationGroup:
    """The flat graph of these relations of `graph` (relations without edges keep an empty block)."""
    num_nodes = [graph.num_nodes(t) for t in ntypes]
    node_offset = dict(zip(ntypes, [sum(num_nodes[:k]) for k in range(len(ntypes))]))
    src_parts, dst_parts, slot_offsets, edge_offsets = [], [], [0], [0]
    for rel in relations:
        src, dst = graph.edges(etype=rel)
        src_parts.append(src + slot_offsets[-1])
        dst_parts.append(dst + node_offset[rel[2]])
        slot_offsets.append(slot_offsets[-1] + graph.num_nodes(rel[0]))
        edge_offsets.append(edge_offsets[-1] + len(src))
    flat = dgl.heterograph({("slot", "edge", "node"): (torch.cat(src_parts), torch.cat(dst_parts))},
                           {"slot": slot_offsets[-1], "node": sum(num_nodes)}, idtype=torch.int64)
    return RelationGroup(flat, list(relations), list(ntypes), num_nodes, slot_offsets, edge_offsets)
