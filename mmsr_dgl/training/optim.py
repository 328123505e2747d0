"""The optimizer: Adam (its fused kernel: one pass over each parameter), and for embeddings with sparse gradients
(the sampled softmax) a lazy Adam that updates only the rows a step read, so that a step's cost does not grow with
the catalogue."""

from __future__ import annotations

import torch
from torch import nn


class DenseSparseAdam:
    """Adam for the dense parameters and `torch.optim.SparseAdam` (moments of a row updated only when the row
    has a gradient) for the weights of sparse embeddings, stepped together."""

    def __init__(self, dense: list[nn.Parameter], sparse: list[nn.Parameter], lr: float):
        self.parts = [torch.optim.Adam(dense, lr=lr, fused=True), torch.optim.SparseAdam(sparse, lr=lr)]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for part in self.parts:
            part.step()

    def state_dict(self) -> dict:
        return {"dense": self.parts[0].state_dict(), "sparse": self.parts[1].state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.parts[0].load_state_dict(state["dense"])
        self.parts[1].load_state_dict(state["sparse"])


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer | DenseSparseAdam:
    """Adam over the model's parameters; with sparse embeddings (see `Recommender.set_sampled`) their weights go
    to a lazy Adam (which has no weight decay: the training settings refuse both together)."""
    sparse = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse]
    if not sparse:
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    dense = [p for p in model.parameters() if all(p is not s for s in sparse)]
    return DenseSparseAdam(dense, sparse, lr)
