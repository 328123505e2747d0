"""SASRec (Kang & McAuley 2018), the ID-only self-attention baseline, with RecBole's blocks (PyTorch's post-norm
encoder layer).

It follows the same contract as MMSR and reads only `batch.seq` (left-padded item ids), so it trains and
evaluates through the same trainer and metrics. Its item table and readout can be MMSR's (`item_repr`, `readout`):
the strongest model without the graph that uses the same item content.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import readout
from .batch import Batch
from .content import ContentRecommender, code_embeddings, feature_maps
from .dropout import RandMaskDropout
from .scoring import Items, Query


@dataclass
class SASRecConfig:
    """The eSASRec benchmark's SASRec settings (1 block, 1 head, d 64, dropouts 0.2; RecBole's defaults are 2 layers,
    2 heads and dropouts 0.5), with plain SASRec's item table, scores and readout; `TrainConfig(model="sasrec")`
    takes them as its defaults."""

    dim: int = 64
    n_layers: int = 1
    n_heads: int = 1
    dropout: float = 0.2
    attn_dropout: float = 0.2
    temperature: float = 0.0  # 0: dot-product scores; > 0: cosine similarity / temperature
    readout: str = "last"  # one of readout.READOUTS, over the positions of the sequence
    item_repr: str = "id"  # one of content.ITEM_REPRS


class SASRec(ContentRecommender):
    """Reads no graph (`graph_spec` is None); item content only through `item_repr`."""

    def __init__(
        self,
        config: SASRecConfig,
        n_items: int,
        max_len: int,
        modalities: dict[str, np.ndarray],
        item_codes: dict[str, np.ndarray],
        item_features: dict[str, np.ndarray],
    ):
        """modalities, item_codes, item_features: as MMSR's, read only by `item_repr` other than 'id'."""
        super().__init__()
        self.temperature, self.item_repr, self.readout = config.temperature, config.item_repr, config.readout
        if config.item_repr == "id":
            modalities = {}
        self.modalities = sorted(modalities)
        d = config.dim
        self.n_heads = config.n_heads
        self.item_emb = nn.Embedding(n_items, d, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len, d)
        self.norm = nn.LayerNorm(d)
        self.dropout = RandMaskDropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            d, config.n_heads, 4 * d, config.dropout, activation="gelu", batch_first=True
        )
        layer.dropout, layer.dropout1, layer.dropout2 = (RandMaskDropout(config.dropout) for _ in range(3))
        layer.self_attn.dropout = config.attn_dropout  # applied inside PyTorch's attention, with bernoulli_
        self.encoder = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
        if config.readout != "last":
            self.pool = readout.AttentionPool(d)
        self.apply(self._init)
        self.code_emb = code_embeddings(modalities, d, 0.02)
        if "features" in config.item_repr:
            self.feature_proj = feature_maps(modalities, d)
        self.set_item_content(item_codes, item_features)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def encode(self, batch: Batch, items: Items) -> Query:
        states, allowed = self.hidden(batch, items)
        return self.query(states, allowed[:, -1:])  # the most recent position's: [B, d] (or [B, 2, d], [B, 2])

    def calculate_loss(self, batch: Batch) -> torch.Tensor:
        """With `targets` [B, L] (a whole sequence per row, 0 = none) every position predicts its next item."""
        if batch.targets.dim() == 1:
            return super().calculate_loss(batch)
        real = batch.targets != 0  # [B, L]
        # the queries of the positions with a target: [N, d] (or [N, 2, d] and [N, 2])
        return self.loss(batch, batch.targets[real], lambda items: self.query(*self.hidden(batch, items), real))

    def query(self, states: torch.Tensor, allowed: torch.Tensor, real: torch.Tensor | None = None) -> Query:
        """The queries of the last len(allowed[0]) positions ([B, Q, d] from states [B, L, d] and the positions each
        reads, allowed [B, Q, L]), flattened over `real` [B, Q] when given, else the last position's only."""
        last = states[:, -allowed.shape[1] :]  # [B, Q, d]
        pooled = None if self.readout == "last" else self.pool.over_positions(states, last, allowed)
        pick = (lambda x: x[real]) if real is not None else (lambda x: x[:, -1])  # [N, d] or [B, d]
        return readout.query(self.readout, pick(last), None if pooled is None else pick(pooled))

    def hidden(self, batch: Batch, items: Items) -> tuple[torch.Tensor, torch.Tensor]:
        """([B, L, d]: the output at every position of the left-padded `batch.seq` [B, L]; [B, L, L]: the positions
        each one reads, itself and the real items before it)."""
        seq = batch.seq  # [B, L], left-padded
        B, L = seq.shape
        x = items[seq] + self.pos_emb.weight[None]  # [B, L, d]
        x = self.dropout(self.norm(x))
        causal = torch.ones(L, L, dtype=torch.bool, device=seq.device).tril()
        # position i sees real items j <= i; a padding position sees itself, so no row is empty
        allowed = causal[None] & ((seq != 0)[:, None, :] | torch.eye(L, dtype=torch.bool, device=seq.device))
        mask = (~allowed).repeat_interleave(self.n_heads, dim=0)  # [B * heads, L, L], True = blocked
        return self.encoder(x, mask=mask), allowed
