"""Ensembles of trained runs (issue 5): rank all items by the mean of the members' log-probabilities.

    python benchmarks/ensemble.py --name async+features_mixture \
        --members async-s1,features_mixture-s1 --members async-s2,features_mixture-s2 ...

Each `--members` is one ensemble (run directories under runs/suite/<split>/, trained on the same users and
splits); the members are weighted equally, nothing is fitted, so the test split stays untouched by any choice.
Prints validation and test metrics of each member and each ensemble, then the ensembles' mean and standard
deviation, and writes them to benchmarks/results/<split>/ensembles/<name>.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from toys import ROOT

from mmsr_dgl.data.atomic import write_file_atomic
from mmsr_dgl.training.loader import split_batches
from mmsr_dgl.training.metrics import MetricAccumulator, pessimistic_rank
from mmsr_dgl.training.run import load_run

KEYS = ("hr@10", "ndcg@10", "hr@20", "ndcg@20")


@torch.no_grad()
def evaluate_ensemble(run_dirs: list[Path], split: str) -> tuple[list[dict], dict]:
    """Metrics of each member and of the equal-weight mean of their log-probabilities, on `split`."""
    members = [load_run(d)[1:] for d in run_dirs]  # (data, model) per member
    loaders = []
    for data, model in members:
        model.eval()
        model.set_item_content(*data.item_content(model.modalities))
        loaders.append(split_batches(data, model, split, 1024))
    own, mean = [MetricAccumulator() for _ in members], MetricAccumulator()
    for batches in zip(*loaders, strict=True):
        targets = batches[0].targets
        if any(not torch.equal(b.targets, targets) for b in batches):
            raise SystemExit(f"{', '.join(map(str, run_dirs))}: the runs' {split} samples differ (other splits?)")
        log_probs = [model.full_sort_predict(b).log_softmax(-1) for (_, model), b in zip(members, batches)]
        for acc, lp in zip(own, log_probs):
            acc.add(pessimistic_rank(lp, targets))
        mean.add(pessimistic_rank(torch.stack(log_probs).mean(0), targets))  # [B, n_items]
    return [acc.result() for acc in own], mean.result()


def line(label: str, metrics: dict) -> str:
    return f"{label:48s} " + "  ".join(f"{k} {metrics[k]:.4f}" for k in KEYS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="names the results file")
    parser.add_argument("--members", action="append", required=True, metavar="RUN,RUN",
                        help="one ensemble: run names under runs/suite/<split>/; repeat for more ensembles")
    parser.add_argument("--split", choices=["loo", "ratio"], default="loo")
    args = parser.parse_args()
    results = []
    for group in args.members:
        names = group.split(",")
        entry = {"members": names}
        for split in ("valid", "test"):
            own, mean = evaluate_ensemble([ROOT / "runs" / "suite" / args.split / n for n in names], split)
            for n, metrics in zip(names, own):
                print(line(f"{split} {n}", metrics), flush=True)
            print(line(f"{split} ensemble {'+'.join(names)}", mean), flush=True)
            entry[split] = mean
        results.append(entry)
    for split in ("valid", "test"):
        values = {k: np.array([r[split][k] for r in results]) for k in KEYS}
        print(f"{split} mean of {len(results)}: " + "  ".join(
            f"{k} {v.mean():.4f}" + (f" ± {v.std(ddof=1):.4f}" if len(v) > 1 else "") for k, v in values.items()))
    out = ROOT / "benchmarks" / "results" / args.split / "ensembles" / f"{args.name}.json"
    write_file_atomic(out, lambda tmp: tmp.write_text(json.dumps(results, indent=1) + "\n"))


if __name__ == "__main__":
    main()
