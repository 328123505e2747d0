"""One user's sample of a split: their MSGraph as the model saw it (attention weights as edge widths), the top-10
and the target's rank."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch

from ..graph import MSGraphSchema
from ..nn import make_batch
from ..training.evaluate import ranked_scores
from ..training.metrics import pessimistic_rank
from .figures import save

DRAWN = 12  # positions drawn: the latest items and their codes
GROUP_COLORS = {"homogeneous": "#1f77b4", "heterogeneous": "#ff7f0e"}
NODE_COLORS = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2"]  # item, then one per modality


@dataclass(frozen=True)
class UserSample:
    """One user's first sample of a split, as evaluation ranks it."""

    split: str
    history: np.ndarray  # item ids [<= max_len]: the latest items before the target
    target: int
    top: list[tuple[int, float]]  # (item id, score), best first
    rank: int  # the target's rank, 1-based and pessimistic (ties rank above it)
    ranked: int  # items ranked: all but the padding id, and the history's items when seen items are excluded


@torch.no_grad()
def user_sample(model, data, user: int, split: str, exclude_seen: bool, k: int = 10) -> UserSample | None:
    """The user's first sample of `split` scored as evaluation scores it; None when the split has none of theirs."""
    users, ends = data.splits[split]
    rows = np.flatnonzero(users == user)[:1]
    if not len(rows):
        return None
    history = data.inputs(users[rows], ends[rows])[0]
    target = data.targets(split)[rows].astype(np.int64)
    seen = data.inputs(users[rows], ends[rows], full=True) if exclude_seen else None
    batch = make_batch([history], data.max_len, *model.graph_inputs(data), target, seen)
    model.eval()
    scores = ranked_scores(model, batch, model.item_table(), exclude_seen)
    top = torch.topk(scores[0], min(k, data.n_items - 1))
    return UserSample(
        split=split,
        history=history,
        target=int(target[0]),
        top=[(i, s) for i, s in zip(top.indices.tolist(), top.values.tolist()) if s > float("-inf")],
        rank=int(pessimistic_rank(scores, batch.targets)[0]) + 1,
        ranked=int(torch.isfinite(scores).sum()),
    )


def edge_weights(graph, trace: list) -> dict[tuple, float]:
    """(relation, source node, destination node) -> attention weight, the mean over the phases that read the edge
    (self-loops left out)."""
    sums: dict[tuple, list[float]] = {}
    for _, weights in trace:
        for rel, w in weights.items():
            if rel[1] == "self":
                continue
            src, dst = graph.edges(etype=rel)
            for u, v, x in zip(src.tolist(), dst.tolist(), w.flatten().tolist()):
                sums.setdefault((rel, u, v), []).append(x)
    return {key: float(np.mean(v)) for key, v in sums.items()}


def layout(graph, ntypes: list[str], positions: int) -> dict[tuple[str, int], tuple[float, float]]:
    """(node type, node) -> (x, y) of the nodes of the last `positions` positions: x the node's most recent
    position (0 = the latest item, at the right), one row per node type; code nodes of one type that share a
    position are spread evenly around it, so a code alone sits right above (below) its item."""
    rows = {"item": 0.0} | {t: (1.0 if k % 2 == 0 else -1.0) * (1 + k // 2) for k, t in enumerate(ntypes[1:])}
    where = {}
    for t in ntypes:
        pos = graph.nodes[t].data["pos"]  # [N_t, max_len], column 0 = most recent
        latest = pos.argmax(1).numpy()  # the first column set
        for column in np.unique(latest[latest < positions]):
            nodes = np.flatnonzero(latest == column)
            spread = 0.7 / max(len(nodes), 2)
            for j, n in enumerate(nodes):
                where[(t, int(n))] = (-float(column) + spread * (j - (len(nodes) - 1) / 2), rows[t])
    return where


def draw(model, data, user: int, sample: UserSample, texts: dict[str, str], path: Path) -> dict:
    """Draw the graph of the user's history before the target of `sample` (its last `max_len` items) above two
    listings: its latest items, and the top-K with the target's rank. Returns the history's length, the number of
    edges per relation group and what the legend lists (only the edge groups drawn, and a scale of widths)."""
    codes, views = model.graph_inputs(data)
    batch = make_batch([sample.history], data.max_len, codes, views)
    model.eval()
    trace = model.explain(batch)[0]["attention"]  # the first layer
    graph, schema = batch.graph, MSGraphSchema(tuple(codes))
    weights, where = edge_weights(graph, trace), layout(graph, schema.ntypes, DRAWN)
    drawn = {key: w for key, w in weights.items() if (key[0][0], key[1]) in where and (key[0][2], key[2]) in where}

    figure = Figure(figsize=(15, 8.5))
    grid = figure.add_gridspec(2, 2, height_ratios=[1.5, 1], hspace=0.3, wspace=0.05)
    axes = figure.add_subplot(grid[0, :])
    handles = _graph(axes, schema, drawn, where)
    n_items = len(sample.history)
    shown = f"the last {DRAWN} of the {n_items} items" if n_items > DRAWN else f"the {n_items} items"
    axes.set_title(
        f"user {data.user_ids[user]}: the MSGraph of {shown} before the {sample.split} target "
        "(edge width: attention weight, first layer)"
    )
    for column, lines in enumerate(_listings(data, sample, texts)):
        listing = figure.add_subplot(grid[1, column])
        listing.axis("off")
        listing.text(
            0, 1, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=8, transform=listing.transAxes
        )
    save(figure, path)
    by_group = {
        g: [w for (rel, _, _), w in weights.items() if (rel in schema.homogeneous) == (g == "homogeneous")]
        for g in GROUP_COLORS
    }
    return {
        "history_items": n_items,
        "edges": {g: len(w) for g, w in by_group.items()},
        "legend": [h.get_label() for h in handles],
    }


def _graph(axes, schema: MSGraphSchema, drawn: dict[tuple, float], where: dict) -> list:
    """The nodes at `where` and the edges `drawn` (width: weight), one row per node type; returns the legend's
    handles: the node types, the edge groups drawn, a scale of widths."""
    for (rel, u, v), w in drawn.items():
        group = "homogeneous" if rel in schema.homogeneous else "heterogeneous"
        arrow = FancyArrowPatch(
            where[(rel[0], u)],
            where[(rel[2], v)],
            arrowstyle="-|>",
            mutation_scale=8,
            connectionstyle="arc3,rad=0.25",
            linewidth=0.3 + 4 * w,
            alpha=0.75,
            color=GROUP_COLORS[group],
            shrinkA=7,
            shrinkB=7,
        )
        axes.add_patch(arrow)
    rows = {}
    for k, t in enumerate(schema.ntypes):
        points = np.array([xy for (nt, _), xy in where.items() if nt == t]).reshape(-1, 2)
        if len(points):
            rows[points[0, 1]] = t
        axes.scatter(
            points[:, 0],
            points[:, 1],
            s=160 if t == "item" else 90,
            marker="s" if t == "item" else "o",
            color=NODE_COLORS[k % len(NODE_COLORS)],
            zorder=3,
            label=f"{t} node",
        )
    handles, _ = axes.get_legend_handles_labels()
    present = {"homogeneous" if rel in schema.homogeneous else "heterogeneous" for rel, _, _ in drawn}
    handles += [
        Line2D([], [], color=c, linewidth=2, label=f"{g} edge") for g, c in GROUP_COLORS.items() if g in present
    ]
    handles += [Line2D([], [], color="#777777", linewidth=0.3 + 4 * w, label=f"weight {w:g}") for w in (0.1, 0.5, 1)]
    axes.legend(
        handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=len(handles), fontsize=8, frameon=False
    )
    axes.set(xlabel="position (0 = most recent item)", yticks=sorted(rows), yticklabels=[rows[y] for y in sorted(rows)])
    axes.margins(0.04, 0.2)
    return handles


def _listings(data, sample: UserSample, texts: dict[str, str]) -> list[list[str]]:
    """Two columns of text: the items drawn, by position; the top-K (the target marked) and the target's rank."""

    def line(prefix: str, item: int) -> str:
        text = texts.get(str(data.item_ids[item]), "")
        return textwrap.shorten(f"{prefix} {data.item_names[item]}  {text}", 80, placeholder=" ...")

    latest = sample.history[-DRAWN:]
    return [
        [
            "Items drawn, by position (0 = most recent):",
            *(line(f"{k - len(latest) + 1:>3}", i) for k, i in enumerate(latest)),
        ],
        [
            f"Top-{len(sample.top)} (score); the {sample.split} target is marked *:",
            *(
                line(f"{'*' if i == sample.target else ' '}{r:>2}. ({s:.2f})", i)
                for r, (i, s) in enumerate(sample.top, 1)
            ),
            "",
            f"{sample.split} target (rank {sample.rank:,} of {sample.ranked:,}):",
            line("  ", sample.target),
        ],
    ]
