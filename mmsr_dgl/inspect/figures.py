"""The pictures of `inspect`, drawn with matplotlib's object API (no display needed), written atomically as PNG."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..data.atomic import write_file_atomic

MODEL, POPULARITY = "#1f77b4", "#aaaaaa"


def save(figure: Figure, path: Path) -> None:
    write_file_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


def curves(history: list[dict], best_epoch: int, path: Path) -> None:
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
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    valid.legend(loc="best", fontsize=9)
    save(figure, path)


def gates(weights: dict[str, np.ndarray], histories: str, path: Path) -> None:
    """Per node type, the histogram of the gate's weight on order A (homogeneous, then heterogeneous) for every
    node of the histories; 1 - weight goes to order B."""
    figure = Figure(figsize=(4 * len(weights), 3.6))
    for axes, (ntype, w) in zip(np.atleast_1d(figure.subplots(1, len(weights))), weights.items()):
        axes.hist(w, bins=np.linspace(0, 1, 41), color=MODEL)
        axes.axvline(float(np.mean(w)), color="#d62728", linestyle="--", label=f"mean {np.mean(w):.2f}")
        axes.set(title=f"{ntype} nodes ({len(w):,})", xlabel="weight of order A (homo -> hetero)", xlim=(0, 1))
        axes.legend(loc="upper left")
    figure.axes[0].set_ylabel("nodes")
    figure.suptitle(f"Update gate, first layer, over {histories} (order B, hetero -> homo, gets 1 - weight)",
                    y=1.02)
    save(figure, path)


def accuracy(tables: dict[str, list[dict]], path: Path) -> None:
    """HR@10 and NDCG@10 of the model beside the popularity ranking, per bucket, one panel per grouping."""
    figure = Figure(figsize=(6.5 * len(tables), 4.2))
    for axes, (title, rows) in zip(np.atleast_1d(figure.subplots(1, len(tables))), tables.items()):
        x = np.arange(len(rows))
        for offset, metric, who, color, hatch in ((-0.3, "hr@10", "model", MODEL, ""),
                                                  (-0.1, "hr@10", "popularity", POPULARITY, ""),
                                                  (0.1, "ndcg@10", "model", MODEL, "//"),
                                                  (0.3, "ndcg@10", "popularity", POPULARITY, "//")):
            axes.bar(x + offset, [r[who][metric] for r in rows], width=0.2, color=color, hatch=hatch,
                     edgecolor="white", label=f"{who} {metric.upper()}")
        axes.set_xticks(x, [f"{r['bucket']}\n({r['samples']:,})" for r in rows])
        axes.set(title=title, xlabel="bucket (samples)")
        axes.grid(axis="y", alpha=0.3)
    handles, labels = figure.axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", ncol=4, bbox_to_anchor=(0.5, 1.06), frameon=False)
    save(figure, path)
