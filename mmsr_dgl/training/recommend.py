"""Top-K recommendations for users from their full histories, written as TSV or JSONL with raw ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data import ProcessedData
from ..data.readers import integer_id
from ..errors import UserError
from ..io import write_file_atomic
from ..nn import Recommender
from .evaluate import ranked_scores, scoring_batch_size
from .loader import user_batches


def read_user_list(path: Path, data: ProcessedData, log: Callable[[str], None] = print) -> np.ndarray:
    """User indices for the raw user ids in `path` (one per line; integer ids as the readers read them, `007` is
    user 7); a user listed twice is recommended for once, and the log says so."""
    index = {u: i for i, u in enumerate(data.user_ids.tolist())}
    if not Path(path).is_file():
        raise UserError(
            f"{path}: " + ("not a regular file (--users)" if Path(path).exists() else "file not found (--users)")
        )
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        line = Path(path).read_bytes()[: err.start].count(b"\n") + 1
        raise UserError(f"{path}, line {line}: not UTF-8 text (--users)") from None
    users, listed, repeated = [], set(), 0
    for line_no, line in enumerate(text.splitlines(), 1):
        user = integer_id(line.strip())
        if not user:
            continue
        if user not in index:
            raise UserError(f"{path}, line {line_no}: unknown user {user!r}")
        if index[user] in listed:
            repeated += 1
            continue
        listed.add(index[user])
        users.append(index[user])
    if not users:
        raise UserError(f"{path}: no user ids in the file")
    if repeated:
        log(f"{path}: {repeated} repeated user ids; each user is recommended for once")
    return np.asarray(users, dtype=np.int64)


@torch.no_grad()
def recommend(
    model: Recommender,
    data: ProcessedData,
    users: np.ndarray,
    k: int,
    exclude_seen: bool,
    batch_size: int = 1024,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Item ids [U, k] and scores [U, k], best first, for each user from their whole history."""
    model.eval()
    k = min(k, data.n_items - 1)
    items, scores = [], []
    batches = user_batches(data, model, users, scoring_batch_size(batch_size, data.n_items), with_seen=exclude_seen)
    table = model.item_table()  # [n_items, d], once for every batch
    for batch in batches:
        top = torch.topk(ranked_scores(model, batch.to(device), table, exclude_seen), k, dim=1)
        items.append(top.indices.cpu().numpy())
        scores.append(top.values.cpu().numpy())
    return np.concatenate(items), np.concatenate(scores)


def write_recommendations(
    path: Path, data: ProcessedData, users: np.ndarray, items: np.ndarray, scores: np.ndarray, fmt: str
) -> None:
    """TSV (user, rank, item, score) or JSONL ({"user", "items", "scores"}) with raw ids (ASINs if known)."""
    names = data.item_names
    user_names = data.user_ids[users]

    def write(tmp: Path) -> None:
        with tmp.open("w") as out:
            if fmt == "tsv":
                out.write("user\trank\titem\tscore\n")
                for u, row_items, row_scores in zip(user_names, items, scores):
                    for rank, (i, s) in enumerate(zip(row_items, row_scores), 1):
                        if s == float("-inf"):  # fewer than k items left after excluding seen ones
                            break
                        out.write(f"{u}\t{rank}\t{names[i]}\t{s:.6g}\n")
            else:
                for u, row_items, row_scores in zip(user_names, items, scores):
                    keep = row_scores > float("-inf")  # fewer than k items left after excluding seen ones
                    out.write(
                        json.dumps(
                            {
                                "user": str(u),
                                "items": [str(names[i]) for i in row_items[keep]],
                                "scores": [round(float(s), 6) for s in row_scores[keep]],
                            }
                        )
                        + "\n"
                    )

    write_file_atomic(path, write)
