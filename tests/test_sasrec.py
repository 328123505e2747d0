"""The SASRec baseline: same contract as MMSR, padding-safe, trains through the same trainer."""
import numpy as np
import torch

from mmsr_dgl.nn import SASRec, SASRecConfig, make_batch
from mmsr_dgl.nn.dropout import RandMaskDropout


def test_padding_never_changes_the_output():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(dim=16, n_layers=2, n_heads=2, dropout=0.0, attn_dropout=0.0), 30, 8).eval()
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
    model = SASRec(SASRecConfig(dim=16), 30, 8)
    batch = make_batch([np.array([1, 2]), np.array([5])], 8, targets=np.array([3, 4]))
    scores = model.full_sort_predict(batch)
    assert scores.shape == (2, 30) and torch.isinf(scores[:, 0]).all()
    loss = model.calculate_loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and model.item_emb.weight.grad.abs().sum() > 0


def test_sasrec_overfits_a_tiny_task():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(dim=32, dropout=0.0, attn_dropout=0.0), 20, 5)
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
    model = SASRec(SASRecConfig(dim=16, dropout=0.3), 30, 8)
    hidden = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(hidden) == 1 + 3 * 2 and all(isinstance(m, RandMaskDropout) and m.p == 0.3 for m in hidden)


def test_sasrec_batches_build_no_graph(synthetic_data_dir):
    """SASRec reads only the padded sequences: its training batches carry no MSGraph and no views."""
    from mmsr_dgl.data import load_processed
    from mmsr_dgl.training.loader import split_batches

    data = load_processed(synthetic_data_dir)
    model = SASRec(SASRecConfig(dim=16), data.n_items, data.max_len)
    assert model.graph_spec() is None
    batch = next(iter(split_batches(data, model, "train", 32)))
    assert batch.graph is None and batch.views == {} and batch.last is None
    assert batch.seq.shape == (32, data.max_len) and batch.targets.shape == (32,)
    assert torch.isfinite(model.calculate_loss(batch))
