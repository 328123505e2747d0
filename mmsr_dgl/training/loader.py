"""Batches of samples (user, target position) turned into MSGraph batches, in a seeded order."""

from __future__ import annotations

import random
import threading
from queue import Full, Queue
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data import ProcessedData
from ..nn import Batch, Recommender, make_batch, pad_left
from .distributed import Group


class _Batches(Dataset):
    """Item i is the i-th batch of sample indices; collation happens in __getitem__ (worker processes)."""

    def __init__(
        self,
        data: ProcessedData,
        model: Recommender,
        users: np.ndarray,
        ends: np.ndarray | None,
        targets: np.ndarray | None,
        order: list[np.ndarray],
        with_seen: bool,
    ):
        self.data, self.order, self.with_seen = data, order, with_seen
        self.codes, self.views = model.graph_inputs(data)
        self.users, self.ends, self.targets = users, ends, targets

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> Batch:
        idx = self.order[i]
        ends = None if self.ends is None else self.ends[idx]
        targets = None if self.targets is None else self.targets[idx]
        seen = self.data.inputs(self.users[idx], ends, full=True) if self.with_seen else None
        return make_batch(
            self.data.inputs(self.users[idx], ends), self.data.max_len, self.codes, self.views, targets, seen
        )


class _Sequences(Dataset):
    """Item i is the i-th batch of users as whole training sequences: inputs = the last `max_len` items before
    the validation target but one, targets [B, max_len] = each input position's next item (0 = none)."""

    def __init__(self, data: ProcessedData, users: np.ndarray, ends: np.ndarray, order: list[np.ndarray]):
        self.data, self.users, self.ends, self.order = data, users, ends, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> Batch:
        idx = self.order[i]
        windows = self.data.inputs(self.users[idx], self.ends[idx], window=self.data.max_len + 1)
        return Batch(
            seq=pad_left([w[:-1] for w in windows], self.data.max_len),
            targets=pad_left([w[1:] for w in windows], self.data.max_len),
        )


def sequence_batches(data: ProcessedData, batch_size: int, shuffle_seed, group: Group = Group()) -> DataLoader:
    """Each user with a training target once, as a whole sequence (every position a target), in a seeded order;
    this process's share of every batch."""
    users, ends = data.splits["valid"]  # the training part of a history ends before its validation target
    keep = ends >= 2
    users, ends = users[keep], ends[keep]
    index = np.random.default_rng(shuffle_seed).permutation(len(users))
    order = [index[i : i + batch_size] for i in range(0, len(index), batch_size)]
    return _loader(_Sequences(data, users, ends, group.share(order, whole=True)), 0)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def split_batches(
    data: ProcessedData,
    model: Recommender,
    split: str,
    batch_size: int,
    *,
    shuffle_seed=None,
    num_workers: int = 0,
    with_seen: bool = False,
    group: Group = Group(),
) -> DataLoader:
    """This process's share of every batch of one split; shuffled by np.random.default_rng(shuffle_seed) when a
    seed is given (training: every process a part of every batch; evaluation: an empty part is skipped).
    `with_seen` adds each sample's untruncated history (for excluding seen items)."""
    users, ends = data.splits[split]
    index = np.arange(len(users))
    if shuffle_seed is not None:
        index = np.random.default_rng(shuffle_seed).permutation(len(users))
    order = [index[i : i + batch_size] for i in range(0, len(index), batch_size)]
    training = shuffle_seed is not None
    order = group.share(order, whole=training)
    return _loader(_Batches(data, model, users, ends, data.targets(split), order, with_seen), num_workers)


def user_batches(
    data: ProcessedData,
    model: Recommender,
    users: np.ndarray,
    batch_size: int,
    num_workers: int = 0,
    with_seen: bool = False,
) -> DataLoader:
    """Batches of whole histories (for recommendation)."""
    order = [np.arange(i, min(i + batch_size, len(users))) for i in range(0, len(users), batch_size)]
    return _loader(_Batches(data, model, users, None, None, order, with_seen), num_workers)


def _loader(dataset: Dataset, num_workers: int) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        worker_init_fn=_seed_worker if num_workers else None,
    )


def prefetched(batches: DataLoader, depth: int = 2) -> Iterator[Batch]:
    """The batches of `batches`, built `depth` ahead by a background thread (unless worker processes build them
    already), so that collation (numpy and DGL graph construction) overlaps the model's work instead of waiting
    for it. Same batches, same order."""
    if batches.num_workers:
        yield from batches
        return
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def offer(item) -> bool:  # False once the consumer has gone
        while not stop.is_set():
            try:
                queue.put(item, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def build() -> None:
        try:
            for batch in batches:
                if not offer(batch):
                    return
            offer(done)
        except BaseException as err:  # raised where the batch would have been used
            offer(err)

    thread = threading.Thread(target=build, name="mmsr-batches", daemon=True)
    thread.start()
    try:
        while (item := queue.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
