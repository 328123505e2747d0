"""The model contract shared by every recommender here (RecBole's): forward, full_sort_predict, calculate_loss."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..graph import ViewKey
from .batch import Batch
from .losses import BLOCK_BYTES, mixture_nll, target_log_prob

Query = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # [B, d], or H queries [B, H, d] and log weights [B, H]


class ItemRows:
    """Some rows of the item table, looked up by item id like the table itself: `rows[ids]` -> [..., d].

    What a sampled-softmax step computes instead of the whole table: the rows of the items it reads."""

    def __init__(self, ids: torch.Tensor, rows: torch.Tensor):
        self.ids, self.rows = ids, rows  # int64 [U] ascending, [U, d]

    def __getitem__(self, ids: torch.Tensor) -> torch.Tensor:
        return self.rows[torch.searchsorted(self.ids, ids)]


Items = torch.Tensor | ItemRows  # the whole item table [n_items, d], or the rows a step needs


class FullSortRecommender(nn.Module):
    """Subclasses define `item_emb` (ids 0..n_items-1, 0 = padding), `modalities`, `temperature` and
    `encode(batch, items)`, which reads item rows `items[ids]` (the table computed once per step, or the rows the
    step needs) and returns a query [B, d], or H queries [B, H, d] with their log mixture weights [B, H].

    Scores are dot products with every item embedding (with `temperature` > 0: cosine similarities divided by
    it); padding always scores -inf; the loss is cross-entropy over all items. With H queries the scores are the
    log of the weighted sum of their H softmaxes (a mixture of softmaxes), so they are log-probabilities, and the
    loss is the mixture's cross-entropy.
    """

    item_emb: nn.Embedding
    modalities: list[str]
    temperature: float = 0.0
    n_negatives: int = 0  # > 0: the training loss is a sampled softmax over the target and this many negatives

    def set_item_content(self, codes: dict[str, np.ndarray], features: dict[str, np.ndarray]) -> None:
        """Tell the model the codes (modality -> [n_items, k]) and reduced features (modality -> [n_items, f]) of
        every item; only models that read them care."""

    def set_sampled(self, n_negatives: int) -> None:
        """Train with a sampled softmax over `n_negatives` items shared by the batch (0: the full softmax). Then a
        step computes and updates only the item rows it reads: the id embeddings give sparse gradients (for a
        sparse optimizer, see `training.optim`)."""
        self.n_negatives = n_negatives
        self.item_emb.sparse = n_negatives > 0

    def graph_spec(self, all_nodes: bool = False) -> tuple[list[str], set[ViewKey]] | None:
        """The modalities and relation-group views of the batched MSGraph this model reads (`all_nodes`: also what
        updating every node, not only what the readout reads, needs); None: it reads only `Batch.seq`."""
        return None

    def graph_inputs(self, data) -> tuple[dict[str, np.ndarray] | None, set[ViewKey]]:
        """What a batch for this model needs from `data` (ProcessedData): modality -> item codes [n_items, k] and
        the views of `graph_spec()`; (None, set()) for a model that reads no graph."""
        spec = self.graph_spec()
        if spec is None:
            return None, set()
        return {m: data.codes[m] for m in spec[0]}, spec[1]

    def item_table(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """[n_items, d]: the embeddings every item is scored with (with `ids` [U]: only their rows, [U, d])."""
        return self.item_emb.weight if ids is None else self.item_emb(ids)

    def encode(self, batch: Batch, items: Items) -> Query:
        raise NotImplementedError

    def forward(self, batch: Batch) -> Query:
        return self.encode(batch, self.item_table())

    def _normalized(self, query: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.temperature > 0:
            return F.normalize(query, dim=-1) / self.temperature, F.normalize(items, dim=-1)
        return query, items

    def scores(self, query: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[..., n_items] scores of queries [..., d] against the item table, padding at -inf."""
        query, items = self._normalized(query, items)
        scores = query @ items.T
        scores[..., 0] = float("-inf")  # in place: training never differentiates these scores (see full_loss)
        return scores

    def full_sort_predict(self, batch: Batch, items: torch.Tensor | None = None) -> torch.Tensor:
        """[B, n_items] scores of every item (padding at -inf); with H queries the log-probabilities of their
        mixture. `items`: the item table when the caller computed it once for many batches."""
        items = self.item_table() if items is None else items
        query = self.encode(batch, items)
        query, log_weights = query if isinstance(query, tuple) else (query, None)  # [B, d] or [B, H, d]
        scores = self.scores(query, items)
        if log_weights is None:
            return scores
        # log sum_h w_h softmax_h = logsumexp_h(log w_h - logsumexp(scores_h) + scores_h), a few users at a time:
        # each slice's passes (log-sum-exp, shift, mixture) then run in cache instead of over [B, H, n_items]
        mixture = scores.new_empty((len(scores), scores.shape[-1]))  # [B, n_items]
        rows = max(1, BLOCK_BYTES // (4 * scores[0].numel()))
        for start in range(0, len(scores), rows):
            part = scores[start : start + rows]  # [r, H, n_items]
            part.add_((log_weights[start : start + rows] - torch.logsumexp(part, -1))[..., None])
            mixed = part[:, 0]
            for head in range(1, part.shape[1]):
                mixed = torch.logaddexp(mixed, part[:, head])
            mixture[start : start + rows] = mixed
        return mixture

    def full_loss(self, query: Query, targets: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over all items (padding excluded) of each query [N, d] (or mixture of H queries
        [N, H, d]) at its target [N]."""
        query, log_weights = query if isinstance(query, tuple) else (query, None)
        query, keys = self._normalized(query, items[1:])  # padding is not a candidate
        index = targets - 1 if log_weights is None else (targets - 1)[:, None].expand(-1, query.shape[1])
        log_prob = target_log_prob(query.reshape(-1, query.shape[-1]), keys, index.reshape(-1))
        return mixture_nll(log_prob.view(index.shape), log_weights)

    def sampled_loss(
        self, query: Query, targets: torch.Tensor, items: Items, negatives: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cross-entropy of each query [N, d] (or mixture of H queries [N, H, d]) over its target [N] and
        `n_negatives` items drawn uniformly (padding excluded; `negatives` [K] when drawn already), the same for
        the whole batch; a negative that is the target itself is masked out. Its cost grows with `n_negatives`,
        not with the number of items."""
        query, log_weights = query if isinstance(query, tuple) else (query, None)
        negatives = self.draw_negatives(targets.device) if negatives is None else negatives  # [K]
        queries = query if log_weights is not None else query[:, None]  # [N, H, d]
        rows = items[torch.cat([targets, negatives])]  # [N + K, d]
        queries, rows = self._normalized(queries, rows)
        positive = (queries * rows[: len(targets), None]).sum(-1, keepdim=True)  # [N, H, 1]
        negative = queries @ rows[len(targets) :].T  # [N, H, K]
        negative = negative.masked_fill((negatives == targets[:, None])[:, None], float("-inf"))
        log_prob = torch.cat([positive, negative], -1).log_softmax(-1)[..., 0]  # [N, H]
        return mixture_nll(log_prob if log_weights is not None else log_prob[:, 0], log_weights)

    def draw_negatives(self, device: torch.device) -> torch.Tensor:
        """[n_negatives] item ids drawn uniformly from 1..n_items-1 (torch's generator: seeded per epoch)."""
        return torch.randint(1, self.item_emb.num_embeddings, (self.n_negatives,), device=device)

    def item_rows(self, batch: Batch, targets: torch.Tensor, negatives: torch.Tensor) -> ItemRows:
        """The item rows a sampled-softmax step reads: the batch's items, its targets and the negatives."""
        ids = torch.unique(torch.cat([batch.item_ids(), targets.reshape(-1), negatives]))
        return ItemRows(ids, self.item_table(ids))

    def loss(self, batch: Batch, targets: torch.Tensor, queries: Callable[[Items], Query]) -> torch.Tensor:
        """The training loss of `queries(items)` (from the item table, or under a sampled softmax from the rows the
        step reads) at `targets` [N]."""
        if self.n_negatives:
            negatives = self.draw_negatives(targets.device)
            items = self.item_rows(batch, targets, negatives)
            return self.sampled_loss(queries(items), targets, items, negatives)
        items = self.item_table()
        return self.full_loss(queries(items), targets, items)

    def calculate_loss(self, batch: Batch) -> torch.Tensor:
        return self.loss(batch, batch.targets, lambda items: self.encode(batch, items))
