"""Tables (Markdown) and a plot (PNG) from the summaries that benchmarks/suite.py writes.

    python benchmarks/report.py [--split loo] > /tmp/tables.md     # needs matplotlib for the plot
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = [f"{m}@{k}" for k in (5, 10, 20) for m in ("hr", "ndcg", "mrr")]
TOYS_DEFAULT = "features_mixture_codes_4096_links_1_e24"  # datasets/amazon-toys*.yaml (suite.TOYS_DEFAULT)
ORDER = [TOYS_DEFAULT, "toys_default_sync", "toys_default_id_only", "async", "codes_1024", "features",
         "features_mixture", "features_mixture_codes_4096",
         "features_mixture_codes_4096_links_1", "features_mixture_codes_4096_links_1_lr_2e-3", "sync", "homo_first",
         "hetero_first", "id_only", "no_image", "no_text", *(f"miss_{m}_{r}" for m in ("image", "text")
                                                             for r in (0.2, 0.5, 1.0)),
         "sasrec", "sasrec_dropout_0.2", "popularity"]
PLOTTED = {TOYS_DEFAULT: "MMSR, Toys default", "async": "MMSR, code defaults", "features_mixture_codes_4096":
           "MMSR, mixture, 4,096 codes, 3 links", "sync": "sync (code defaults)", "id_only": "id_only (code defaults)",
           "sasrec": "SASRec (RecBole's settings)", "sasrec_dropout_0.2": "SASRec, dropout 0.2"}


def load(split: str) -> dict[str, list[dict]]:
    runs = defaultdict(list)
    for path in sorted((ROOT / "benchmarks" / "results" / split).glob("*.json")):
        summary = json.loads(path.read_text())
        runs[summary["experiment"]].append(summary)
    rank = {name: i for i, name in enumerate(ORDER)}
    return dict(sorted(runs.items(), key=lambda item: (rank.get(item[0], len(ORDER)), item[0])))


def table(runs: dict[str, list[dict]]) -> str:
    head = ["model", "seeds", *COLUMNS, "valid ndcg@10", "best epoch", "s/epoch (mean)", "eval s",
            "peak GB (lowest seed)", "s/epoch (median)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, summaries in runs.items():
        cells = [name, str(len(summaries)) if name != "popularity" else "-"]
        for column in COLUMNS:
            values = np.array([s["test"][column] for s in summaries])
            std = f" ± {values.std(ddof=1):.4f}" if len(values) > 1 else ""
            cells.append(f"{values.mean():.4f}{std}")
        valid = [s["valid"]["ndcg@10"] for s in summaries if "valid" in s]
        cells.append(f"{np.mean(valid):.4f}" if valid else "-")
        for key in ("best_epoch", "seconds_per_epoch", "eval_seconds"):
            values = [s[key] for s in summaries if key in s]
            cells.append(f"{np.mean(values):.1f}" if values else "-")
        # a run that shared its process with an earlier one inherits that one's peak: only ever too high
        peaks = [s["peak_rss_gb"] for s in summaries if "peak_rss_gb" in s]
        cells.append(f"{min(peaks):.2f}" if peaks else "-")
        epochs = [e["seconds"] for s in summaries for e in s.get("epochs", [])]
        cells.append(f"{np.median(epochs):.1f}" if epochs else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


REFERENCE_AFTER_4 = {"hr@5": 0.0463, "mrr@5": 0.0290, "hr@20": 0.0928, "mrr@20": 0.0334}  # original code, issue 5


def early_table(runs: dict[str, list[dict]]) -> str:
    """Test figures after the first epochs (no checkpoint selection), beside the original code's after 4."""
    keys = list(REFERENCE_AFTER_4)
    lines = ["| model | after epochs | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 2)]
    for name, summaries in runs.items():
        for s in summaries:
            for r in s.get("early_test", []):
                cells = " | ".join(f"{r['test'][k]:.4f}" for k in keys)
                lines.append(f"| {name} (seed {s['seed']}) | {r['after_epochs']} | {cells} |")
            if "early_test" in s:
                cells = " | ".join(f"{s['test'][k]:.4f}" for k in keys)
                lines.append(f"| {name} (seed {s['seed']}) | best of {s['epochs_run']} (epoch {s['best_epoch']}) | "
                             f"{cells} |")
    lines.append("| original MMSR code (reference) | 4 | " + " | ".join(f"{v:.4f}" for v in REFERENCE_AFTER_4.values())
                 + " |")
    return "\n".join(lines)


def tuning_table() -> str:
    """The validation-only trials of benchmarks/tune.py, as written to benchmarks/results/tuning/."""
    head = ["trial", "settings (from the paper's: readout last, item_repr id, dot product, 64 codes)",
            "epochs", "valid NDCG@10 per epoch", "best valid NDCG@10", "its HR@10", "s/epoch"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for path in sorted((ROOT / "benchmarks" / "results" / "tuning").glob("*.json")):
        t = json.loads(path.read_text())
        overrides = dict(o.split("=", 1) for o in t["train_overrides"] + t["preprocess_overrides"])  # last wins
        settings = " ".join(f"{k}={v}" for k, v in overrides.items()) or "(the paper's)"
        curve = " ".join(f"{x:.4f}" for x in t["valid_ndcg10_per_epoch"])
        lines.append(f"| {t['trial']} | {settings} | {t['epochs']} | {curve} | {t['best_valid']['ndcg@10']:.4f} | "
                     f"{t['best_valid']['hr@10']:.4f} | {np.median(t['seconds_per_epoch']):.0f} |")
    return "\n".join(lines)


def plot(runs: dict[str, list[dict]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(10, 5))
    colors = plt.get_cmap("tab10").colors
    for k, name in enumerate(name for name in PLOTTED if name in runs):
        for i, s in enumerate(runs[name]):  # one colour per model, one line style per seed
            if "valid_ndcg10_per_epoch" in s:
                curve = s["valid_ndcg10_per_epoch"]
                ax.plot(range(1, len(curve) + 1), curve, color=colors[k % len(colors)],
                        linestyle=("-", "--", ":")[i % 3], label=PLOTTED[name] if i == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG@10")
    ax.set_title("Amazon Toys, leave-one-out, full ranking")
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=0.03)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), title="line style: seed 1, 2, 3",
              title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--split", default="loo")
    parser.add_argument("--plot", type=Path, help="default: benchmarks/results/<split>/valid_ndcg10.png")
    args = parser.parse_args()
    args.plot = args.plot or ROOT / "benchmarks" / "results" / args.split / "valid_ndcg10.png"
    runs = load(args.split)
    print(table(runs))
    if any("early_test" in s for summaries in runs.values() for s in summaries):
        print("\nTest figures after the first epochs:\n")
        print(early_table(runs))
    print("\nValidation-only tuning trials (benchmarks/tune.py):\n")
    print(tuning_table())
    try:
        plot(runs, args.plot)
        print(f"\n(plot written to {args.plot.relative_to(ROOT)})")
    except ImportError:
        print("\n(no plot: pip install matplotlib)")


if __name__ == "__main__":
    main()
