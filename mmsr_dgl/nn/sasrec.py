"""SASRec (Kang & McAuley 2018), the ID-only self-attention baseline, with RecBole's blocks (PyTorch's post-norm
encoder layer).

It follows the same contract as MMSR and reads only `batch.seq` (left-padded item ids), so it trains and
evaluates through the same trainer and metrics.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .batch import Batch
from .dropout import RandMaskDropout
from .scoring import FullSortRecommender, Items


@dataclass
class SASRecConfig:
    """The eSASRec benchmark's SASRec settings (RecBole's: 2 layers, 2 heads, dropouts 0.5);
    `TrainConfig(model="sasrec")` takes them as its defaults."""
    dim: int = 64
    n_layers: int = 1
    n_heads: int = 1
    dropout: float = 0.2
    attn_dropout: float = 0.2
    temperature: float = 0.0  # 0: dot-product scores; > 0: cosine similarity / temperature


class SASRec(FullSortRecommender):
    modalities: list[str] = []  # reads no item content, and no graph (`graph_spec` is None)

    def __init__(self, config: SASRecConfig, n_items: int, max_len: int):
        super().__init__()
        self.temperature = config.temperature
        d = config.dim
        self.n_heads = config.n_heads
        self.item_emb = nn.Embedding(n_items, d, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len, d)
        self.norm = nn.LayerNorm(d)
        self.dropout = RandMaskDropout(config.dropout)
        layer = nn.TransformerEncoderLayer(d, config.n_heads, 4 * d, config.dropout, activation="gelu",
                                           batch_first=True)
        layer.dropout, layer.dropout1, layer.dropout2 = (RandMaskDropout(config.dropout) for _ in range(3))
        layer.self_attn.dropout = config.attn_dropout  # applied inside PyTorch's attention, with bernoulli_
        self.encoder = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def encode(self, batch: Batch, items: Items) -> torch.Tensor:
        return self.hidden(batch, items)[:, -1]  # [B, d]: the most recent position

    def calculate_loss(self, batch: Batch) -> torch.Tensor:
        """With `targets` [B, L] (a whole sequence per row, 0 = none) every position predicts its next item."""
        if batch.targets.dim() == 1:
            return super().calculate_loss(batch)
        real = batch.targets != 0  # [B, L]
        return self.loss(batch, batch.targets[real], lambda items: self.hidden(batch, items)[real])  # [N, d] queries

    def hidden(self, batch: Batch, items: Items) -> torch.Tensor:
        """[B, L, d]: the output at every position of the left-padded `batch.seq` [B, L]."""
        seq = batch.seq  # [B, L], left-padded
        B, L = seq.shape
        x = items[seq] + self.pos_emb.weight[None]  # [B, L, d]
        x = self.dropout(self.norm(x))
        causal = torch.ones(L, L, dtype=torch.bool, device=seq.device).tril()
        # position i sees real items j <= i; a padding position sees itself, so no row is empty
        allowed = causal[None] & ((seq != 0)[:, None, :] | torch.eye(L, dtype=torch.bool, device=seq.device))
        mask = (~allowed).repeat_interleave(self.n_heads, dim=0)  # [B * heads, L, L], True = blocked
        return self.encoder(x, mask=mask)
