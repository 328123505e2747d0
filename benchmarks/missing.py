"""Missing modalities at test time only (issue 5): evaluate a trained run with each modality dropped.

    python benchmarks/missing.py --run runs/suite/loo/async-s1 [--rates 0,0.2,0.5,1.0] [--split test]

For each modality and rate, that share of the items (a fixed random subset) loses its codes and reduced features
of that modality for evaluation only; the model was trained with everything. Prints NDCG@10 and HR@10 per cell
and writes the table to benchmarks/results/<protocol>/missing/<run>_<split>_only.json. The train-and-test variant trains with
`--set missing_modality=M --set missing_rate=R` (suite.py experiments miss_<modality>_<rate>).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from mmsr_dgl.training import evaluate
from mmsr_dgl.training.run import load_run
from toys import ROOT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--rates", default="0,0.2,0.5,1.0")
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    config, data, model = load_run(args.run)
    table = {}
    for modality in data.modalities:
        for rate in rates:
            dropped = dataclasses.replace(data)
            dropped.drop_codes(modality, rate, config.seed + 1)
            metrics = evaluate(model, dropped, args.split, config.eval_batch_size)
            table[f"{modality}@{rate}"] = {"ndcg@10": metrics["ndcg@10"], "hr@10": metrics["hr@10"]}
            print(f"{modality:6s} missing {rate:4.0%} at {args.split} time only: "
                  f"NDCG@10 {metrics['ndcg@10']:.4f}  HR@10 {metrics['hr@10']:.4f}", flush=True)
    protocol = data.manifest["settings"]["split"]
    out = ROOT / "benchmarks" / "results" / protocol / "missing" / f"{args.run.name}_{args.split}_only.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"run_config": dataclasses.asdict(config), "split": args.split, "table": table}
    out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
