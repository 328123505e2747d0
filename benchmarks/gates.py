"""What the async update gate learned (issue 5): its mean weight on each order, per node type.

    python benchmarks/gates.py --runs runs/suite/loo/async-s1,runs/suite/loo/async-s2 [--samples 1024]

The gate mixes order A (homogeneous, then heterogeneous attention) and order B (the reverse) per node. Prints,
for the first `--samples` test samples of each run, the mean and standard deviation of the weight on order A.
"""
from __future__ import annotations

import argparse

import torch

from mmsr_dgl.training.loader import split_batches
from mmsr_dgl.training.run import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="comma-separated run directories of async models")
    parser.add_argument("--samples", type=int, default=1024)
    args = parser.parse_args()
    print("| run | layer | node type | weight on homogeneous-then-heterogeneous (mean ± std over nodes) |")
    print("| --- | --- | --- | --- |")
    for run in args.runs.split(","):
        config, data, model = load_run(run)
        if config.model != "mmsr" or config.fusion != "async":
            raise SystemExit(f"{run}: not an async MMSR run (model {config.model}, fusion {config.fusion})")
        model.eval()
        batch = next(iter(split_batches(data, model, "test", args.samples)))
        with torch.no_grad():
            model(batch)
        for layer, gates in enumerate(model.gates(), start=1):
            for node_type, gate in sorted(gates.items()):
                weight = gate[:, 0]  # [N_t]
                print(f"| {run} | {layer} | {node_type} | {weight.mean():.3f} ± {weight.std():.3f} |")


if __name__ == "__main__":
    main()
