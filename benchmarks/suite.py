"""Accuracy suite on Amazon Toys (issue 5): models and ablations through one harness, resumable.

    python benchmarks/suite.py --experiments async,sasrec --seeds 1,2,3 [--split loo|ratio]
    python benchmarks/suite.py --list

Each (experiment, seed) trains into runs/suite/<split>/<experiment>-s<seed> with early stopping on validation
NDCG@10 and tests the best checkpoint once. A finished run is skipped when the suite is run again, and an
interrupted one resumes. Several runs each get their own process, so that each one's peak memory is its own.
A summary of every finished run is written to benchmarks/results/<split>/ (small JSON files that are committed);
benchmarks/report.py turns them into the tables of BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from toys import CODES_256, ROOT, prepare_toys, toys_dir

from mmsr_dgl.config import build_config
from mmsr_dgl.data import load_processed
from mmsr_dgl.training import TrainConfig, evaluate, evaluate_scores, train
from mmsr_dgl.training.run import CONFIG_FILE, load_run

EARLY_KEYS = ("hr@5", "mrr@5", "hr@20", "mrr@20")  # the figures published for the original code
SASREC = ["model=sasrec", "n_layers=2", "n_heads=2", "dim=64", "temperature=0"]
EXPERIMENTS = {
    "async": [],
    "sync": ["fusion=sync"],
    "homo_first": ["fusion=homo_first"],
    "hetero_first": ["fusion=hetero_first"],
    "id_only": ["fusion=id_only"],
    "no_image": ["modalities=[text]"],
    "no_text": ["modalities=[image]"],
    # not an ablation: the default plus a learned map of each item's reduced features in its embedding
    "features": ["item_repr=id+codes+features"],
    # features and two readouts (`last`, `last+pool`) whose softmaxes are averaged: aimed at HR@10 (tune.py)
    "features_mixture": ["item_repr=id+codes+features", "readout=mixture"],
    "features_mixture_dim_128": ["item_repr=id+codes+features", "readout=mixture", "dim=128"],  # ran 8 epochs only
    # RecBole's SASRec: dot-product scores
    "sasrec": SASREC + ["dropout=0.5", "attn_dropout=0.5"],
    # SASRec tuned on validation: the only trial that beat RecBole's settings at epoch 6 (tune.py sasrec_dropout_0.2)
    "sasrec_dropout_0.2": SASREC + ["dropout=0.2", "attn_dropout=0.2"],
    # missing modalities in training and evaluation alike (test-time-only drops: benchmarks/missing.py)
    **{f"miss_{m}_{r}": [f"missing_modality={m}", f"missing_rate={r}"]
       for m in ("image", "text") for r in (0.2, 0.5, 1.0)},
    # finer codes (preprocessing below), the best trials on validation (tune.py chosen_codes_1024 and
    # features_mixture_codes_4096)
    "codes_1024": [],
    "features_mixture_codes_4096": ["item_repr=id+codes+features", "readout=mixture"],
    # 1 link per item instead of 3 (a ninth of the code-to-code edges, tune.py features_mixture_codes_4096_links_1),
    # and the same with twice the learning rate: aimed at the 30-minute budget
    "features_mixture_codes_4096_links_1": ["item_repr=id+codes+features", "readout=mixture"],
    "features_mixture_codes_4096_links_1_lr_2e-3": ["item_repr=id+codes+features", "readout=mixture", "lr=2e-3"],
    # the Toys default (datasets/amazon-toys*.yaml): 1 link, a fixed budget of 24 epochs and patience 10 (with
    # patience 5 the 1-link runs stopped before a slow climb of validation NDCG@10)
    "features_mixture_codes_4096_links_1_e24": ["item_repr=id+codes+features", "readout=mixture", "epochs=24",
                                                "patience=10"],
}
TOYS_DEFAULT = "features_mixture_codes_4096_links_1_e24"
# ablations of the Toys default: its fusion switched to `sync`, and no code nodes
TOYS_DEFAULT_ABLATIONS = {f"toys_default_{fusion}": [*EXPERIMENTS[TOYS_DEFAULT], f"fusion={fusion}"]
                          for fusion in ("sync", "id_only")}
EXPERIMENTS.update(TOYS_DEFAULT_ABLATIONS)
# experiment -> preprocessing overrides of datasets/amazon-toys.yaml (the others: CODES_256), written out so that an
# experiment does not change with the file
PREPROCESSING = {"codes_1024": ["n_codes=1024", "codes_per_item=3"],
                 "features_mixture_codes_4096": ["n_codes=4096", "codes_per_item=3"],
                 **{name: ["n_codes=4096", "codes_per_item=1"] for name in (
                     "features_mixture_codes_4096_links_1", "features_mixture_codes_4096_links_1_lr_2e-3", TOYS_DEFAULT,
                     *TOYS_DEFAULT_ABLATIONS)}}


def preprocessing(name: str) -> list[str]:
    """The preprocessing overrides of an experiment (each set of them gets a data directory of its own)."""
    return PREPROCESSING.get(name, CODES_256)


def experiment_data(toys: Path, split: str, name: str) -> Path:
    """The preprocessed Toys an experiment trains on (made when missing or out of date)."""
    overrides = preprocessing(name)
    tag = "".join(f"-{o}" for o in overrides)
    return prepare_toys(toys, ROOT / "runs" / "suite" / f"toys-{split}-data{tag}", [f"split={split}", *overrides])


def early_tests(config: TrainConfig, data_dir: Path, run_dir: Path, epochs: list[int]) -> list[dict]:
    """Test metrics of the model as it stands after each of `epochs` (last.pt, not a selected checkpoint), to set
    beside published per-epoch figures. Model selection still looks at validation only."""
    path = run_dir / "early_test.json"
    done = json.loads(path.read_text()) if path.exists() else []
    for epoch in epochs:
        if any(r["after_epochs"] == epoch for r in done):
            continue
        train(dataclasses.replace(config, epochs=epoch), data_dir, run_dir, resume=(run_dir / CONFIG_FILE).exists(),
              echo=print, progress=False, test=False)
        _, data, model = load_run(run_dir, "last")
        done.append({"after_epochs": epoch, "test": evaluate(model, data, "test", config.eval_batch_size)})
        print(f"after {epoch} epochs: test " + ", ".join(f"{k} {done[-1]['test'][k]:.4f}" for k in EARLY_KEYS),
              flush=True)
        path.write_text(json.dumps(done, indent=1) + "\n")
    return done


def run_one(name: str, seed: int, data_dir: Path, out_root: Path, results_dir: Path, extra: list[str],
            early_epochs: list[int]) -> dict:
    summary_path = results_dir / f"{name}-s{seed}.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    overrides = EXPERIMENTS[name] + extra + [f"seed={seed}"]
    config = build_config(TrainConfig, overrides=overrides)
    run_dir = out_root / f"{name}-s{seed}"
    start = time.perf_counter()
    early = early_tests(config, data_dir, run_dir, early_epochs) if early_epochs else []
    results = train(config, data_dir, run_dir, resume=(run_dir / CONFIG_FILE).exists(), echo=print, progress=False)
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = {"experiment": name, "seed": seed, "overrides": overrides,
               "preprocess_overrides": preprocessing(name), **results,
               "valid_ndcg10_per_epoch": [r["valid"]["ndcg@10"] for r in history],
               "epochs": [{"epoch": r["epoch"], "loss": r["loss"], "seconds": r["seconds"]}
                                     for r in history],
               "wall_minutes": round((time.perf_counter() - start) / 60, 2),
               "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2),
               **({"early_test": early} if early else {})}
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
    parser.add_argument("--early-test-epochs", default="", metavar="1,2,3,4",
                        help="also test the model as it stands after these epochs (for per-epoch comparisons)")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    if args.list:
        for name, overrides in EXPERIMENTS.items():
            print(f"{name:14s} {' '.join(overrides + preprocessing(name))}")
        return
    names, seeds = args.experiments.split(","), [int(s) for s in args.seeds.split(",")]
    for name in names:
        if name not in EXPERIMENTS:
            raise SystemExit(f"unknown experiment {name!r}; --list shows them")
    results_dir = ROOT / "benchmarks" / "results" / args.split
    popularity_path = results_dir / "popularity.json"
    if not popularity_path.exists():
        data = load_processed(experiment_data(args.toys, args.split, "async"))
        results_dir.mkdir(parents=True, exist_ok=True)
        popularity_path.write_text(json.dumps({"experiment": "popularity", "test": evaluate_scores(
            data.train_popularity(), data, "test")}, indent=1) + "\n")
    if len(names) * len(seeds) > 1:  # one process per run: ru_maxrss is the peak of the whole process
        for name in names:
            for seed in seeds:
                subprocess.run([sys.executable, __file__, "--toys", str(args.toys), "--split", args.split,
                                "--experiments", name, "--seeds", str(seed), *(f"--set={e}" for e in args.extra),
                                f"--early-test-epochs={args.early_test_epochs}"], check=True)
        return
    for name in names:
        for seed in seeds:
            data_dir = experiment_data(args.toys, args.split, name)
            summary = run_one(name, seed, data_dir, ROOT / "runs" / "suite" / args.split, results_dir, args.extra,
                              [int(e) for e in args.early_test_epochs.split(",") if e])
            test = summary["test"]
            print(f"{name} seed {seed}: test ndcg@10 {test['ndcg@10']:.4f} hr@10 {test['hr@10']:.4f} "
                  f"(best epoch {summary['best_epoch']}, {summary['seconds_per_epoch']:.0f} s/epoch)", flush=True)


if __name__ == "__main__":
    main()
