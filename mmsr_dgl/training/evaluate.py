"""Full-ranking evaluation over all items, batched so memory does not grow with the number of users."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from ..data import ProcessedData
from ..nn import Batch, Recommender, pad_left
from .distributed import Group
from .loader import prefetched, split_batches
from .metrics import MetricAccumulator, mask_seen, pessimistic_rank

SCORES_AT_ONCE = 1 << 25  # scores [batch, n_items] held at once: 128 MiB of float32, whatever the catalogue


def scoring_batch_size(batch_size: int, n_items: int) -> int:
    """`batch_size`, lowered for large catalogues so that a batch's scores stay within SCORES_AT_ONCE."""
    return max(1, min(batch_size, SCORES_AT_ONCE // n_items))


def ranked_scores(model: Recommender, batch: Batch, items: torch.Tensor, exclude_seen: bool) -> torch.Tensor:
    """[B, n_items]: the scores evaluation ranks a batch's targets among (with `exclude_seen`, the items of each
    history other than its target at -inf)."""
    scores = model.full_sort_predict(batch, items)
    return mask_seen(scores, batch.seen, batch.targets) if exclude_seen else scores


@torch.no_grad()
def target_ranks(
    model: Recommender,
    data: ProcessedData,
    split: str,
    batch_size: int = 1024,
    exclude_seen: bool = False,
    device: str = "cpu",
    num_workers: int = 0,
    progress: bool = False,
    group: Group = Group(),
) -> torch.Tensor:
    """[n_samples]: the 0-based pessimistic rank of each sample's target among all items, in the split's order
    (every process of a group ranks its share and gets all)."""
    model.eval()
    # the items as this data describes them (drops included)
    model.set_item_content(*data.item_content(model.modalities))
    loader = split_batches(
        data,
        model,
        split,
        scoring_batch_size(batch_size, data.n_items),
        num_workers=num_workers,
        with_seen=exclude_seen,
        group=group,
    )
    items = model.item_table()  # [n_items, d], once for every batch
    ranks = [torch.empty(0, dtype=torch.long)]
    for batch in tqdm(
        prefetched(loader), desc=f"evaluate {split}", total=len(loader), leave=False, disable=not progress
    ):
        scores = ranked_scores(model, batch.to(device), items, exclude_seen)
        ranks.append(pessimistic_rank(scores, batch.targets).cpu())
    index = np.concatenate([np.empty(0, dtype=np.int64), *loader.dataset.order])
    return group.gather(index, torch.cat(ranks), len(data.splits[split][0]))


def evaluate(
    model: Recommender,
    data: ProcessedData,
    split: str,
    batch_size: int = 1024,
    exclude_seen: bool = False,
    device: str = "cpu",
    num_workers: int = 0,
    progress: bool = False,
    group: Group = Group(),
) -> dict[str, float]:
    """HR, NDCG and MRR at 5/10/20 of `model` on a split ('valid' or 'test'), averaged over its samples."""
    acc = MetricAccumulator()
    acc.add(target_ranks(model, data, split, batch_size, exclude_seen, device, num_workers, progress, group))
    return acc.result()


def fixed_ranking_ranks(
    item_scores: np.ndarray, data: ProcessedData, split: str, batch_size: int = 1024, exclude_seen: bool = False
) -> torch.Tensor:
    """[n_samples]: the target ranks (as `target_ranks`) of a user-independent ranking, item_scores [n_items]."""
    scores_row = torch.as_tensor(item_scores, dtype=torch.float32).clone()
    scores_row[0] = float("-inf")
    users, ends = data.splits[split]
    targets = torch.from_numpy(data.targets(split).astype(np.int64))
    ranks, batch_size = [], scoring_batch_size(batch_size, data.n_items)
    for start in range(0, len(users), batch_size):
        stop = min(start + batch_size, len(users))
        scores = scores_row.expand(stop - start, -1)
        if exclude_seen:
            seen = pad_left(data.inputs(users[start:stop], ends[start:stop], full=True))
            scores = mask_seen(scores.clone(), seen, targets[start:stop])  # masked in place: each row a copy
        ranks.append(pessimistic_rank(scores, targets[start:stop]))
    return torch.cat(ranks)


def evaluate_scores(
    item_scores: np.ndarray, data: ProcessedData, split: str, batch_size: int = 1024, exclude_seen: bool = False
) -> dict[str, float]:
    """The same metrics for a user-independent ranking (e.g. popularity), item_scores [n_items]."""
    acc = MetricAccumulator()
    acc.add(fixed_ranking_ranks(item_scores, data, split, batch_size, exclude_seen))
    return acc.result()
