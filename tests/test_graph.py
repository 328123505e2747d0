"""The MSGraph heterograph: hand-checked construction, relation-group views, and the fast batch collation."""

from __future__ import annotations

import os

os.environ.setdefault("DGLBACKEND", "pytorch")

import dgl  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mmsr_dgl.graph import (  # noqa: E402
    GROUPS,
    HETEROGENEOUS,
    HOMOGENEOUS,
    MSGraphSchema,
    build_msgraph,
    collate_msgraphs,
    group_relations,
    group_view,
    group_views,
    last_item_nodes,
)

# ----------------------------------------------------------------------------------------------------------
# A hand-made history and code tables. Item ids 1..7 (row 0 = padding). Items 3, 5, 7 are used:
#   item 3: image codes {0, 2}, text code {4}
#   item 5: no image (row all -1),  text code {1}
#   item 7: image codes {2, 1}, text code {4}
# History [3, 5, 3, 7] (oldest first); positions from the end: 3 -> {3, 1}, 5 -> {2}, 7 -> {0}.
# ----------------------------------------------------------------------------------------------------------
NONE2, NONE1 = [-1, -1], [-1]
IMAGE = np.array([NONE2, NONE2, NONE2, [0, 2], NONE2, NONE2, NONE2, [2, 1]])
TEXT = np.array([NONE1, NONE1, NONE1, [4], NONE1, [1], NONE1, [4]])
CODES = {"image": IMAGE, "text": TEXT}
HISTORY = [3, 5, 3, 7]
MAX_LEN = 5


def edge_list(g: dgl.DGLHeteroGraph, etype) -> list[tuple[int, int]]:
    src, dst = g.edges(etype=etype, order="eid")
    return list(zip(src.tolist(), dst.tolist()))


@pytest.fixture(scope="module")
def hand_graph() -> dgl.DGLHeteroGraph:
    return build_msgraph(HISTORY, CODES, MAX_LEN)


def test_node_types_and_ids_ascending(hand_graph):
    g = hand_graph
    assert g.ntypes == sorted(["item", "image", "text"])
    assert g.idtype == torch.int64
    assert g.nodes["item"].data["id"].tolist() == [3, 5, 7]
    assert g.nodes["image"].data["id"].tolist() == [0, 1, 2]
    assert g.nodes["text"].data["id"].tolist() == [1, 4]
    assert {t: g.num_nodes(t) for t in g.ntypes} == {"item": 3, "image": 3, "text": 2}


def test_position_multi_hot_most_recent_first(hand_graph):
    g = hand_graph
    # item 3 at positions-from-end 3 and 1, item 5 at 2, item 7 (most recent) at 0; column 4 is beyond the history
    assert g.nodes["item"].data["pos"].tolist() == [[0, 1, 0, 1, 0], [0, 0, 1, 0, 0], [1, 0, 0, 0, 0]]
    # image code 0 (item 3), code 1 (item 7), code 2 (items 3 and 7); item 5 has no image
    assert g.nodes["image"].data["pos"].tolist() == [[0, 1, 0, 1, 0], [1, 0, 0, 0, 0], [1, 1, 0, 1, 0]]
    # text code 1 (item 5), code 4 (items 3 and 7)
    assert g.nodes["text"].data["pos"].tolist() == [[0, 0, 1, 0, 0], [1, 1, 0, 1, 0]]
    assert g.nodes["item"].data["pos"].dtype == torch.float32


def test_sequential_edges_per_type(hand_graph):
    g = hand_graph
    # item nodes 0=3, 1=5, 2=7; transitions 3->5, 5->3, 3->7
    assert edge_list(g, ("item", "next", "item")) == [(0, 1), (0, 2), (1, 0)]
    assert edge_list(g, ("item", "prev", "item")) == [(0, 1), (1, 0), (2, 0)]
    # image: item 5 has no image, so only positions 2 -> 3 link: {0, 2} -> {2, 1}; no link across the gap
    assert edge_list(g, ("image", "next", "image")) == [(0, 1), (0, 2), (2, 1), (2, 2)]
    assert edge_list(g, ("image", "prev", "image")) == [(1, 0), (1, 2), (2, 0), (2, 2)]
    # text nodes 0=code 1, 1=code 4; codes per position 4, 1, 4, 4
    assert edge_list(g, ("text", "next", "text")) == [(0, 1), (1, 0), (1, 1)]
    assert edge_list(g, ("text", "prev", "text")) == [(0, 1), (1, 0), (1, 1)]
    for t, n in (("item", 3), ("image", 3), ("text", 2)):
        assert edge_list(g, (t, "self", t)) == [(k, k) for k in range(n)]


def test_item_code_and_cross_modal_edges(hand_graph):
    g = hand_graph
    assert edge_list(g, ("item", "has_code", "image")) == [(0, 0), (0, 2), (2, 1), (2, 2)]
    assert edge_list(g, ("image", "code_of", "item")) == [(0, 0), (1, 2), (2, 0), (2, 2)]
    assert edge_list(g, ("item", "has_code", "text")) == [(0, 1), (1, 0), (2, 1)]
    assert edge_list(g, ("text", "code_of", "item")) == [(0, 1), (1, 0), (1, 2)]
    # codes of one item across modalities: item 3 -> image {0, 2} x text {4}; item 7 -> image {2, 1} x text {4}
    assert edge_list(g, ("image", "same_item", "text")) == [(0, 1), (1, 1), (2, 1)]
    assert edge_list(g, ("text", "same_item", "image")) == [(1, 0), (1, 1), (1, 2)]


def test_repeated_transitions_are_deduplicated():
    g = build_msgraph([3, 7, 3, 7, 3], CODES, MAX_LEN)
    assert g.nodes["item"].data["id"].tolist() == [3, 7]
    assert edge_list(g, ("item", "next", "item")) == [(0, 1), (1, 0)]
    assert edge_list(g, ("item", "has_code", "image")) == [(0, 0), (0, 2), (1, 1), (1, 2)]
    assert g.nodes["item"].data["pos"].tolist() == [[1, 0, 1, 0, 1], [0, 1, 0, 1, 0]]
    assert edge_list(g, ("text", "next", "text")) == [(0, 0)]  # text code 4 follows itself only


def test_truncation_keeps_most_recent():
    g = build_msgraph([5, 5, 3, 7], CODES, 2)  # keeps [3, 7]
    assert g.nodes["item"].data["id"].tolist() == [3, 7]
    assert g.nodes["item"].data["pos"].tolist() == [[0, 1], [1, 0]]
    assert g.num_nodes("text") == 1  # item 5 (text code 1) was dropped
    assert edge_list(g, ("item", "next", "item")) == [(0, 1)]


# ------------------------------------------------------------------------------------------------ schema


def test_schema_relation_groups():
    schema = MSGraphSchema(("image", "text"))
    assert schema.ntypes == ["item", "image", "text"]
    selfs = {(t, "self", t) for t in schema.ntypes}
    assert set(schema.homogeneous) == {(t, r, t) for t in schema.ntypes for r in ("next", "prev", "self")}
    assert set(schema.heterogeneous) == selfs | {
        ("item", "has_code", "image"),
        ("image", "code_of", "item"),
        ("item", "has_code", "text"),
        ("text", "code_of", "item"),
        ("image", "same_item", "text"),
        ("text", "same_item", "image"),
    }
    assert set(schema.homogeneous) & set(schema.heterogeneous) == selfs  # self-loops are in both groups
    assert len(schema.etypes) == len(set(schema.etypes)) == 15
    assert set(schema.etypes) == set(schema.homogeneous) | set(schema.heterogeneous)
    assert HOMOGENEOUS == schema.homogeneous
    assert HETEROGENEOUS == schema.heterogeneous
    assert set(build_msgraph(HISTORY, CODES, MAX_LEN).canonical_etypes) == set(schema.etypes)


def test_id_only_schema():
    schema = MSGraphSchema(())
    assert schema.ntypes == ["item"]
    assert schema.heterogeneous == [("item", "self", "item")]
    assert len(schema.etypes) == 3


def test_three_modalities_need_only_configuration():
    schema = MSGraphSchema(("image", "text", "audio"))
    assert schema.ntypes == ["item", "image", "text", "audio"]
    same = {e for e in schema.heterogeneous if e[1] == "same_item"}
    assert same == {
        (a, "same_item", b) for a in ("image", "text", "audio") for b in ("image", "text", "audio") if a != b
    }
    assert len(schema.heterogeneous) == 4 + 2 * 3 + 6
    audio = np.full((8, 1), -1)
    audio[3], audio[5] = 9, 9  # items 3 and 5 share audio code 9; item 7 has none
    codes = {**CODES, "audio": audio}
    g = build_msgraph(HISTORY, codes, MAX_LEN)
    assert set(g.canonical_etypes) == set(schema.etypes)
    assert g.nodes["audio"].data["id"].tolist() == [9]
    assert g.nodes["audio"].data["pos"].tolist() == [[0, 1, 1, 1, 0]]
    assert edge_list(g, ("audio", "next", "audio")) == [(0, 0)]
    assert edge_list(g, ("item", "has_code", "audio")) == [(0, 0), (1, 0)]
    assert edge_list(g, ("audio", "same_item", "text")) == [(0, 0), (0, 1)]  # with text codes 4 and 1
    assert edge_list(g, ("image", "same_item", "audio")) == [(0, 0), (2, 0)]  # item 3's image codes 0, 2
    batched = collate_msgraphs([HISTORY, [7, 5], [3]], codes, MAX_LEN)
    assert_same_graph(batched, dgl.batch([build_msgraph(h, codes, MAX_LEN) for h in ([HISTORY, [7, 5], [3]])]))


# --------------------------------------------------------------------------------------- batch collation


def assert_same_graph(a: dgl.DGLHeteroGraph, b: dgl.DGLHeteroGraph) -> None:
    assert a.ntypes == b.ntypes
    assert a.canonical_etypes == b.canonical_etypes
    assert a.idtype == b.idtype
    assert a.batch_size == b.batch_size
    for t in a.ntypes:
        assert a.num_nodes(t) == b.num_nodes(t), t
        assert torch.equal(a.batch_num_nodes(t), b.batch_num_nodes(t)), t
        assert set(a.nodes[t].data) == set(b.nodes[t].data) == {"id", "pos"}
        for key in a.nodes[t].data:
            x, y = a.nodes[t].data[key], b.nodes[t].data[key]
            assert x.dtype == y.dtype and torch.equal(x, y), (t, key)
    for e in a.canonical_etypes:
        assert torch.equal(a.batch_num_edges(e), b.batch_num_edges(e)), e
        sa, da = a.edges(etype=e, order="eid")
        sb, db = b.edges(etype=e, order="eid")
        assert torch.equal(sa, sb) and torch.equal(da, db), e


def random_codes(rng: np.random.Generator, n_items: int, k: int, n_codes: int, missing: float) -> np.ndarray:
    """Distinct codes per item, some slots empty, some items without the modality, row 0 empty."""
    table = np.stack([rng.choice(n_codes, size=k, replace=False) for _ in range(n_items + 1)])
    table[rng.random(table.shape) < 0.2] = -1
    table[rng.random(n_items + 1) < missing] = -1
    table[0] = -1
    return table


def random_histories(rng: np.random.Generator, n: int, n_items: int, max_len: int) -> list[np.ndarray]:
    out = []
    for b in range(n):
        length = 1 if b % 5 == 0 else int(rng.integers(2, 2 * max_len + 3))  # some one-item, some too long
        out.append(rng.integers(1, min(n_items, 12) if b % 3 == 0 else n_items, size=length + 1)[1:])  # repeats
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_collate_equals_batched_reference(seed):
    rng = np.random.default_rng(seed)
    n_items, max_len = 40, 6
    codes = {"image": random_codes(rng, n_items, 3, 10, 0.2), "text": random_codes(rng, n_items, 2, 7, 0.1)}
    histories = random_histories(rng, 23, n_items, max_len)
    assert any(len(h) == 1 for h in histories) and any(len(h) > max_len for h in histories)
    assert any(len(set(h.tolist())) < len(h) for h in histories)
    fast = collate_msgraphs(histories, codes, max_len)
    singles = [build_msgraph(h, codes, max_len) for h in histories]
    assert_same_graph(fast, dgl.batch(singles))
    for got, want in zip(dgl.unbatch(fast), singles):
        assert_same_graph(got, want)


def test_collate_truncation_keeps_most_recent():
    histories = [np.array([5, 5, 5, 3, 7]), np.array([7])]
    g = collate_msgraphs(histories, CODES, 2)
    first = dgl.unbatch(g)[0]
    assert first.nodes["item"].data["id"].tolist() == [3, 7]
    assert first.nodes["item"].data["pos"].tolist() == [[0, 1], [1, 0]]


def test_collate_rejects_empty_history():
    with pytest.raises(ValueError):
        collate_msgraphs([np.array([3]), np.array([], dtype=np.int64)], CODES, MAX_LEN)


# ------------------------------------------------------------------------------------ missing modalities


def test_items_without_a_modality_give_no_nodes():
    g = build_msgraph([5, 5], CODES, MAX_LEN)  # item 5 has text but no image
    assert g.num_nodes("image") == 0 and g.num_nodes("text") == 1
    assert g.num_edges(("item", "has_code", "image")) == 0
    assert g.num_edges(("text", "same_item", "image")) == 0
    assert g.nodes["image"].data["pos"].shape == (0, MAX_LEN)
    assert_same_graph(collate_msgraphs([[5, 5]], CODES, MAX_LEN), dgl.batch([g]))


def test_empty_code_tables_give_an_item_only_graph():
    g = build_msgraph(HISTORY, {}, MAX_LEN)
    assert g.ntypes == ["item"]
    assert set(g.canonical_etypes) == set(MSGraphSchema(()).etypes)
    assert edge_list(g, ("item", "next", "item")) == [(0, 1), (0, 2), (1, 0)]
    histories = [HISTORY, [7], [5, 3]]
    assert_same_graph(
        collate_msgraphs(histories, {}, MAX_LEN), dgl.batch([build_msgraph(h, {}, MAX_LEN) for h in histories])
    )


def test_batch_where_no_item_has_image_codes():
    histories = [[5], [5, 5, 5], [5]]  # item 5 has no image codes
    g = collate_msgraphs(histories, CODES, MAX_LEN)
    assert g.num_nodes("image") == 0
    assert g.batch_num_nodes("image").tolist() == [0, 0, 0]
    assert g.batch_num_nodes("text").tolist() == [1, 1, 1]
    assert g.batch_num_edges(("item", "has_code", "image")).tolist() == [0, 0, 0]
    assert g.batch_num_edges(("item", "next", "item")).tolist() == [0, 1, 0]
    assert_same_graph(g, dgl.batch([build_msgraph(h, CODES, MAX_LEN) for h in histories]))
    assert [x.num_nodes("item") for x in dgl.unbatch(g)] == [1, 1, 1]


# ----------------------------------------------------------------------------------------- readout, views


def test_last_item_nodes_per_graph():
    rng = np.random.default_rng(5)
    codes = {"image": random_codes(rng, 40, 3, 10, 0.2), "text": random_codes(rng, 40, 2, 7, 0.1)}
    histories = random_histories(rng, 17, 40, 6)
    g = collate_msgraphs(histories, codes, 6)
    last = last_item_nodes(g)
    assert last.shape == (17,) and last.dtype == torch.int64
    assert g.nodes["item"].data["id"][last].tolist() == [int(h[-1]) for h in histories]
    start = torch.cumsum(g.batch_num_nodes("item"), 0) - g.batch_num_nodes("item")
    assert ((last >= start) & (last < start + g.batch_num_nodes("item"))).all()
    # the hand graph: item 7 (node 2) is the most recent, although item 3 occurs more often
    assert last_item_nodes(build_msgraph(HISTORY, CODES, MAX_LEN)).tolist() == [2]


def test_group_views_share_nodes_and_keep_the_groups_relations():
    histories = [np.array([3, 5, 3, 7]), np.array([7]), np.array([5, 3, 7, 7, 5, 3, 5])]
    graph = collate_msgraphs(histories, CODES, MAX_LEN)
    schema = MSGraphSchema(("image", "text"))
    assert group_relations(schema, "joint") == schema.homogeneous + [
        r for r in schema.heterogeneous if r not in schema.homogeneous
    ]
    assert group_relations(schema, "heterogeneous", "item") == [r for r in schema.heterogeneous if r[2] == "item"]
    keys = {(g, into) for g in GROUPS for into in (None, "item")}
    views = group_views(graph, schema, keys)
    assert set(views) == keys
    for (group, into), view in views.items():
        assert set(view.canonical_etypes) == set(group_relations(schema, group, into))
        assert set(view.ntypes) == {t for rel in view.canonical_etypes for t in (rel[0], rel[2])}
        for t in view.ntypes:
            assert view.num_nodes(t) == graph.num_nodes(t)
            assert torch.equal(view.nodes[t].data["id"], graph.nodes[t].data["id"])
        for rel in view.canonical_etypes:
            assert edge_list(view, rel) == edge_list(graph, rel)
    with pytest.raises(ValueError, match="group must be one of"):
        group_relations(schema, "cross")


def test_group_views_leave_out_relations_without_edges():
    """One-item histories have no next/prev edges and item 5 has no image: those relations are not in the views
    (DGL's heterograph edge_softmax is wrong when a relation has no edges); a group with none gives None."""
    graph = collate_msgraphs([np.array([5]), np.array([5])], CODES, MAX_LEN)
    schema = MSGraphSchema(("image", "text"))
    homo = group_view(graph, schema, "homogeneous")
    assert set(homo.canonical_etypes) == {("item", "self", "item"), ("text", "self", "text")}
    hetero = group_view(graph, schema, "heterogeneous", "image")
    assert hetero is None
    assert group_views(graph, schema, {("heterogeneous", "image")}) == {("heterogeneous", "image"): None}
