"""One user's MSGraph as the model saw it (attention weights as edge widths) beside their top-10."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch

from ..graph import MSGraphSchema
from ..nn import make_batch
from .figures import save

DRAWN = 12  # positions drawn: the latest items and their codes
GROUP_COLORS = {"homogeneous": "#1f77b4", "heterogeneous": "#ff7f0e"}
NODE_COLORS = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2"]  # item, then one per modality


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
    position (0 = the latest item, at the right), one row per node type."""
    rows = {"item": 0.0} | {t: (1.0 if k % 2 == 0 else -1.0) * (1 + k // 2) for k, t in enumerate(ntypes[1:])}
    where = {}
    for t in ntypes:
        pos = graph.nodes[t].data["pos"]  # [N_t, max_len], column 0 = most recent
        latest = pos.argmax(1).tolist()  # the first column set
        for n, column in enumerate(latest):
            if column < positions:
                where[(t, n)] = (-column + 0.12 * (n % 3 - 1) * (t != "item"), rows[t])
    return where


def draw(model, data, user: int, recommendations: list[tuple[int, float]], texts: dict[str, str], path: Path) -> dict:
    """Draw the user's graph (last `max_len` items) and list their latest items and top-K; returns the user's
    history length, the number of edges per relation group and what the legend lists (only the edge groups drawn,
    and a scale of edge widths)."""
    n_items = len(data.history(user))
    history = data.history(user)[-data.max_len :]
    modalities, views = model.graph_spec()
    batch = make_batch([history], data.max_len, {m: data.codes[m] for m in modalities}, views)
    model.eval()
    trace = model.explain(batch)[0]["attention"]  # the first layer
    graph, schema = batch.graph, MSGraphSchema(tuple(modalities))
    weights, where = edge_weights(graph, trace), layout(graph, schema.ntypes, DRAWN)
    drawn = {key: w for key, w in weights.items() if (key[0][0], key[1]) in where and (key[0][2], key[2]) in where}

    figure = Figure(figsize=(17, 7.5))
    axes, listing = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1.5, 1]})
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
    for k, t in enumerate(schema.ntypes):
        points = np.array([xy for (nt, _), xy in where.items() if nt == t]).reshape(-1, 2)
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
        handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=len(handles), fontsize=8, frameon=False
    )
    shown = f"the last {DRAWN} of its {n_items} items" if n_items > DRAWN else f"its {n_items} items"
    axes.set(
        title=f"user {data.user_ids[user]}: MSGraph, {shown} (edge width: attention weight)",
        xlabel="position (0 = most recent item)",
        yticks=[],
    )
    axes.margins(0.08, 0.25)

    def line(prefix: str, item: int) -> str:
        text = texts.get(str(data.item_ids[item]), "")
        return textwrap.shorten(f"{prefix} {data.item_names[item]}  {text}", 95, placeholder=" ...")

    latest = history[-DRAWN:]
    lines = [
        "Items drawn, by position (0 = most recent):",
        *(line(f"{k - len(latest) + 1:>3}", i) for k, i in enumerate(latest)),
        "",
        "Top-10 (score):",
        *(line(f"{r:>3}. ({s:.2f})", i) for r, (i, s) in enumerate(recommendations, 1)),
    ]
    listing.axis("off")
    listing.text(
        0, 1, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=8.5, transform=listing.transAxes
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
