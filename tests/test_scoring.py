"""The loss kernels of the model contract against their plain definitions; the sampled softmax's rows and
sparse updates."""

import pytest
import torch
import torch.nn.functional as F
from test_model import data, make_model, train_batch  # noqa: F401  (the synthetic data fixture)

from mmsr_dgl.nn import losses
from mmsr_dgl.training.optim import DenseSparseAdam, make_optimizer


@pytest.fixture
def model(data):  # noqa: F811
    return make_model(data, temperature=0.1)


def test_target_log_prob_matches_log_softmax_in_value_and_gradient(monkeypatch):
    monkeypatch.setattr(losses, "BLOCK_BYTES", 4 * 7 * 5)  # 5 keys per chunk: 23 keys in 5 chunks, one partial
    torch.manual_seed(0)
    query = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(23, 4, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([0, 3, 22, 5, 5, 11, 17])
    weights = torch.randn(7, dtype=torch.float64)
    got = losses.target_log_prob(query, keys, index)
    expected = (query @ keys.T).log_softmax(-1).gather(1, index[:, None])[:, 0]
    torch.testing.assert_close(got, expected)
    grads = torch.autograd.grad((got * weights).sum(), (query, keys))
    expected_grads = torch.autograd.grad((expected * weights).sum(), (query, keys))
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e)
    assert torch.autograd.gradcheck(losses.target_log_prob, (query, keys, index))


def test_item_table_rows_equal_the_rows_of_the_whole_table(data, model):  # noqa: F811
    ids = torch.tensor([3, 1, 7, 7, 40])
    torch.testing.assert_close(model.item_table(ids), model.item_table()[ids])


def test_sampled_loss_reads_only_the_rows_it_needs_and_equals_the_full_table_loss(data, model):  # noqa: F811
    """The sampled softmax computes the rows of the batch's items, targets and negatives only, gets the loss the
    whole table gives with the same negatives, and leaves every other id embedding without a gradient."""
    model.set_sampled(8)
    model.train(False)  # dropout off, so that both passes compute the same
    batch = train_batch(data, model)
    torch.manual_seed(3)
    negatives = model.draw_negatives(torch.device("cpu"))
    items = model.item_rows(batch, batch.targets, negatives)
    assert set(items.ids.tolist()) == set(batch.item_ids().tolist()) | set(batch.targets.tolist()) | set(
        negatives.tolist()
    )
    with torch.no_grad():
        expected = model.sampled_loss(
            model.encode(batch, model.item_table()), batch.targets, model.item_table(), negatives
        )
    torch.manual_seed(3)
    loss = model.calculate_loss(batch)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    grad = model.item_emb.weight.grad
    assert grad.is_sparse
    touched = set(grad.coalesce().indices()[0].tolist())
    assert touched <= set(items.ids.tolist()) and set(batch.targets.tolist()) <= touched


def test_sparse_adam_updates_only_the_rows_a_step_read(data, model):  # noqa: F811
    model.set_sampled(8)
    optimizer = make_optimizer(model, lr=0.01)
    assert isinstance(optimizer, DenseSparseAdam)
    before = model.item_emb.weight.detach().clone()
    batch = train_batch(data, model)
    torch.manual_seed(4)
    negatives = model.draw_negatives(torch.device("cpu"))
    read = model.item_rows(batch, batch.targets, negatives).ids
    torch.manual_seed(4)
    model.calculate_loss(batch).backward()
    optimizer.step()
    changed = (model.item_emb.weight.detach() != before).any(1).nonzero()[:, 0]
    assert len(changed) > 0 and set(changed.tolist()) <= set(read.tolist())
    state = optimizer.state_dict()
    again = make_optimizer(model, lr=0.01)
    again.load_state_dict(state)
    assert again.state_dict()["sparse"]["state"].keys() == state["sparse"]["state"].keys()


def test_full_softmax_keeps_dense_adam(data, model):  # noqa: F811
    model.set_sampled(0)
    assert isinstance(make_optimizer(model, lr=0.01), torch.optim.Adam)
    assert not model.item_emb.sparse


def test_mixture_loss_is_the_mixtures_cross_entropy_over_all_items(data):  # noqa: F811
    model = make_model(data, readout="mixture", temperature=0.1).eval()
    batch = train_batch(data, model)
    scores = model.full_sort_predict(batch)  # [B, n_items]: log-probabilities of the mixture, padding at -inf
    expected = F.nll_loss(scores, batch.targets)
    torch.testing.assert_close(model.calculate_loss(batch), expected)
