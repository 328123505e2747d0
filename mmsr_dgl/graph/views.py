"""Relation-group views of a (batched) MSGraph: the edge-type subgraphs that one attention softmax spans.

A view is `dgl.edge_type_subgraph` of the heterograph over one group's relations: the node types they connect,
with all their nodes and node ids, and only those edges. `edge_softmax` on a view normalises each node's logits
over exactly the group's in-edges, and one `multi_update_all` on it aggregates the whole group.

Groups: `homogeneous`, `heterogeneous`, and `joint` (both, the self-loops once: the `sync` fusion's single
softmax). A view restricted `into` one node type keeps only the relations that end there: what a model's last
layer needs when its readout reads only the item nodes.
"""

from __future__ import annotations

import dgl

from .msgraph import CanonicalEType, MSGraphSchema

GROUPS = ("homogeneous", "heterogeneous", "joint")
ViewKey = tuple[str, str | None]  # (group, destination node type or None for all)


def group_relations(schema: MSGraphSchema, group: str, into: str | None = None) -> list[CanonicalEType]:
    """The relations of a group, optionally only those whose destination type is `into`."""
    if group == "homogeneous":
        relations = schema.homogeneous
    elif group == "heterogeneous":
        relations = schema.heterogeneous
    elif group == "joint":
        relations = list(dict.fromkeys(schema.homogeneous + schema.heterogeneous))
    else:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
    return [r for r in relations if into is None or r[2] == into]


def group_view(
    graph: dgl.DGLHeteroGraph, schema: MSGraphSchema, group: str, into: str | None = None
) -> dgl.DGLHeteroGraph | None:
    """The edge-type subgraph of `graph` over the group's relations that have edges in it (None when none has).
    It shares the graph's node data: write to it only inside `view.local_scope()`.

    Relations without edges are left out because DGL 1.1's heterograph `edge_softmax` returns wrong weights for
    every relation when one of them has no edges."""
    relations = [r for r in group_relations(schema, group, into) if graph.num_edges(r) > 0]
    return dgl.edge_type_subgraph(graph, relations) if relations else None


def group_views(
    graph: dgl.DGLHeteroGraph, schema: MSGraphSchema, keys: set[ViewKey]
) -> dict[ViewKey, dgl.DGLHeteroGraph | None]:
    """The views named by `keys`, each built once."""
    return {key: group_view(graph, schema, *key) for key in sorted(keys, key=str)}
