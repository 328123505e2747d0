"""The cross-entropy kernels of the models' losses: the log-probability of a target under a softmax over every item,
computed block by block, and the negative log-likelihood of a mixture of such softmaxes."""

from __future__ import annotations

import torch

BLOCK_BYTES = 1 << 20  # the score block one chunk of items holds: small enough to stay in the core's cache


class _TargetLogProb(torch.autograd.Function):
    """log_softmax(query @ keys.T, -1) at `index` for queries [M, d] and keys [n, d], one chunk of keys at a time.

    The [M, n] scores are never held whole: each chunk's block is scored, reduced into a running log-sum-exp and
    dropped, and the backward pass scores it again to form its gradient block. Every pass over a block runs in
    cache, where the plain computation writes and reads [M, n] tensors (scores, log-softmax, their gradients) in
    memory several times; the price is one more matrix product."""

    @staticmethod
    def forward(ctx, query: torch.Tensor, keys: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        chunk = max(1, BLOCK_BYTES // (4 * len(query)))
        lse = query.new_full((len(query),), float("-inf"))
        for start in range(0, len(keys), chunk):
            block = query @ keys[start : start + chunk].T  # [M, c]
            lse = torch.logaddexp(lse, torch.logsumexp(block, -1))
        ctx.save_for_backward(query, keys, index, lse)
        ctx.chunk = chunk
        return (query * keys[index]).sum(-1) - lse  # [M]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        query, keys, index, lse = ctx.saved_tensors
        grad_query = torch.zeros_like(query)
        grad_keys = torch.empty_like(keys)
        weight = -grad[:, None]
        for start in range(0, len(keys), ctx.chunk):
            part = keys[start : start + ctx.chunk]
            block = (query @ part.T).sub_(lse[:, None]).exp_().mul_(weight)  # [M, c]: -grad * softmax
            grad_query.addmm_(block, part)
            torch.mm(block.T, query, out=grad_keys[start : start + ctx.chunk])
        grad_query.addcmul_(keys[index], grad[:, None])  # the target's own score
        grad_keys.index_add_(0, index, query * grad[:, None])
        return grad_query, grad_keys, None


def target_log_prob(query: torch.Tensor, keys: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """[M]: log_softmax(query @ keys.T, -1) at index, for queries [M, d], keys [n, d] and index [M] (int64)."""
    return _TargetLogProb.apply(query, keys, index)


def mixture_nll(log_prob: torch.Tensor, log_weights: torch.Tensor | None) -> torch.Tensor:
    """Mean negative log-likelihood of the target from each query's log-probability [N] (or, with H queries
    [N, H], their mixture with log weights [N, H])."""
    if log_weights is None:
        return -log_prob.mean()
    return -torch.logsumexp(log_weights + log_prob, dim=1).mean()
