"""The MMSR model: grouped softmax, non-invasive fusion, gradients, batching, missing modalities, overfitting."""

from __future__ import annotations

import os

os.environ.setdefault("DGLBACKEND", "pytorch")

import dgl  # noqa: E402
import dgl.function as fn  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from dgl.nn.functional import edge_softmax  # noqa: E402

from mmsr_dgl.data import PreprocessConfig, load_processed, preprocess  # noqa: E402
from mmsr_dgl.data.preprocess import Inputs  # noqa: E402
from mmsr_dgl.data.synthetic import SyntheticSpec  # noqa: E402
from mmsr_dgl.graph import GROUPS, group_relations, group_view, group_views  # noqa: E402
from mmsr_dgl.nn import MMSR, MMSRConfig, make_batch  # noqa: E402

FUSIONS = ("async", "homo_first", "hetero_first", "sync", "none")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread for this module: on a busy 2-core machine, 2 OpenMP threads (torch and DGL share
    libgomp) stall for seconds at a time; one thread keeps these small graphs fast and the timings stable."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("model_data") / "synthetic"
    preprocess(
        PreprocessConfig(synthetic=SyntheticSpec(users=200, items=120, groups=8), n_codes=16),
        Inputs(synthetic=True),
        out,
        log=lambda m: None,
    )
    return load_processed(out)


def make_model(data, fusion: str = "async", dim: int = 16, seed: int = 0, **kw) -> MMSR:
    torch.manual_seed(seed)
    return MMSR(
        MMSRConfig(dim=dim, fusion=fusion, **kw), data.n_items, data.max_len, data.centroids, data.codes, data.features
    )


def train_batch(data, model: MMSR, n: int = 32, seed: int = 0, histories=None, all_nodes: bool = False):
    """A batch as the trainer builds it for `model` (`all_nodes`: with the views that updating every node needs)."""
    sampled, targets = sample(data, n, seed)
    modalities, views = model.graph_spec(all_nodes)
    return make_batch(
        sampled if histories is None else histories,
        data.max_len,
        {m: data.codes[m] for m in modalities},
        views,
        targets,
    )


def sample(data, n: int, seed: int = 0):
    """Histories and targets of `n` random training samples."""
    users, positions = data.splits["train"]
    idx = np.random.default_rng(seed).choice(len(users), size=n, replace=False)
    return data.inputs(users[idx], positions[idx]), data.targets("train")[idx]


def every_view(model: MMSR, batch) -> dict:
    """Every group's view, whole and into the item nodes."""
    return group_views(batch.graph, model.schema, {(g, into) for g in GROUPS for into in (None, "item")})


# ---------------------------------------------------------------------------- per-node reference, by hand


def reference_phase(graph, terms, ntypes) -> dict[str, torch.Tensor]:
    """One attention phase written out node by node: every node softmaxes the logits key_u . query_v of all its
    in-edges over the relations of `terms` (relation -> keys [N_src, d], queries [N_dst, d], values [N_src, d]),
    then sums weight * value_u; a node without in-edges gets zeros."""
    incoming = {}  # (node type, node) -> [(logit, value)]
    for rel, (keys, queries, values) in terms.items():
        src, dst = graph.edges(etype=rel)
        for u, v in zip(src.tolist(), dst.tolist()):
            incoming.setdefault((rel[2], v), []).append((keys[u] @ queries[v], values[u]))
    dim = next(iter(terms.values()))[2].shape[1]
    out = {t: torch.zeros(graph.num_nodes(t), dim) for t in ntypes}
    for (t, v), edges in incoming.items():
        weights = torch.softmax(torch.stack([logit for logit, _ in edges]), dim=0)
        out[t][v] = sum(w * value for w, (_, value) in zip(weights, edges))
    return out


def homo_terms(att, relations, s, h) -> dict:
    """Content-based: key s_u * a_r, query s_v, value h_u."""
    return {r: (s[r[0]] * att.vectors["|".join(r)], s[r[2]], h[r[0]]) for r in relations}


def hetero_terms(att, relations, s, h) -> dict:
    """Type-specific transforms: key K s_u, query Q s_v / sqrt(d), value V h_u."""
    return {
        r: (att.key[r[0]](s[r[0]]), att.query[r[2]](s[r[2]]) * att.scale, att.value[r[0]](h[r[0]])) for r in relations
    }


def reference_layer(layer, graph, h) -> dict[str, torch.Tensor]:
    """A layer in eval mode, from `reference_phase`: both orders, the gate, the residual and LayerNorm."""
    schema, ntypes = layer.schema, layer.schema.ntypes
    homo_rels, hetero_rels = schema.homogeneous, schema.heterogeneous

    def homo_first(i):  # z scores phase two; the values are h, unfused
        z = reference_phase(graph, homo_terms(layer.homo[i], homo_rels, h, h), ntypes)
        return reference_phase(graph, hetero_terms(layer.hetero[i], hetero_rels, z, h), ntypes)

    def hetero_first(i):
        y = reference_phase(graph, hetero_terms(layer.hetero[i], hetero_rels, h, h), ntypes)
        return reference_phase(graph, homo_terms(layer.homo[i], homo_rels, y, h), ntypes)

    if layer.fusion == "homo_first":
        out = homo_first(0)
    elif layer.fusion == "hetero_first":
        out = hetero_first(0)
    elif layer.fusion == "sync":  # one softmax over every relation, the self-loops once, as homogeneous
        out = reference_phase(
            graph,
            {**hetero_terms(layer.hetero[0], hetero_rels, h, h), **homo_terms(layer.homo[0], homo_rels, h, h)},
            ntypes,
        )
    elif layer.fusion == "none":
        out = reference_phase(graph, homo_terms(layer.homo[0], homo_rels, h, h), ntypes)
    else:
        a, b = homo_first(0), hetero_first(1)
        out = {}
        for t in ntypes:
            gate = torch.softmax(layer.gate[t](torch.cat([a[t], b[t]], dim=-1)), dim=-1)
            out[t] = gate[:, :1] * a[t] + gate[:, 1:] * b[t]
    return {t: layer.norm[t](h[t] + out[t]) for t in ntypes}


def batches_to_check(data, model):
    """A sampled batch, and one of one-item histories (no next/prev edges: relations without edges)."""
    histories, _ = sample(data, 8, seed=3)
    return {
        "sampled": train_batch(data, model, histories=histories),
        "one-item": train_batch(data, model, histories=[h[-1:] for h in histories]),
    }


@pytest.mark.parametrize("fusion", ["async", "homo_first", "hetero_first", "sync"])
def test_layer_equals_the_per_node_reference(data, fusion):
    """Every node type after one layer (all views), and the item nodes when the layer updates only them."""
    model = make_model(data, fusion).eval()
    layer = model.layers[0]
    for name, batch in batches_to_check(data, model).items():
        views = every_view(model, batch)
        with torch.no_grad():
            h = model.node_inputs(batch, model.item_table())
            expected = reference_layer(layer, batch.graph, h)
            got = layer(views, h)
            items_only = layer(views, h, "item")
        assert set(got) == set(h) and set(items_only) == {"item"}
        for t in h:
            torch.testing.assert_close(got[t], expected[t], atol=1e-5, rtol=1e-5, msg=f"{name} {t}")
        torch.testing.assert_close(items_only["item"], expected["item"], atol=1e-5, rtol=1e-5, msg=name)
        assert max_diff(got, h) > 1e-2  # not the identity


def test_item_graph_path_equals_the_per_node_reference(data):
    """Without modalities (data that has none, or fusion none) the layers attend over the item graph only."""
    torch.manual_seed(0)
    bare = MMSR(MMSRConfig(dim=16), data.n_items, data.max_len, {}, {}, {}).eval()
    for model in (bare, make_model(data, "none").eval()):
        assert model.graph_spec() == ([], {("homogeneous", "item")})
        assert [layer.fusion for layer in model.layers] == ["none"]
        batch = train_batch(data, model)
        assert batch.graph.ntypes == ["item"]
        with torch.no_grad():
            h = model.node_inputs(batch, model.item_table())
            got = model.layers[0](batch.views, h, "item")
        torch.testing.assert_close(
            got["item"], reference_layer(model.layers[0], batch.graph, h)["item"], atol=1e-5, rtol=1e-5
        )


def in_edge_sums(view, weights: dict) -> dict[str, torch.Tensor]:
    """Per node type, each node's sum of `weights` (relation -> [E_r, 1]) over its in-edges in the view."""
    with view.local_scope():
        for rel, w in weights.items():
            view.edges[rel].data["w"] = w
        view.multi_update_all({rel: (fn.copy_e("w", "m"), fn.sum("m", "s")) for rel in weights}, "sum")
        return {t: view.nodes[t].data["s"].squeeze(-1) for t in {rel[2] for rel in weights}}


@pytest.fixture(scope="module")
def setup_async(data):
    model = make_model(data, "async").eval()
    batch = train_batch(data, model, 32, all_nodes=True)
    with torch.no_grad():
        h = model.node_inputs(batch, model.item_table())
    return model, batch, h


@pytest.mark.parametrize("group", ["homogeneous", "heterogeneous"])
def test_softmax_sums_to_one_over_each_nodes_group(setup_async, group):
    model, batch, h = setup_async
    layer = model.layers[0]
    view = batch.views[(group, None)]
    att = layer.homo[0] if group == "homogeneous" else layer.hetero[0]
    with torch.no_grad():
        weights = edge_softmax(view, att.logits(view, h))
    sums = in_edge_sums(view, weights)
    assert set(sums) == {"item", "image", "text"}
    for t, s in sums.items():
        assert s.shape == (batch.graph.num_nodes(t),)
        torch.testing.assert_close(s, torch.ones_like(s), atol=1e-5, rtol=0)
    # the normalisation spans several relations: self-loop weights alone are clearly below one somewhere
    assert (weights[("item", "self", "item")] < 0.9).any()


def test_one_softmax_over_both_groups_mixes_them(setup_async):
    """sync's joint view: one softmax spans both groups, so the homogeneous weights of a node that also has
    heterogeneous in-edges sum to less than one."""
    model, batch, h = setup_async
    layer, schema = model.layers[0], model.schema
    joint = group_view(batch.graph, schema, "joint")
    homo = [r for r in joint.canonical_etypes if r in schema.homogeneous]
    hetero = [r for r in joint.canonical_etypes if r not in homo]
    with torch.no_grad():
        weights = edge_softmax(
            joint, {**layer.homo[0].logits(joint, h, homo), **layer.hetero[0].logits(joint, h, hetero)}
        )
    total = in_edge_sums(joint, weights)
    homo_only = in_edge_sums(joint, {r: w if r in homo else torch.zeros_like(w) for r, w in weights.items()})
    hetero_in = in_edge_sums(
        joint, {r: torch.zeros_like(w) if r in homo else torch.ones_like(w) for r, w in weights.items()}
    )
    for t in ("item", "image", "text"):
        torch.testing.assert_close(total[t], torch.ones_like(total[t]), atol=1e-5, rtol=0)
        reached = hetero_in[t] > 0
        assert reached.any()
        assert (homo_only[t][reached] < 1 - 1e-3).all()


@pytest.mark.parametrize("fusion", ["async", "homo_first", "hetero_first", "sync"])
def test_each_phase_is_one_multi_update_all_on_its_group_view(data, fusion, monkeypatch):
    """Two layers: the first updates every node, the last only the item nodes that the readout reads. Each phase is
    one `multi_update_all` on its group's view, in the order of the fusion."""
    calls, real = [], dgl.DGLGraph.multi_update_all

    def spy(graph, funcs, *args, **kwargs):
        calls.append(frozenset(funcs))
        return real(graph, funcs, *args, **kwargs)

    monkeypatch.setattr(dgl.DGLGraph, "multi_update_all", spy)
    model = make_model(data, fusion, n_layers=2).eval()
    batch = train_batch(data, model, 16, seed=4)
    with torch.no_grad():
        model(batch)
    schema = model.schema

    def group(name, into=None):
        return frozenset(group_relations(schema, name, into))

    homo, hetero = group("homogeneous"), group("heterogeneous")
    expected = {
        "homo_first": [homo, hetero, homo, group("heterogeneous", "item")],
        "hetero_first": [hetero, homo, group("heterogeneous", "item"), group("homogeneous", "item")],
        "async": [
            homo,
            hetero,
            hetero,
            homo,
            homo,
            group("heterogeneous", "item"),
            group("heterogeneous", "item"),
            group("homogeneous", "item"),
        ],
        "sync": [group("joint"), group("joint", "item")],
    }[fusion]
    assert calls == expected


# ----------------------------------------------------------------------------------- non-invasive fusion


def layer_out(layer, views, h):
    with torch.no_grad():
        return layer(views, h)


def max_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max(float((a[t] - b[t]).abs().max()) for t in a if a[t].numel())


def perturb(params, scale: float = 1.0, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def zero(params) -> None:
    with torch.no_grad():
        for p in params:
            p.zero_()


def noisy(h: dict, seed: int = 2) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {t: x + 0.5 * torch.randn(x.shape, generator=gen) for t, x in h.items()}


def fusion_setup(data, fusion: str):
    model = make_model(data, fusion).eval()
    batch = train_batch(data, model, 16, seed=3, all_nodes=True)
    with torch.no_grad():
        h = model.node_inputs(batch, model.item_table())
    return model.layers[0], batch.views, h


def test_homo_first_values_ignore_phase_one(data):
    layer, views, h = fusion_setup(data, "homo_first")
    zero(m.weight for m in layer.hetero[0].query.values())  # phase-two logits constant: uniform attention
    before = layer_out(layer, views, h)
    perturb(layer.homo[0].vectors.values())  # changes the phase-one output z
    assert max_diff(before, layer_out(layer, views, h)) < 1e-6
    # the layer is not simply constant: its input does move the output
    assert max_diff(before, layer_out(layer, views, noisy(h))) > 1e-2


def test_homo_first_scores_depend_on_phase_one(data):
    layer, views, h = fusion_setup(data, "homo_first")
    before = layer_out(layer, views, h)
    perturb(layer.homo[0].vectors.values())
    assert max_diff(before, layer_out(layer, views, h)) > 1e-3


def test_hetero_first_values_ignore_phase_one(data):
    layer, views, h = fusion_setup(data, "hetero_first")
    zero(layer.homo[0].vectors.values())  # phase-two logits constant
    before = layer_out(layer, views, h)
    att = layer.hetero[0]
    perturb(
        [
            *(m.weight for m in att.query.values()),
            *(m.weight for m in att.key.values()),
            *(m.weight for m in att.value.values()),
        ]
    )  # changes the phase-one output y
    assert max_diff(before, layer_out(layer, views, h)) < 1e-6
    assert max_diff(before, layer_out(layer, views, noisy(h))) > 1e-2


def test_hetero_first_scores_depend_on_phase_one(data):
    layer, views, h = fusion_setup(data, "hetero_first")
    before = layer_out(layer, views, h)
    att = layer.hetero[0]
    perturb([*(m.weight for m in att.query.values()), *(m.weight for m in att.key.values())])
    assert max_diff(before, layer_out(layer, views, h)) > 1e-3


def test_async_both_orders_are_non_invasive_and_reach_the_output(data):
    layer, views, h = fusion_setup(data, "async")
    zero(m.weight for m in layer.hetero[0].query.values())  # order A, phase two uniform
    zero(layer.homo[1].vectors.values())  # order B, phase two uniform
    before = layer_out(layer, views, h)
    perturb(layer.homo[0].vectors.values())  # order A, phase one
    perturb([m.weight for m in layer.hetero[1].query.values()], seed=4)  # order B, phase one
    assert max_diff(before, layer_out(layer, views, h)) < 1e-6
    perturb([m.weight for m in layer.hetero[0].value.values()], seed=5)  # order A's values reach the output
    after_a = layer_out(layer, views, h)
    assert max_diff(before, after_a) > 1e-3
    perturb(layer.homo[1].vectors.values(), seed=6)  # and so do order B's phase-two scores
    assert max_diff(after_a, layer_out(layer, views, h)) > 1e-3


# ------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("fusion", FUSIONS)
def test_gradients_reach_every_parameter_the_readout_depends_on(data, fusion):
    """Two layers: every parameter outside the last layer gets a gradient (the first layer's code-node updates
    reach the item readout through the second). The last layer updates only the item nodes, so the code types'
    LayerNorms and gates there are never computed."""
    model = make_model(data, fusion, n_layers=2).train()
    batch = train_batch(data, model, 48, seed=1)
    loss = model.calculate_loss(batch)
    assert torch.isfinite(loss)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    without = {n for n, g in grads.items() if g is None or not (g != 0).any()}
    assert not {n for n in without if not n.startswith("layers.1.")}
    assert "layers.1.norm.item.weight" not in without
    if fusion == "none":  # no code nodes; the codes and features still reach the item table
        assert not without and model.graph_spec()[0] == [] and set(model.code_emb) == {"image", "text"}
        assert not make_model(data, fusion, item_repr="id").code_emb  # no content anywhere
        return
    assert set(model.code_emb) == {"image", "text"}
    code_updates = {
        f"layers.1.{m}.{c}.{w}" for m in ("norm", "gate") for c in ("image", "text") for w in ("weight", "bias")
    }
    assert {n for n in code_updates if n in grads} <= without
    assert all(grads[n] is None for n in code_updates if n in grads)  # not computed at all


# ------------------------------------------------------------------------------- batching and readout


@pytest.mark.parametrize("readout", ["last", "last+pool", "mixture"])
def test_batched_forward_equals_single_forwards(data, readout):
    model = make_model(data, "async", readout=readout).eval()
    histories, _ = sample(data, 8, seed=7)
    histories[0] = histories[0][-1:]  # a one-item history
    with torch.no_grad():
        together = model.full_sort_predict(train_batch(data, model, histories=histories))
        alone = torch.cat([model.full_sort_predict(train_batch(data, model, histories=[h])) for h in histories])
    assert together.shape == (8, data.n_items)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    # and the rows really differ between histories (no degenerate readout)
    assert (together[0, 1:] - together[1, 1:]).abs().max() > 1e-3


@pytest.mark.parametrize("temperature", [0.0, 0.1])
def test_mixture_readout_mixes_the_two_softmaxes(data, temperature):
    """readout=mixture scores = log(softmax(`last` scores) / 2 + softmax(`last+pool` scores) / 2) with the same
    weights; the loss is the mixture's cross-entropy."""
    models = {
        r: make_model(data, "async", readout=r, temperature=temperature).eval()
        for r in ("last", "last+pool", "mixture")
    }
    weights = models["mixture"].state_dict()
    models["last+pool"].load_state_dict(weights)
    models["last"].load_state_dict({k: v for k, v in weights.items() if not k.startswith("pool.")})
    histories, targets = sample(data, 8, seed=5)
    batch = train_batch(data, models["last"], histories=histories)
    batch.targets = torch.as_tensor(targets)
    with torch.no_grad():
        scores = {r: m.full_sort_predict(batch) for r, m in models.items()}
    loss = models["mixture"].calculate_loss(batch)
    loss.backward()
    probs = (scores["last"].softmax(-1) + scores["last+pool"].softmax(-1)) / 2
    torch.testing.assert_close(scores["mixture"].exp(), probs)
    assert torch.isneginf(scores["mixture"][:, 0]).all()  # padding never ranks
    torch.testing.assert_close(loss.detach(), -probs[torch.arange(8), batch.targets].log().mean())
    assert all(torch.isfinite(p.grad).all() for p in models["mixture"].parameters() if p.grad is not None)
    assert (probs - scores["last"].softmax(-1)).abs().max() > 1e-4  # the two heads do differ


@pytest.mark.parametrize("fusion", ["async", "sync"])
def test_missing_modality_is_finite(data, fusion):
    model = make_model(data, fusion, readout="last+pool").eval()
    codes = data.codes
    no_image = np.flatnonzero((codes["image"] < 0).all(1))[1:]  # skip the padding row 0
    assert len(no_image) > 0
    histories = [no_image[:1], np.concatenate([no_image, [1, 2]]), np.array([1, 2, 3])]
    modalities, views = model.graph_spec()
    no_image_at_all = {**codes, "image": np.full_like(codes["image"], -1)}
    with torch.no_grad():
        for table in (codes, no_image_at_all):
            batch = make_batch(histories, data.max_len, {m: table[m] for m in modalities}, views)
            assert batch.graph.num_nodes("image") > 0 or table is no_image_at_all
            out = model(batch)
            assert out.shape == (3, 16) and torch.isfinite(out).all()
            scores = model.full_sort_predict(batch)
            assert torch.isfinite(scores[:, 1:]).all()


@pytest.mark.parametrize("fusion", FUSIONS)
def test_relations_without_edges(data, fusion):
    """Batches in which whole relations are empty (one-item histories: no next/prev; no image codes at all)."""
    model = make_model(data, fusion).train()
    modalities, views = model.graph_spec()
    histories, targets = sample(data, 6, seed=9)
    singles = [h[-1:] for h in histories]
    tables = [data.codes] + ([{**data.codes, "image": np.full_like(data.codes["image"], -1)}] if modalities else [])
    for table in tables:
        for hist in (singles, histories):
            batch = make_batch(hist, data.max_len, {m: table[m] for m in modalities}, views, targets)
            loss = model.calculate_loss(batch)
            loss.backward()
            assert torch.isfinite(loss)
            assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_three_modalities_run(data):
    centroids = {**data.centroids, "audio": np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)}
    audio = np.random.default_rng(1).integers(0, 5, size=(data.n_items, 2))
    audio[0] = -1
    audio_features = np.random.default_rng(2).normal(size=(data.n_items, 8)).astype(np.float32)
    codes = {**data.codes, "audio": audio}
    torch.manual_seed(0)
    model = MMSR(
        MMSRConfig(dim=16, item_repr="id+codes+features"),
        data.n_items,
        data.max_len,
        centroids,
        codes,
        {**data.features, "audio": audio_features},
    )
    assert model.schema.ntypes == ["item", "audio", "image", "text"]
    histories, targets = sample(data, 16, seed=2)
    modalities, views = model.graph_spec()
    model.calculate_loss(
        make_batch(histories, data.max_len, {m: codes[m] for m in modalities}, views, targets)
    ).backward()
    assert model.code_emb["audio"].weight.grad.abs().sum() > 0


def test_gates_come_from_an_explicit_method(setup_async, data):
    """`gates(batch)` gives the update-gate weights of the two orders of every node a layer updates (the last
    layer: the item nodes, as in the forward pass); they are what the layer mixed its orders with."""
    model, batch, h = setup_async
    (gates,) = model.gates(batch)
    assert set(gates) == {"item"}
    with torch.no_grad():
        _, again = model.layers[0].update(batch.views, h, "item")
    for t, g in gates.items():
        assert g.shape == (batch.graph.num_nodes(t), 2)
        torch.testing.assert_close(g.sum(1), torch.ones(len(g)), atol=1e-6, rtol=0)
        assert ((g > 0) & (g < 1)).all()
        torch.testing.assert_close(g, again[t])
    sync = make_model(data, "sync").eval()
    assert sync.gates(train_batch(data, sync, 8, all_nodes=True)) == [{}]


def test_full_sort_predict_shape_and_padding(setup_async, data):
    model, batch, _ = setup_async
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
    assert scores.shape == (len(batch), data.n_items)
    assert torch.isneginf(scores[:, 0]).all()
    assert torch.isfinite(scores[:, 1:]).all()


def test_overfits_a_tiny_dataset(data):
    model = make_model(data, "async", dim=32, dropout=0.0, attn_dropout=0.0).train()
    batch = train_batch(data, model, 64, seed=11)
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        optim.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses[::10]
    model.eval()
    with torch.no_grad():
        top1 = model.full_sort_predict(batch).argmax(1)
    assert (top1 == batch.targets).float().mean() > 0.8


def test_item_repr_id_plus_codes_adds_the_mean_code_embedding(data):
    model = make_model(data, item_repr="id+codes")
    table = model.item_table().detach()
    codes = data.codes["image"]
    item = int(np.flatnonzero((codes >= 0).all(1))[1])
    expected = model.item_emb.weight[item].detach().clone()
    for m in model.modalities:
        present = data.codes[m][item][data.codes[m][item] >= 0]
        if len(present):
            expected += model.code_emb[m].weight[torch.as_tensor(present)].detach().mean(0)
    assert torch.allclose(table[item], expected, atol=1e-6)
    assert torch.equal(table[0], model.item_emb.weight[0].detach())  # padding has no codes
    assert not any(k.startswith("item_codes_") for k in model.state_dict())


def test_item_repr_follows_codes_dropped_at_test_time(data):
    model = make_model(data, item_repr="id+codes")
    before = model.item_table().detach()
    model.set_item_content({m: np.full_like(c, -1) for m, c in data.codes.items()}, data.features)
    assert torch.allclose(model.item_table().detach(), model.item_emb.weight.detach())
    assert not torch.allclose(before, model.item_emb.weight.detach())


def test_item_repr_features_adds_a_linear_map_of_the_reduced_features(data):
    model = make_model(data, item_repr="id+codes+features")
    with_features = model.item_table().detach()
    codes_only = with_features.clone()
    for m in model.modalities:
        codes_only -= torch.from_numpy(data.features[m]) @ model.feature_proj[m].weight.detach().T
    model.item_repr = "id+codes"
    assert torch.allclose(model.item_table().detach(), codes_only, atol=1e-6)
    assert not torch.allclose(with_features, codes_only)
    model.item_repr = "id+codes+features"
    model.set_item_content(data.codes, {m: np.zeros_like(f) for m, f in data.features.items()})
    assert torch.allclose(model.item_table().detach(), codes_only, atol=1e-6)
    assert not any(k.startswith("item_features_") for k in model.state_dict())


def test_item_repr_id_is_the_id_embedding(data):
    model = make_model(data, item_repr="id")
    assert torch.equal(model.item_table(), model.item_emb.weight)


def test_temperature_scores_are_cosine_similarities_over_it(data):
    model = make_model(data, temperature=0.1, readout="last+pool").eval()
    batch = train_batch(data, model)
    scores = model.full_sort_predict(batch)
    query, items = model(batch), model.item_table()
    expected = torch.nn.functional.cosine_similarity(query[:, None], items[None], dim=-1) / 0.1
    assert torch.allclose(scores[:, 1:], expected[:, 1:], atol=1e-4)
    assert torch.isinf(scores[:, 0]).all() and scores[:, 1:].abs().max() <= 10 + 1e-4
