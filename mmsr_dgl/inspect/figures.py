"""The pictures of `inspect`, drawn with matplotlib's object API (no display needed), written atomically as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..io import write_file_atomic

MODEL, POPULARITY = "#1f77b4", "#aaaaaa"
FEW = 30  # a bucket with fewer samples is drawn faded: its HR and NDCG are too noisy to compare


def save(figure: Figure, path: Path) -> Figure:
    write_file_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    return figure


def curves(history: list[dict], best_epoch: int, path: Path) -> Figure:
    """Training loss and validation HR@10 / NDCG@10 per epoch, the selected epoch marked."""
    epochs = [r["epoch"] for r in history]
    figure = Figure(figsize=(11, 4))
    loss, valid = figure.subplots(1, 2)
    loss.plot(epochs, [r["loss"] for r in history], marker="o", color="#444444")
    loss.set(title="training loss", xlabel="epoch", ylabel="loss")
    for metric, style in (("hr@10", "-o"), ("ndcg@10", "-s")):
        valid.plot(epochs, [r["valid"][metric] for r in history], style, label=f"valid {metric.upper()}")
    valid.set(title="validation", xlabel="epoch")
    for axes in (loss, valid):
        axes.axvline(best_epoch, color="#d62728", linestyle="--", label=f"selected: epoch {best_epoch}")
        if len(epochs) <= 10:  # whole epochs only, however few
            axes.set_xticks(epochs)
        else:
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)  # a single epoch too: its marker inside the frame
        axes.grid(alpha=0.3)
    valid.legend(loc="best", fontsize=9)
    return save(figure, path)


def gates(weights: dict[str, np.ndarray], histories: str, path: Path) -> Figure:
    """Per node type, the histogram of the gate's weight on order A (homogeneous, then heterogeneous) for every
    node of the histories; 1 - weight goes to order B."""
    figure = Figure(figsize=(4 * len(weights), 3.6))
    for axes, (ntype, w) in zip(np.atleast_1d(figure.subplots(1, len(weights))), weights.items()):
        axes.hist(w, bins=np.linspace(0, 1, 41), color=MODEL)
        axes.axvline(0.5, color="#444444", linewidth=1, label="0.5: both orders alike")
        axes.axvline(float(np.mean(w)), color="#d62728", linestyle="--", label=f"mean {np.mean(w):.2f}")
        axes.set(title=f"{ntype} nodes ({len(w):,})", xlabel="weight of order A (homo -> hetero)", xlim=(0, 1))
        axes.legend(loc="upper left", fontsize=8)
    figure.axes[0].set_ylabel("nodes")
    figure.suptitle(
        f"Update gate, first layer, over {histories}: each node's output is weight x order A + "
        f"(1 - weight) x order B (hetero -> homo)",
        y=1.02,
    )
    return save(figure, path)


def accuracy(tables: dict[str, list[dict]], path: Path) -> Figure:
    """HR@10 and NDCG@10 of the model beside the popularity ranking, per bucket, one panel per grouping; a bucket
    with fewer than FEW samples faded, an empty one left blank and labelled so."""
    figure = Figure(figsize=(6.5 * len(tables), 4.2))
    for axes, (title, rows) in zip(np.atleast_1d(figure.subplots(1, len(tables))), tables.items()):
        x = np.arange(len(rows))
        for offset, metric, who, color, hatch in (
            (-0.3, "hr@10", "model", MODEL, ""),
            (-0.1, "hr@10", "popularity", POPULARITY, ""),
            (0.1, "ndcg@10", "model", MODEL, "//"),
            (0.3, "ndcg@10", "popularity", POPULARITY, "//"),
        ):
            filled = [r for r in rows if r["samples"]]
            bars = axes.bar(
                [x[i] + offset for i, r in enumerate(rows) if r["samples"]],
                [r[who][metric] for r in filled],
                width=0.2,
                color=color,
                hatch=hatch,
                edgecolor="white",
                label=f"{who} {metric.upper()}",
            )
            for bar, r in zip(bars, filled):
                bar.set_alpha(0.3 if r["samples"] < FEW else 1.0)
        for i, r in enumerate(rows):
            if not r["samples"]:
                axes.text(x[i], 0, "no samples", ha="center", va="bottom", fontsize=8, color="#666666")
        axes.set_xticks(x, [f"{r['bucket']}\n({r['samples']:,}{'*' if 0 < r['samples'] < FEW else ''})" for r in rows])
        axes.set(title=title, xlabel=f"bucket (samples; * fewer than {FEW}: faded, too few to compare)")
        axes.grid(axis="y", alpha=0.3)
    handles, labels = figure.axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", ncol=4, bbox_to_anchor=(0.5, 1.06), frameon=False)
    return save(figure, path)
