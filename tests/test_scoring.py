"""The loss kernels of the model contract against their plain definitions."""
import torch

from mmsr_dgl.nn import scoring


def test_target_log_prob_matches_log_softmax_in_value_and_gradient(monkeypatch):
    monkeypatch.setattr(scoring, "BLOCK_BYTES", 4 * 7 * 5)  # 5 keys per chunk: 23 keys in 5 chunks, one partial
    torch.manual_seed(0)
    query = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(23, 4, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([0, 3, 22, 5, 5, 11, 17])
    weights = torch.randn(7, dtype=torch.float64)
    got = scoring.target_log_prob(query, keys, index)
    expected = (query @ keys.T).log_softmax(-1).gather(1, index[:, None])[:, 0]
    torch.testing.assert_close(got, expected)
    grads = torch.autograd.grad((got * weights).sum(), (query, keys))
    expected_grads = torch.autograd.grad((expected * weights).sum(), (query, keys))
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e)
    assert torch.autograd.gradcheck(scoring.target_log_prob, (query, keys, index))
