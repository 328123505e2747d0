"""Training benchmark on Amazon Toys: seconds per epoch, full evaluation, peak memory, test metrics.

    python benchmarks/bench_train.py [--toys DIR] [--config FILE] [--epochs N] [--set key=value ...]

Preprocesses the Toys data with the default settings (cached under runs/bench/toys-data), trains with the default
settings (or `--config FILE`), and prints the figures against their targets: an epoch under 90 s, one full
evaluation of all users under 15 s, peak memory under 3 GB, a whole run under 45 minutes.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import time
from pathlib import Path

from toys import ROOT, has_toys, prepare_toys, toys_dir

from mmsr_dgl.config import build_config
from mmsr_dgl.training import TrainConfig, evaluate, train
from mmsr_dgl.training.run import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toys", type=Path, default=toys_dir())
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--config", default="", help="training settings file (default: none, the code defaults)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--preprocess-set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if not has_toys(args.toys):
        raise SystemExit(f"Amazon Toys data not found at {args.toys}")

    data_dir = args.work / "toys-data"
    prepare_toys(args.toys, data_dir, args.preprocess_set)
    overrides = list(args.overrides) + ([f"epochs={args.epochs}"] if args.epochs else [])
    config = build_config(TrainConfig, file=args.config or None, overrides=overrides)
    run_dir = args.work / "toys-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    start = time.perf_counter()
    results = train(config, data_dir, run_dir, echo=print, progress=False)
    total = time.perf_counter() - start

    _, data, model = load_run(run_dir)
    start = time.perf_counter()
    evaluate(model, data, "test", config.eval_batch_size)
    eval_seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    epoch_s = results["seconds_per_epoch"]
    print(
        json.dumps(
            {
                "config_file": args.config,
                "config": overrides,
                "preprocess": args.preprocess_set,
                "test": results["test"],
                "popularity_test": results["popularity_test"],
                "best_epoch": results["best_epoch"],
                "epochs_run": results["epochs_run"],
            },
            indent=2,
        )
    )
    print(f"seconds per training epoch: {epoch_s:.1f} (target < 90)")
    print(f"full evaluation of {len(data.splits['test'][0])} users: {eval_seconds:.1f} s (target < 15)")
    print(f"peak memory: {peak_gb:.2f} GB (target < 3)")
    print(f"whole run (training, validation, test): {total / 60:.1f} min (target < 45)")


if __name__ == "__main__":
    main()
