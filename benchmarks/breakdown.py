"""Where two models' hits differ (issue 5): test HR@10 and NDCG@10 by the popularity of the target item.

    python benchmarks/breakdown.py --runs runs/suite/loo/async-s1,runs/suite/loo/sasrec-s1

Test samples are split into three equal-count groups by how often their target item occurs in the training part
of the histories (`ProcessedData.train_popularity`). For each run, prints HR@10 and NDCG@10 per group, then, for
the first two runs, how many test samples each one hits at 10 that the other misses.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from mmsr_dgl.training import target_ranks
from mmsr_dgl.training.metrics import metric_sums
from mmsr_dgl.training.run import load_run

GROUPS = ("tail (rarest third)", "middle third", "head (most popular third)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="comma-separated run directories, on the same dataset")
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    args = parser.parse_args()
    hits, group, counts = {}, None, None
    for run in args.runs.split(","):
        config, data, model = load_run(Path(run))
        ranks = target_ranks(model, data, args.split, config.eval_batch_size).numpy()
        if group is None:
            popularity = data.train_popularity()[data.targets(args.split)]  # [n_samples]
            order = np.argsort(popularity, kind="stable")
            group = np.empty(len(order), dtype=np.int64)
            group[order] = np.arange(len(order)) * len(GROUPS) // len(order)
            counts = [np.median(popularity[group == g]) for g in range(len(GROUPS))]
        elif len(ranks) != len(group):
            raise SystemExit(f"{run}: {len(ranks)} {args.split} samples, the first run had {len(group)}")
        hit = ranks < 10
        hits[run] = hit
        print(f"{run} ({config.model}): {args.split} HR@10 {hit.mean():.4f}")
        for g, name in enumerate(GROUPS):
            in_group = torch.from_numpy(ranks[group == g])
            sums = metric_sums(in_group, ks=(10,))
            print(f"  {name:27s} (median {counts[g]:5.0f} training interactions): "
                  f"HR@10 {sums['hr@10'] / len(in_group):.4f}  NDCG@10 {sums['ndcg@10'] / len(in_group):.4f}")
    if len(hits) >= 2:
        (a, hit_a), (b, hit_b) = list(hits.items())[:2]
        print(f"hit at 10 by both: {np.sum(hit_a & hit_b)}; only by {a}: {np.sum(hit_a & ~hit_b)}; "
              f"only by {b}: {np.sum(~hit_a & hit_b)} (of {len(hit_a)})")


if __name__ == "__main__":
    main()
