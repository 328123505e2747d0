"""The MMSR model: grouped softmax, non-invasive fusion, gradients, batching, missing modalities, overfitting."""
from __future__ import annotations

import os

os.environ.setdefault("DGLBACKEND", "pytorch")

import dgl  # noqa: E402
import dgl.function as fn  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from dgl.nn.functional import edge_softmax  # noqa: E402
from torch import nn  # noqa: E402

from mmsr_dgl.data import PreprocessConfig, load_processed, preprocess  # noqa: E402
from mmsr_dgl.data.preprocess import Inputs  # noqa: E402
from mmsr_dgl.graph import make_batch  # noqa: E402
from mmsr_dgl.nn import MMSR, MMSRConfig, attend  # noqa: E402

FUSIONS = ("async", "homo_first", "hetero_first", "sync", "id_only")


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
    preprocess(PreprocessConfig(synthetic_users=200, synthetic_items=120, synthetic_groups=8, n_codes=16),
               Inputs(synthetic=True), out, log=lambda m: None)
    return load_processed(out)


def make_model(data, fusion: str = "async", dim: int = 16, seed: int = 0, **kw) -> MMSR:
    torch.manual_seed(seed)
    return MMSR(MMSRConfig(dim=dim, fusion=fusion, **kw), data.n_items, data.max_len, data.centroids, data.codes,
                data.features)


def codes_for(model: MMSR, data) -> dict[str, np.ndarray]:
    return {m: data.codes[m] for m in model.modalities}


def sample(data, n: int, seed: int = 0):
    """Histories and targets of `n` random training samples."""
    users, positions = data.splits["train"]
    idx = np.random.default_rng(seed).choice(len(users), size=n, replace=False)
    return data.inputs(users[idx], positions[idx]), data.targets("train")[idx]


def train_batch(data, model: MMSR, n: int = 32, seed: int = 0):
    histories, targets = sample(data, n, seed)
    return make_batch(histories, codes_for(model, data), data.max_len, targets)


def dst_sums(group, weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per node type, the sum of the edge `weights` [E, 1] over every in-edge of each node of the group."""
    return {t: x.squeeze(-1) for t, x in group.split(dgl.ops.copy_e_sum(group.graph, weights)).items()}


def hetero_reference(graph, relations, keys, queries, values) -> dict[str, torch.Tensor]:
    """The group attention written per relation on DGL's heterograph, as DGL's HGT example does: keys, queries and
    values map relation -> source [N_src, d], destination [N_dst, d] and source [N_src, d] features."""
    g = dgl.edge_type_subgraph(graph, [r for r in relations if graph.num_edges(r)])
    with g.local_scope():
        logits = {}
        for rel in g.canonical_etypes:
            src, dst = g.edges(etype=rel)
            logits[rel] = (keys[rel][src] * queries[rel][dst]).sum(-1, keepdim=True)
        weights = edge_softmax(g, logits)
        funcs = {}
        for rel in g.canonical_etypes:
            g.edges[rel].data["m"] = weights[rel] * values[rel][g.edges(etype=rel)[0]]
            funcs[rel] = (fn.copy_e("m", "m"), fn.sum("m", "out"))
        g.multi_update_all(funcs, "sum")
        return {t: g.nodes[t].data["out"] for t in g.ntypes}


# ------------------------------------------------------------------------------------------ softmax groups


@pytest.fixture(scope="module")
def setup_async(data):
    model = make_model(data, "async").eval()
    batch = train_batch(data, model, 32)
    with torch.no_grad():
        h = model.node_inputs(batch, model.item_table())
    return model, batch, h


def test_homogeneous_softmax_sums_to_one_per_node(setup_async):
    model, batch, h = setup_async
    att = model.layers[0].homo[0]
    with torch.no_grad():
        w = edge_softmax(batch.homo.graph, att.logits(batch.homo, h))
    sums = dst_sums(batch.homo, w)
    assert set(sums) == {"item", "image", "text"}
    for t, s in sums.items():
        assert s.shape == (batch.graph.num_nodes(t),)
        torch.testing.assert_close(s, torch.ones_like(s), atol=1e-5, rtol=0)
    # the normalisation spans several relations: self-loop weights alone are clearly below one somewhere
    self_w = w[batch.homo.span([("item", "self", "item")])[0]].squeeze(-1)
    assert (self_w < 0.9).any()


def test_heterogeneous_softmax_sums_to_one_per_node(setup_async):
    model, batch, h = setup_async
    att = model.layers[0].hetero[0]
    with torch.no_grad():
        w = edge_softmax(batch.hetero.graph, att.logits(batch.hetero, h))
    for t, s in dst_sums(batch.hetero, w).items():
        assert s.shape == (batch.graph.num_nodes(t),)
        torch.testing.assert_close(s, torch.ones_like(s), atol=1e-5, rtol=0)


def test_attend_averages_within_one_group(setup_async):
    """attend() gives a convex combination per node: all-ones values come back as ones in both groups."""
    model, batch, h = setup_async
    layer = model.layers[0]
    with torch.no_grad():
        for group, att in ((batch.homo, layer.homo[0]), (batch.hetero, layer.hetero[1])):
            ones = torch.ones(group.graph.num_nodes("slot"), 3)
            out = attend(group, att.logits(group, h), ones, nn.Identity())
            assert set(out) == set(h)
            for t, x in out.items():
                assert x.shape == (batch.graph.num_nodes(t), 3)
                torch.testing.assert_close(x, torch.ones_like(x), atol=1e-5, rtol=0)


def test_group_attention_equals_the_per_relation_heterograph_attention(setup_async):
    """The flat relation-group graph computes exactly what per-relation heterograph code computes."""
    model, batch, h = setup_async
    layer = model.layers[0]
    homo, hetero = layer.homo[0], layer.hetero[0]
    with torch.no_grad():
        relations = model.schema.homogeneous
        expected = hetero_reference(batch.graph, relations,
                                    {r: h[r[0]] * homo.vectors["|".join(r)] for r in relations},
                                    {r: h[r[2]] for r in relations}, {r: h[r[0]] for r in relations})
        got = attend(batch.homo, homo.logits(batch.homo, h), homo.values(batch.homo, h), nn.Identity())
        for t in h:
            torch.testing.assert_close(got[t], expected[t], atol=1e-5, rtol=1e-5)
        relations = model.schema.heterogeneous
        expected = hetero_reference(batch.graph, relations,
                                    {r: hetero.key[r[0]](h[r[0]]) for r in relations},
                                    {r: hetero.query[r[2]](h[r[2]]) * hetero.scale for r in relations},
                                    {r: hetero.value[r[0]](h[r[0]]) for r in relations})
        got = attend(batch.hetero, hetero.logits(batch.hetero, h), hetero.values(batch.hetero, h), nn.Identity())
        for t in h:
            torch.testing.assert_close(got[t], expected[t], atol=1e-5, rtol=1e-5)
        assert max((got[t] - h[t]).abs().max() for t in h) > 1e-2  # not the identity


def test_sync_equals_one_per_relation_heterograph_attention_over_all_relations(data):
    """sync: one softmax over the homogeneous and the heterogeneous edges (self-loops once, as homogeneous), each
    scored and carrying values as in its own group; also with the modalities given in another order."""
    model = make_model(data, "sync").eval()
    layer, schema = model.layers[0], model.schema
    histories, _ = sample(data, 16, seed=5)
    batch = make_batch(histories, codes_for(model, data), data.max_len)
    reversed_codes = dict(reversed(list(codes_for(model, data).items())))
    with torch.no_grad():
        h = model.node_inputs(batch, model.item_table())
        homo, hetero = layer.homo[0], layer.hetero[0]
        keys, queries, values = {}, {}, {}
        for r in schema.etypes:
            if r in schema.homogeneous:
                keys[r], queries[r], values[r] = h[r[0]] * homo.vectors["|".join(r)], h[r[2]], h[r[0]]
            else:
                keys[r], queries[r] = hetero.key[r[0]](h[r[0]]), hetero.query[r[2]](h[r[2]]) * hetero.scale
                values[r] = hetero.value[r[0]](h[r[0]])
        expected = hetero_reference(batch.graph, schema.etypes, keys, queries, values)
        got = layer._sync(batch, h)
        other = layer._sync(make_batch(histories, reversed_codes, data.max_len), h)
    for t in h:
        torch.testing.assert_close(got[t], expected[t], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(other[t], got[t], atol=1e-5, rtol=1e-5)


def test_one_softmax_over_both_groups_mixes_them(setup_async):
    """Over batch.joint (sync's graph) one softmax spans both groups, so neither group's weights sum to one."""
    model, batch, h = setup_async
    layer, joint = model.layers[0], batch.joint
    edges, _ = batch.hetero.span(joint.relations[len(batch.homo.relations):])
    with torch.no_grad():
        logits = torch.cat([layer.homo[0].logits(batch.homo, h), layer.hetero[0].logits(batch.hetero, h)[edges]])
        w = edge_softmax(joint.graph, logits)
    homo_edges = joint.span(model.schema.homogeneous)[0]
    total = dst_sums(joint, w)
    homo = dst_sums(joint, torch.zeros_like(w).index_copy(0, torch.arange(homo_edges.start, homo_edges.stop),
                                                          w[homo_edges]))
    in_degree = {t: x.squeeze(-1) for t, x in joint.split(joint.graph.in_degrees().unsqueeze(-1)).items()}
    for t in ("item", "image", "text"):
        torch.testing.assert_close(total[t], torch.ones_like(total[t]), atol=1e-5, rtol=0)
        has_hetero = in_degree[t] > dst_sums(batch.homo, torch.ones(batch.homo.graph.num_edges(), 1))[t]
        assert has_hetero.any()
        # nodes reached by the heterogeneous group get homogeneous weights summing to less than one
        assert (homo[t][has_hetero] < 1 - 1e-3).all()


@pytest.mark.parametrize("fusion", ["async", "homo_first", "hetero_first", "sync"])
def test_layer_phases_run_on_the_relation_groups(data, fusion, monkeypatch):
    """Each phase of a layer normalises over exactly one relation group (sync: over the whole graph), in order."""
    import mmsr_dgl.nn.layer as layer_module

    calls, real = [], layer_module.attend

    def spy(group, logits, *args, **kwargs):
        calls.append(frozenset(group.relations))
        return real(group, logits, *args, **kwargs)

    monkeypatch.setattr(layer_module, "attend", spy)
    model = make_model(data, fusion).eval()
    batch = train_batch(data, model, 8, seed=4)
    with torch.no_grad():
        model(batch)
    homo, hetero = frozenset(model.schema.homogeneous), frozenset(model.schema.heterogeneous)
    expected = {"homo_first": [homo, hetero], "hetero_first": [hetero, homo], "async": [homo, hetero, hetero, homo],
                "sync": [frozenset(model.schema.etypes)]}[fusion]
    assert calls == expected


# ----------------------------------------------------------------------------------- non-invasive fusion


def layer_out(layer, batch, h):
    with torch.no_grad():
        return layer(batch, h)


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
    batch = train_batch(data, model, 16, seed=3)
    with torch.no_grad():
        h = model.node_inputs(batch, model.item_table())
    return model.layers[0], batch, h


def test_homo_first_values_ignore_phase_one(data):
    layer, batch, h = fusion_setup(data, "homo_first")
    zero(m.weight for m in layer.hetero[0].query.values())  # phase-two logits constant: uniform attention
    before = layer_out(layer, batch, h)
    perturb(layer.homo[0].vectors.values())  # changes the phase-one output z
    assert max_diff(before, layer_out(layer, batch, h)) < 1e-6
    # the layer is not simply constant: its input does move the output
    assert max_diff(before, layer_out(layer, batch, noisy(h))) > 1e-2


def test_homo_first_scores_depend_on_phase_one(data):
    layer, batch, h = fusion_setup(data, "homo_first")
    before = layer_out(layer, batch, h)
    perturb(layer.homo[0].vectors.values())
    assert max_diff(before, layer_out(layer, batch, h)) > 1e-3


def test_hetero_first_values_ignore_phase_one(data):
    layer, batch, h = fusion_setup(data, "hetero_first")
    zero(layer.homo[0].vectors.values())  # phase-two logits constant
    before = layer_out(layer, batch, h)
    att = layer.hetero[0]
    perturb([*(m.weight for m in att.query.values()), *(m.weight for m in att.key.values()),
             *(m.weight for m in att.value.values())])  # changes the phase-one output y
    assert max_diff(before, layer_out(layer, batch, h)) < 1e-6
    assert max_diff(before, layer_out(layer, batch, noisy(h))) > 1e-2


def test_hetero_first_scores_depend_on_phase_one(data):
    layer, batch, h = fusion_setup(data, "hetero_first")
    before = layer_out(layer, batch, h)
    att = layer.hetero[0]
    perturb([*(m.weight for m in att.query.values()), *(m.weight for m in att.key.values())])
    assert max_diff(before, layer_out(layer, batch, h)) > 1e-3


def test_async_both_orders_are_non_invasive(data):
    layer, batch, h = fusion_setup(data, "async")
    zero(m.weight for m in layer.hetero[0].query.values())  # order A, phase two uniform
    zero(layer.homo[1].vectors.values())  # order B, phase two uniform
    before = layer_out(layer, batch, h)
    perturb(layer.homo[0].vectors.values())  # order A, phase one
    perturb([m.weight for m in layer.hetero[1].query.values()], seed=4)  # order B, phase one
    assert max_diff(before, layer_out(layer, batch, h)) < 1e-6
    perturb([m.weight for m in layer.hetero[0].value.values()], seed=5)  # order A's values do matter
    assert max_diff(before, layer_out(layer, batch, h)) > 1e-3


# ------------------------------------------------------------------------------------------- gradients


def structurally_dead(fusion: str, n_layers: int) -> set[str]:
    """Parameters that cannot influence the loss, which reads only the item nodes of the last layer.

    In the last layer, whatever only shapes code-node outputs is unused: the code types' LayerNorms (and gates),
    queries of code destinations in a final phase, and under sync/hetero_first the homogeneous vectors of code
    relations (under sync also the item key/value, which only serve item -> code edges). id_only runs a
    homogeneous-only layer on item nodes, so every parameter it has is used.
    """
    codes = ("image", "text")
    code_rels = [f"{c}|{r}|{c}" for c in codes for r in ("next", "prev", "self")]
    last = f"layers.{n_layers - 1}"
    if fusion == "id_only":
        return set()
    dead = {f"{last}.norm.{c}.{w}" for c in codes for w in ("weight", "bias")}
    if fusion == "async":
        dead |= {f"{last}.gate.{c}.{w}" for c in codes for w in ("weight", "bias")}
        dead |= {f"{last}.hetero.{i}.query.{c}.weight" for i in (0, 1) for c in codes}
        dead |= {f"{last}.homo.1.vectors.{r}" for r in code_rels}  # order B ends with the homogeneous phase
    elif fusion == "homo_first":
        dead |= {f"{last}.hetero.0.query.{c}.weight" for c in codes}
    else:  # hetero_first, sync
        dead |= {f"{last}.hetero.0.query.{c}.weight" for c in codes}
        dead |= {f"{last}.homo.0.vectors.{r}" for r in code_rels}
        if fusion == "sync":
            dead |= {f"{last}.hetero.0.key.item.weight", f"{last}.hetero.0.value.item.weight"}
    return dead


@pytest.mark.parametrize("fusion", FUSIONS)
def test_gradients_reach_every_parameter(data, fusion):
    """Two layers, so that the first layer's code-node updates reach the item readout through the second."""
    model = make_model(data, fusion, n_layers=2).train()
    batch = train_batch(data, model, 48, seed=1)
    loss = model.calculate_loss(batch)
    assert torch.isfinite(loss)
    loss.backward()
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    without = {n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not (p.grad != 0).any())}
    dead = structurally_dead(fusion, 2)
    assert dead <= names  # the expected names exist, so the comparison below is not vacuous
    assert without == dead
    assert (not model.code_emb) if fusion == "id_only" else set(model.code_emb) == {"image", "text"}


# ------------------------------------------------------------------------------- batching and readout


@pytest.mark.parametrize("readout", ["last", "last+pool", "last+pool_residual", "mixture", "mixture_gated",
                                     "mixture_anchored"])
def test_batched_forward_equals_single_forwards(data, readout):
    model = make_model(data, "async", readout=readout).eval()
    histories, _ = sample(data, 8, seed=7)
    histories[0] = histories[0][-1:]  # a one-item history
    codes = codes_for(model, data)
    with torch.no_grad():
        together = model.full_sort_predict(make_batch(histories, codes, data.max_len))
        alone = torch.cat([model.full_sort_predict(make_batch([h], codes, data.max_len)) for h in histories])
    assert together.shape == (8, data.n_items)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    # and the rows really differ between histories (no degenerate readout)
    assert (together[0, 1:] - together[1, 1:]).abs().max() > 1e-3


def test_residual_readout_is_last_plus_pool(data):
    """last+pool_residual = the `last` readout + the `last+pool` readout, with the same weights."""
    models = {r: make_model(data, "async", readout=r).eval() for r in ("last", "last+pool", "last+pool_residual")}
    weights = models["last+pool_residual"].state_dict()
    models["last+pool"].load_state_dict(weights)
    models["last"].load_state_dict({k: v for k, v in weights.items() if not k.startswith("pool.")})
    histories, _ = sample(data, 8, seed=3)
    batch = make_batch(histories, codes_for(models["last"], data), data.max_len)
    with torch.no_grad():
        out = {r: m(batch) for r, m in models.items()}
    torch.testing.assert_close(out["last+pool_residual"], out["last"] + out["last+pool"])
    assert (out["last+pool"] - out["last"]).abs().max() > 1e-3  # the pool does change the readout


@pytest.mark.parametrize("readout,temperature,pool_weight", [
    ("mixture", 0.0, 0.5), ("mixture", 0.1, 0.5), ("mixture", 0.1, 0.8), ("mixture_gated", 0.1, 0.5),
    ("mixture_anchored", 0.1, 0.5), ("ensemble", 0.1, 0.5)])
def test_mixture_readout_mixes_the_two_softmaxes(data, readout, temperature, pool_weight):
    """readout=mixture scores = log(w softmax(`last` scores) + (1 - w) softmax(`last+pool` scores)) with the same
    weights; w = 1 - pool_weight, or per history under mixture_gated. The loss is the mixture's cross-entropy; under
    mixture_anchored its mean with the `last+pool` readout's own cross-entropy; under ensemble the mean of the two
    readouts' own cross-entropies."""
    models = {r: make_model(data, "async", readout=r, temperature=temperature, pool_weight=pool_weight).eval()
              for r in ("last", "last+pool", readout)}
    weights = models[readout].state_dict()
    models["last+pool"].load_state_dict({k: v for k, v in weights.items() if not k.startswith("mixer.")})
    models["last"].load_state_dict({k: v for k, v in weights.items() if not k.startswith(("pool.", "mixer."))})
    histories, targets = sample(data, 8, seed=5)
    batch = make_batch(histories, codes_for(models["last"], data), data.max_len, targets)
    with torch.no_grad():
        scores = {r: m.full_sort_predict(batch) for r, m in models.items()}
        mix = models[readout](batch)[1].exp()  # [8, 2]
    loss = models[readout].calculate_loss(batch)
    loss.backward()
    probs = mix[:, :1] * scores["last"].softmax(-1) + mix[:, 1:] * scores["last+pool"].softmax(-1)
    torch.testing.assert_close(scores[readout].exp(), probs)
    torch.testing.assert_close(mix.sum(1), torch.ones(8))
    if readout == "mixture_gated":
        assert (mix[:, 0] - mix[0, 0]).abs().max() > 1e-4  # the weights depend on the history
    else:
        torch.testing.assert_close(mix, torch.tensor([[1 - pool_weight, pool_weight]]).expand(8, 2))
    assert torch.isneginf(scores[readout][:, 0]).all()  # padding never ranks
    rows = torch.arange(8)
    own = [F.cross_entropy(scores[r], batch.targets) for r in ("last", "last+pool")]
    mixture = -probs[rows, batch.targets].log().mean()
    expected = {"ensemble": (own[0] + own[1]) / 2, "mixture_anchored": (mixture + own[1]) / 2}.get(readout, mixture)
    torch.testing.assert_close(loss.detach(), expected)
    assert all(torch.isfinite(p.grad).all() for p in models[readout].parameters() if p.grad is not None)
    assert (probs - scores["last"].softmax(-1)).abs().max() > 1e-4  # the two heads do differ


@pytest.mark.parametrize("fusion", ["async", "sync"])
def test_missing_modality_is_finite(data, fusion):
    model = make_model(data, fusion).eval()
    codes = codes_for(model, data)
    no_image = np.flatnonzero((codes["image"] < 0).all(1))[1:]  # skip the padding row 0
    assert len(no_image) > 0
    histories = [no_image[:1], np.concatenate([no_image, [1, 2]]), np.array([1, 2, 3])]
    no_image_at_all = {**codes, "image": np.full_like(codes["image"], -1)}
    with torch.no_grad():
        for table in (codes, no_image_at_all):
            batch = make_batch(histories, table, data.max_len)
            assert batch.graph.num_nodes("image") > 0 or table is no_image_at_all
            out = model(batch)
            assert out.shape == (3, 16) and torch.isfinite(out).all()
            scores = model.full_sort_predict(batch)
            assert torch.isfinite(scores[:, 1:]).all()


@pytest.mark.parametrize("fusion", FUSIONS)
def test_relations_without_edges(data, fusion):
    """Batches in which whole relations are empty (one-item histories: no next/prev; no image codes at all)."""
    model = make_model(data, fusion).train()
    codes = codes_for(model, data)
    histories, targets = sample(data, 6, seed=9)
    singles = [h[-1:] for h in histories]
    tables = [codes] + ([{**codes, "image": np.full_like(codes["image"], -1)}] if codes else [])
    for table in tables:
        for hist in (singles, histories):
            batch = make_batch(hist, table, data.max_len, targets)
            loss = model.calculate_loss(batch)
            loss.backward()
            assert torch.isfinite(loss)
            assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_three_modalities_run(data):
    centroids = {**data.centroids, "audio": np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)}
    audio = np.random.default_rng(1).integers(0, 5, size=(data.n_items, 2))
    audio[0] = -1
    audio_features = np.random.default_rng(2).normal(size=(data.n_items, 8)).astype(np.float32)
    torch.manual_seed(0)
    model = MMSR(MMSRConfig(dim=16, item_repr="id+codes+features"), data.n_items, data.max_len, centroids,
                 {**data.codes, "audio": audio}, {**data.features, "audio": audio_features})
    assert model.schema.ntypes == ["item", "audio", "image", "text"]
    histories, targets = sample(data, 16, seed=2)
    batch = make_batch(histories, {**data.codes, "audio": audio}, data.max_len, targets)
    model.calculate_loss(batch).backward()
    assert model.code_emb["audio"].weight.grad.abs().sum() > 0


def test_gates_are_distributions(setup_async, data):
    model, batch, _ = setup_async
    with torch.no_grad():
        model(batch)
    (gates,) = model.gates()
    assert set(gates) == {"item", "image", "text"}
    for t, g in gates.items():
        assert g.shape == (batch.graph.num_nodes(t), 2)
        torch.testing.assert_close(g.sum(1), torch.ones(len(g)), atol=1e-6, rtol=0)
        assert ((g > 0) & (g < 1)).all()


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
    model.config.item_repr = "id+codes"
    assert torch.allclose(model.item_table().detach(), codes_only, atol=1e-6)
    assert not torch.allclose(with_features, codes_only)
    model.config.item_repr = "id+codes+features"
    model.set_item_content(data.codes, {m: np.zeros_like(f) for m, f in data.features.items()})
    assert torch.allclose(model.item_table().detach(), codes_only, atol=1e-6)
    assert not any(k.startswith("item_features_") for k in model.state_dict())


def test_item_repr_id_is_the_id_embedding(data):
    model = make_model(data, item_repr="id")
    assert torch.equal(model.item_table(), model.item_emb.weight)


def test_temperature_scores_are_cosine_similarities_over_it(data):
    model = make_model(data, temperature=0.1).eval()
    batch = train_batch(data, model)
    scores = model.full_sort_predict(batch)
    query, items = model(batch), model.item_table()
    expected = torch.nn.functional.cosine_similarity(query[:, None], items[None], dim=-1) / 0.1
    assert torch.allclose(scores[:, 1:], expected[:, 1:], atol=1e-4)
    assert torch.isinf(scores[:, 0]).all() and scores[:, 1:].abs().max() <= 10 + 1e-4
