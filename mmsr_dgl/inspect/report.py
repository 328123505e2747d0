"""`inspect`: a trained run's curves, update gate, accuracy by history length and target popularity, one user's
graph; PNGs, `inspect.json` (the numbers drawn) and `summary.txt`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import UserError
from ..io import claim_dir, read_json, write_file_atomic
from ..nn import make_batch
from ..training.evaluate import fixed_ranking_ranks, target_ranks
from ..training.metrics import metric_sums
from ..training.run import load_run
from . import figures, usergraph

LENGTH_EDGES = (1, 2, 3, 5, 10, 20, 50)  # history length buckets [1, 2), [2, 3), ..., [50, inf)
POPULARITY_EDGES = (0, 5, 10, 20, 50, 100, 200)  # target's training interactions
GATE_HISTORIES = 2000  # histories of the split the gate is read on (a seeded sample)
KIND = "mmsr-dgl inspect"


def bucket_table(values: np.ndarray, edges: tuple[int, ...], ranks: dict[str, torch.Tensor]) -> list[dict]:
    """Per bucket of `values`: sample count, and HR@10 / NDCG@10 of each ranking (name -> ranks [S])."""
    index = np.searchsorted(np.asarray(edges), values, side="right") - 1
    rows = []
    for b, low in enumerate(edges):
        mask = torch.from_numpy(index == b)
        if not mask.any():
            continue
        high = edges[b + 1] - 1 if b + 1 < len(edges) else None
        label = str(low) if high == low else f"{low}-{high}" if high is not None else f"{low}+"
        row = {"bucket": label, "samples": int(mask.sum())}
        for name, r in ranks.items():
            sums = metric_sums(r[mask], ks=(10,))
            row[name] = {m: sums[m] / row["samples"] for m in ("hr@10", "ndcg@10")}
        rows.append(row)
    return rows


def gate_weights(model, data, split: str, batch_size: int, seed: int) -> tuple[dict[str, np.ndarray], int]:
    """Node type -> the gate's weight on order A of every node of (a seeded sample of) the split's histories,
    first layer."""
    users, ends = data.splits[split]
    pick = np.sort(np.random.default_rng(seed).permutation(len(users))[:GATE_HISTORIES])
    codes, views = model.graph_inputs(data)
    out: dict[str, list[np.ndarray]] = {}
    model.eval()
    for start in range(0, len(pick), batch_size):
        idx = pick[start : start + batch_size]
        batch = make_batch(data.inputs(users[idx], ends[idx]), data.max_len, codes, views)
        for ntype, g in model.gates(batch)[0].items():
            out.setdefault(ntype, []).append(g[:, 0].numpy())
    weights = {t: np.concatenate(v) for t, v in out.items()}
    return {t: w for t, w in weights.items() if len(w)}, len(pick)


def item_texts(path: Path | None, column: str) -> tuple[dict[str, str], str | None]:
    """Raw item id -> text from an items file's text column, or {} and why there is none."""
    from ..data.readers import read_items_file

    if path is None or not Path(path).is_file():
        return {}, f"no items file{f' at {path}' if path else ''}, so no item text (--items)"
    try:
        items = read_items_file(Path(path))
    except UserError as err:
        return {}, f"no item text: {err}"
    if column not in items.header:
        return {}, f"{path}: no '{column}' column, so no item text (--text-column)"
    items.text_column = items.header.index(column)
    return {item: items.text(r)[0] or "" for r, item in enumerate(items.ids)}, None


def clear_earlier(out: Path) -> None:
    """Remove the pictures an earlier `inspect` drew in `out`; refuses a folder holding more than it wrote."""
    earlier = read_json(out / "inspect.json") or {}
    ours = {"inspect.json", "summary.txt", *earlier.get("pictures", [])} if earlier.get("kind") == KIND else set()
    foreign = sorted(p.name for p in out.iterdir() if p.name not in ours)
    if foreign:
        raise UserError(
            f"{out}: holds files that inspect did not write ({', '.join(foreign[:5])}); choose another --out"
        )
    for name in earlier.get("pictures", []):
        (out / name).unlink(missing_ok=True)


def inspect(
    run_dir: Path,
    out: Path | None = None,
    user: str | None = None,
    items_file: Path | None = None,
    text_column: str = "text",
    split: str = "test",
    data_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Write the pictures and summaries of `run_dir` into `out` (default RUN/inspect); returns the numbers."""
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "inspect"
    config, data, model = load_run(run_dir, "best", data_dir)
    if user is not None and user not in set(data.user_ids.tolist()):
        raise UserError(
            f"--user {user!r}: not a user of the run's dataset (ids look like {', '.join(map(str, data.user_ids[:3]))})"
        )
    with claim_dir(out, "inspect", inside=run_dir):
        clear_earlier(out)
        return _report(run_dir, out, config, data, model, user, items_file, text_column, split, log)


def _report(
    run_dir: Path,
    out: Path,
    config,
    data,
    model,
    user: str | None,
    items_file: Path | None,
    text_column: str,
    split: str,
    log: Callable[[str], None],
) -> dict:
    """Draw and write everything `inspect` makes into the claimed folder `out`, stage by stage."""
    summary: dict = {"kind": KIND, "run": str(run_dir), "split": split, "exclude_seen": config.exclude_seen}
    summary["pictures"], summary["notes"] = [], []
    _curves(run_dir, config, out, summary)
    _gates(config, data, model, split, out, summary)
    log(f"ranking the {split} targets")
    _accuracy(config, data, model, split, out, summary)
    if user is not None:
        _user(config, data, model, user, split, items_file, text_column, out, summary)
    write_file_atomic(out / "inspect.json", lambda p: p.write_text(json.dumps(summary, indent=1) + "\n"))
    write_file_atomic(out / "summary.txt", lambda p: p.write_text(summary_text(summary)))
    return summary


def _curves(run_dir: Path, config, out: Path, summary: dict) -> None:
    """curves.png: the loss and validation per epoch, from metrics.jsonl."""
    metrics_file = run_dir / "metrics.jsonl"
    lines = metrics_file.read_text().splitlines() if metrics_file.is_file() else []
    history = [json.loads(line) for line in lines if line.strip()]
    if not history:
        summary["notes"].append(f"{metrics_file}: missing or empty, so no training curves")
        return
    results = read_json(run_dir / "results.json") or {}
    best = results.get("best_epoch") or max(history, key=lambda r: r["valid"][config.valid_metric])["epoch"]
    figures.curves(history, best, out / "curves.png")
    summary |= {"epochs": len(history), "best_epoch": best, "best_valid": history[best - 1]["valid"]}
    summary["pictures"].append("curves.png")


def _gates(config, data, model, split: str, out: Path, summary: dict) -> None:
    """gates.png: the update gate's weights (fusion async only)."""
    if not (config.model == "mmsr" and model.layers[0].fusion == "async"):  # a dataset without modalities has none
        fusion = f" with fusion {model.layers[0].fusion}" if config.model == "mmsr" else ""
        summary["notes"].append(f"no update gate: the {config.model} model{fusion} has none (async only)")
        return
    weights, n = gate_weights(model, data, split, config.eval_batch_size, config.seed)
    figures.gates(weights, f"{n:,} {split} histories", out / "gates.png")
    summary["gate_weight_of_order_a"] = {
        t: {"mean": float(w.mean()), "nodes": len(w), "quartiles": np.quantile(w, [0.25, 0.5, 0.75]).round(4).tolist()}
        for t, w in weights.items()
    }
    summary["pictures"].append("gates.png")


def _accuracy(config, data, model, split: str, out: Path, summary: dict) -> None:
    """accuracy.png: HR@10 and NDCG@10 by history length and target popularity, beside popularity's."""
    popularity = data.train_popularity()
    ranks = {
        "model": target_ranks(model, data, split, config.eval_batch_size, config.exclude_seen),
        "popularity": fixed_ranking_ranks(popularity, data, split, config.eval_batch_size, config.exclude_seen),
    }
    tables = {
        "by history length": bucket_table(data.splits[split][1], LENGTH_EDGES, ranks),
        "by target popularity (training interactions)": bucket_table(
            popularity[data.targets(split)], POPULARITY_EDGES, ranks
        ),
    }
    figures.accuracy(tables, out / "accuracy.png")
    overall = {
        name: {m: v / len(r) for m, v in metric_sums(r, ks=(10,)).items() if m != "mrr@10"} for name, r in ranks.items()
    }
    summary |= {"overall": overall, "buckets": tables}
    summary["pictures"].append("accuracy.png")


def _user(
    config, data, model, user: str, split: str, items_file: Path | None, text_column: str, out: Path, summary: dict
) -> None:
    """The user's first sample of the split: the top-10, the target and its rank, and (a model with a graph)
    user_<id>.png: the MSGraph of the history before the target, with its attention weights."""
    index = int(np.flatnonzero(data.user_ids == user)[0])
    sample = usergraph.user_sample(model, data, index, split, config.exclude_seen)
    if sample is None:
        summary["notes"].append(f"--user {user}: no {split} sample (history too short for the split)")
        return
    summary["user"] = {
        "user": user,
        "target": str(data.item_names[sample.target]),
        "target_rank": sample.rank,
        "ranked": sample.ranked,
        "top": [{"item": str(data.item_names[i]), "score": round(s, 4)} for i, s in sample.top],
    }
    if model.graph_spec() is None:
        summary["notes"].append(f"--user: the {config.model} model reads no graph, so no picture; its top-10 is below")
        return
    recorded = data.manifest.get("inputs", {}).get("files", {}).get("items", {}).get("path")
    texts, why = item_texts(items_file or recorded, text_column)
    if why:
        summary["notes"].append(why)
    picture = f"user_{''.join(c if c.isalnum() else '_' for c in user)}.png"
    summary["user"] |= usergraph.draw(model, data, index, sample, texts, out / picture)
    summary["pictures"].append(picture)


def summary_text(s: dict) -> str:
    lines = [f"run {s['run']}: {s['split']} split, seen items {'excluded' if s['exclude_seen'] else 'kept'}"]
    if "best_epoch" in s:
        lines.append(
            f"selected epoch {s['best_epoch']} of {s['epochs']}: valid HR@10 {s['best_valid']['hr@10']:.4f}, "
            f"NDCG@10 {s['best_valid']['ndcg@10']:.4f}"
        )
    for name, m in s["overall"].items():
        lines.append(f"{name:>10}: HR@10 {m['hr@10']:.4f}, NDCG@10 {m['ndcg@10']:.4f}")
    for title, rows in s["buckets"].items():
        lines.append(
            f"{title}: "
            + "; ".join(
                f"{r['bucket']} ({r['samples']}) HR@10 {r['model']['hr@10']:.3f} vs {r['popularity']['hr@10']:.3f}"
                for r in rows
            )
        )
    for t, g in s.get("gate_weight_of_order_a", {}).items():
        lines.append(f"gate, {t} nodes: weight of order A mean {g['mean']:.3f}, quartiles {g['quartiles']}")
    if "user" in s:
        u = s["user"]
        lines.append(
            f"user {u['user']}: {s['split']} target {u['target']} at rank {u['target_rank']:,} of {u['ranked']:,}; "
            "top-10 " + ", ".join(t["item"] for t in u["top"])
        )
    lines += [f"note: {n}" for n in s["notes"]]
    lines.append("pictures: " + ", ".join(s["pictures"]))
    return "\n".join(lines) + "\n"
