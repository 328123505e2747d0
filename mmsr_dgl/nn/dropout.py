"""Dropout with a faster mask, shared by the models."""

from __future__ import annotations

import torch
from torch import nn


class RandMaskDropout(nn.Dropout):
    """nn.Dropout with its Bernoulli(1 - p) mask drawn as `torch.rand(...) >= p`: the same distribution, about 3x
    faster on this CPU build, where `bernoulli_` took half of a SASRec training step (measured). The mask carries
    the 1 / (1 - p) scale, so that forward and backward are one product each."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * (torch.rand_like(x) >= self.p).to(x.dtype).mul_(1 / (1 - self.p))
