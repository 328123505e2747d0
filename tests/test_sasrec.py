"""The SASRec baseline: same contract as MMSR, padding-safe, trains through the same trainer."""

import numpy as np
import torch

from mmsr_dgl.data import load_processed
from mmsr_dgl.nn import Batch, SASRec, SASRecConfig, make_batch
from mmsr_dgl.nn.dropout import RandMaskDropout


def test_padding_never_changes_the_output():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(dim=16, n_layers=2, n_heads=2, dropout=0.0, attn_dropout=0.0), 30, 8, {}, {}, {}).eval()
    histories = [np.array([3]), np.array([4, 5, 6, 7, 8, 9, 10, 11]), np.array([2, 3, 2])]
    out = model(make_batch(histories, 8))
    assert out.shape == (3, 16) and torch.isfinite(out).all()
    # the same history alone, and with a different longer neighbour, gives the same representation
    alone = model(make_batch([histories[2]], 8))
    assert torch.allclose(out[2], alone[0], atol=1e-5)
    # what the model sees is order-sensitive (causal attention + positions)
    swapped = model(make_batch([np.array([3, 2, 2])], 8))
    assert not torch.allclose(swapped[0], alone[0], atol=1e-4)


def test_scores_and_loss_follow_the_contract():
    model = SASRec(SASRecConfig(dim=16), 30, 8, {}, {}, {})
    batch = make_batch([np.array([1, 2]), np.array([5])], 8, targets=np.array([3, 4]))
    scores = model.full_sort_predict(batch)
    assert scores.shape == (2, 30) and torch.isinf(scores[:, 0]).all()
    loss = model.calculate_loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and model.item_emb.weight.grad.abs().sum() > 0


def test_sasrec_overfits_a_tiny_task():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(dim=32, dropout=0.0, attn_dropout=0.0), 20, 5, {}, {}, {})
    rng = np.random.default_rng(0)
    histories = [rng.integers(1, 20, size=rng.integers(1, 6)) for _ in range(32)]
    targets = np.array([(h[-1] % 19) + 1 for h in histories])  # next item is a function of the last one
    batch = make_batch(histories, 5, targets=targets)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model.calculate_loss(batch).item()
    for _ in range(80):
        optimizer.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * first


def test_rand_mask_dropout_is_inverted_dropout():
    torch.manual_seed(0)
    drop = RandMaskDropout(0.5)
    x = torch.ones(200_000)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.5) < 0.01  # Bernoulli(1 - p) mask
    assert torch.equal(y[kept], torch.full_like(y[kept], 2.0))  # scaled by 1 / (1 - p)
    assert abs(y.mean().item() - 1.0) < 0.02  # expectation preserved
    assert torch.equal(drop.eval()(x), x)
    model = SASRec(SASRecConfig(dim=16, n_layers=2, dropout=0.3), 30, 8, {}, {}, {})
    hidden = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(hidden) == 1 + 3 * 2 and all(isinstance(m, RandMaskDropout) and m.p == 0.3 for m in hidden)


def test_sasrec_batches_build_no_graph(synthetic_data_dir):
    """SASRec reads only the padded sequences: its training batches carry no MSGraph and no views."""
    from mmsr_dgl.training.loader import split_batches

    data = load_processed(synthetic_data_dir)
    model = SASRec(SASRecConfig(dim=16), data.n_items, data.max_len, {}, {}, {})
    assert model.graph_spec() is None
    batch = next(iter(split_batches(data, model, "train", 32)))
    assert batch.graph is None and batch.views == {} and batch.last is None
    assert batch.seq.shape == (32, data.max_len) and batch.targets.shape == (32,)
    assert torch.isfinite(model.calculate_loss(batch))


def test_sequence_batches_make_every_position_a_target(synthetic_data_dir):
    """Each user with a training target once per epoch: inputs the training part of the history (the last max_len
    items before the validation target but one), targets each input position's next item."""
    from mmsr_dgl.training.loader import sequence_batches

    data = load_processed(synthetic_data_dir)
    batches = list(sequence_batches(data, 64, shuffle_seed=0))
    users, ends = data.splits["valid"]
    assert sum(len(b) for b in batches) == int((ends >= 2).sum())
    train_parts = {
        tuple(data.seq_items[data.seq_offsets[u] : data.seq_offsets[u] + e][-(data.max_len + 1) :])
        for u, e in zip(users, ends)
        if e >= 2
    }
    batch = batches[0]
    assert batch.seq.shape == batch.targets.shape == (64, data.max_len) and batch.graph is None
    for seq, targets in zip(batch.seq.tolist(), batch.targets.tolist()):
        items = [i for i in seq if i]
        nexts = [t for t in targets if t]
        assert len(items) == len(nexts) and items[1:] == nexts[:-1]  # the next item of each position
        assert tuple(items[:1] + nexts) in train_parts  # a user's training part, up to the validation target
    assert [len(b) for b in sequence_batches(data, 64, 0)] == [len(b) for b in batches]
    assert not torch.equal(next(iter(sequence_batches(data, 64, 1))).seq, batch.seq)  # the seed shuffles


def test_all_position_loss_is_the_mean_cross_entropy_of_every_position():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(dim=16, n_layers=1, n_heads=1, dropout=0.0, attn_dropout=0.0), 30, 6, {}, {}, {}).eval()
    seq = torch.tensor([[0, 0, 3, 4, 5, 6], [0, 0, 0, 0, 0, 7]])
    targets = torch.tensor([[0, 0, 4, 5, 6, 8], [0, 0, 0, 0, 0, 9]])
    batch = Batch(seq=seq, targets=targets)
    hidden = model.hidden(batch, model.item_table())[0]  # [2, 6, d]
    scores = hidden @ model.item_table().T
    expected = torch.stack(
        [
            torch.nn.functional.cross_entropy(
                scores[b, p].index_fill(0, torch.tensor([0]), float("-inf")), targets[b, p]
            )
            for b, p in [(0, 2), (0, 3), (0, 4), (0, 5), (1, 5)]
        ]
    ).mean()
    torch.testing.assert_close(model.calculate_loss(batch), expected)


def test_sampled_softmax_scores_the_target_against_uniform_negatives():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(dim=16, n_layers=1, n_heads=1, dropout=0.0, attn_dropout=0.0), 30, 6, {}, {}, {}).eval()
    query, items = torch.randn(5, 16), model.item_table()
    targets = torch.tensor([1, 2, 3, 4, 5])
    model.n_negatives = 28 * 50  # so many draws that every item comes up as a negative
    torch.manual_seed(1)
    loss = model.sampled_loss(query, targets, items)
    # every non-padding item but the target, each drawn about 50 times: close to full cross-entropy with each
    # competitor counted 50 times, i.e. log-sum-exp shifted by log 50
    scores = query @ items.T
    full = torch.logsumexp(
        torch.cat(
            [
                scores[torch.arange(5), targets][:, None],
                scores[:, 1:].masked_fill(torch.nn.functional.one_hot(targets, 30)[:, 1:].bool(), float("-inf"))
                + np.log(50),
            ],
            1,
        ),
        1,
    )
    expected = (full - scores[torch.arange(5), targets]).mean()
    assert abs(loss.item() - expected.item()) < 0.05 * expected.item()
    # a mixture of two queries: each query's sampled log-softmax at the target, mixed by the weights
    queries, log_weights = torch.randn(5, 2, 16), torch.randn(5, 2).log_softmax(-1)
    torch.manual_seed(1)
    loss = model.sampled_loss((queries, log_weights), targets, items)
    scores = queries @ items.T  # [5, 2, 30]
    target = scores.gather(-1, targets.view(-1, 1, 1).expand(-1, 2, 1))[..., 0]  # [5, 2]
    others = scores[..., 1:].masked_fill(torch.nn.functional.one_hot(targets, 30)[:, None, 1:].bool(), float("-inf"))
    log_p = target - torch.logsumexp(torch.cat([target[..., None], others + np.log(50)], -1), -1)
    expected = -torch.logsumexp(log_weights + log_p, 1).mean()
    assert abs(loss.item() - expected.item()) < 0.05 * expected.item()
    model.n_negatives = 8
    batch = make_batch([np.array([1, 2]), np.array([5])], 6, targets=np.array([3, 4]))
    loss = model.calculate_loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and model.item_emb.weight.grad[0].abs().sum() == 0  # padding is never a negative


def content_sasrec(data, readout: str = "mixture") -> SASRec:
    torch.manual_seed(0)
    config = SASRecConfig(
        dim=16, dropout=0.0, attn_dropout=0.0, readout=readout, item_repr="id+codes+features", temperature=0.1
    )
    return SASRec(config, data.n_items, data.max_len, data.centroids, data.codes, data.features).eval()


def test_sasrec_with_the_mmsr_item_table_and_mixture_readout(synthetic_data_dir):
    """With MMSR's item table and readout, every position's query pools over the positions it sees: the loss of the
    last positions alone (sequence batches) equals the loss of the same targets as one target per history."""
    data = load_processed(synthetic_data_dir)
    model = content_sasrec(data)
    assert set(model.code_emb) == set(data.modalities) and not torch.equal(model.item_table(), model.item_emb.weight)
    seq = torch.nn.functional.pad(torch.tensor([[3, 4, 5, 6], [0, 0, 2, 7]]), (data.max_len - 4, 0))  # left-padded
    last_targets = torch.tensor([8, 9])
    targets = torch.zeros_like(seq)
    targets[:, -1] = last_targets
    per_position = model.calculate_loss(Batch(seq=seq, targets=targets))
    torch.testing.assert_close(per_position, model.calculate_loss(Batch(seq=seq, targets=last_targets)))
    states, allowed = model.hidden(Batch(seq=seq), model.item_table())
    pooled = model.pool.over_positions(states, states, allowed)  # [2, L, d]
    p = data.max_len - 3  # the position of item 4 in the first row, which reads itself and item 3
    seen = states[0, p - 1 : p + 1]  # [2, d]
    alpha = model.pool.weight(torch.sigmoid(model.pool.query(states[0, p]) + model.pool.key(seen)))  # [2, 1]
    expected = model.pool.out(torch.cat([states[0, p], (alpha * seen).sum(0)]))
    torch.testing.assert_close(pooled[0, p], expected)
    per_position.backward()
    for name in ("code_emb", "feature_proj", "pool.key"):
        assert any(
            p.grad is not None and (p.grad != 0).any() for n, p in model.named_parameters() if n.startswith(name)
        ), name
