"""Accuracy suite on Amazon Toys (issue 5): models and ablations through one harness, resumable.

    python benchmarks/suite.py --experiments async,sasrec --seeds 1,2,3 [--split loo|ratio]
    python benchmarks/suite.py --list

Each (experiment, seed) trains into runs/suite/<split>/<experiment>-s<seed> with early stopping on validation
NDCG@10 and tests the best checkpoint once. A finished run is skipped when the suite is run again, and an
interrupted one resumes. A summary of every finished run is written to benchmarks/results/<split>/ (small
JSON files that are committed); benchmarks/report.py turns them into the tables of BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from toys import ROOT, toys_dir, toys_inputs

from mmsr_dgl.config import build_config
from mmsr_dgl.data import load_processed
from mmsr_dgl.data.preprocess import PreprocessConfig, preprocess
from mmsr_dgl.training import TrainConfig, evaluate_scores, train

EXPERIMENTS = {
    "async": [],
    "sync": ["fusion=sync"],
    "homo_first": ["fusion=homo_first"],
    "hetero_first": ["fusion=hetero_first"],
    "id_only": ["fusion=id_only"],
    "no_image": ["modalities=[text]"],
    "no_text": ["modalities=[image]"],
    "sasrec": ["model=sasrec", "n_layers=2", "n_heads=2", "dim=64", "dropout=0.5", "attn_dropout=0.5"],
    # missing modalities in training and evaluation alike (test-time-only drops: benchmarks/missing.py)
    **{f"miss_{m}_{r}": [f"missing_modality={m}", f"missing_rate={r}"]
       for m in ("image", "text") for r in (0.2, 0.5, 1.0)},
}


def run_one(name: str, seed: int, data_dir: Path, out_root: Path, results_dir: Path, extra: list[str]) -> dict:
    summary_path = results_dir / f"{name}-s{seed}.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    overrides = EXPERIMENTS[name] + extra + [f"seed={seed}"]
    config = build_config(TrainConfig, overrides=overrides)
    run_dir = out_root / f"{name}-s{seed}"
    start = time.perf_counter()
    results = train(config, data_dir, run_dir, resume=(run_dir / "last.pt").exists(), echo=print, progress=False)
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = {"experiment": name, "seed": seed, "overrides": overrides, **results,
               "valid_ndcg10_per_epoch": [r["valid"]["ndcg@10"] for r in history],
               "epochs": [{"epoch": r["epoch"], "loss": r["loss"], "seconds": r["seconds"]}
                                     for r in history],
               "wall_minutes": round((time.perf_counter() - start) / 60, 2),
               "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)}
    results_dir.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toys", type=Path, default=toys_dir())
    parser.add_argument("--experiments", default="async,sasrec")
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--split", choices=["loo", "ratio"], default="loo")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="extra training override for every experiment (recorded in the summaries)")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    if args.list:
        for name, overrides in EXPERIMENTS.items():
            print(f"{name:14s} {' '.join(overrides)}")
        return
    data_dir = ROOT / "runs" / "suite" / f"toys-{args.split}-data"
    preprocess(build_config(PreprocessConfig, overrides=[f"split={args.split}"]), toys_inputs(args.toys),
               data_dir, log=lambda m: None)
    results_dir = ROOT / "benchmarks" / "results" / args.split
    popularity_path = results_dir / "popularity.json"
    if not popularity_path.exists():
        data = load_processed(data_dir)
        results_dir.mkdir(parents=True, exist_ok=True)
        popularity_path.write_text(json.dumps({"experiment": "popularity", "test": evaluate_scores(
            data.train_popularity(), data, "test")}, indent=1) + "\n")
    for name in args.experiments.split(","):
        if name not in EXPERIMENTS:
            raise SystemExit(f"unknown experiment {name!r}; --list shows them")
        for seed in map(int, args.seeds.split(",")):
            summary = run_one(name, seed, data_dir, ROOT / "runs" / "suite" / args.split, results_dir, args.extra)
            test = summary["test"]
            print(f"{name} seed {seed}: test ndcg@10 {test['ndcg@10']:.4f} hr@10 {test['hr@10']:.4f} "
                  f"(best epoch {summary['best_epoch']}, {summary['seconds_per_epoch']:.0f} s/epoch)", flush=True)


if __name__ == "__main__":
    main()
