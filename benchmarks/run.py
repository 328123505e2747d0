"""Train seeds of benchmark experiments on Amazon Toys and tabulate them (resumable).

    python benchmarks/run.py toys_default sasrec --seeds 1,2,3      # train what is missing, print the table
    python benchmarks/run.py                                        # the table of every experiment with results
    python benchmarks/run.py default --seeds 1 --missing-at-test 0,0.2,0.5,1.0

An experiment is a preset, benchmarks/experiments/NAME.yaml: `train:` (training settings), `preprocess:`
(preprocessing settings), optionally `split:` (loo, the default, or ratio), `inputs:` (Toys input files replaced:
`items` or a modality's feature matrix, paths relative to the repository, e.g. the output of `mmsr-dgl encode`) and
`test_after_epochs:` (also test the model as it stands after these epochs, to set beside per-epoch figures
published elsewhere; checkpoint selection still looks at validation only) and `nproc:` (training processes, as
`mmsr-dgl train --nproc`). Each (experiment, seed) trains into
runs/bench/<split>/NAME-s<seed> and writes a summary to benchmarks/results/<split>/NAME-s<seed>.json; a run with a
summary is skipped, an interrupted one resumes. With more than one run to do, each runs in its own process, so that
its peak memory is its own. `--missing-at-test` evaluates the trained runs with a share of the items missing a
modality at test time only (results/<split>/missing/NAME-s<seed>_test_only.json). `--data DIR` trains on another
dataset that `mmsr-dgl preprocess` made (the presets' preprocessing is then not applied); its summaries record the
dataset's input files by name and SHA-256 and belong under a results folder of their own, e.g.
`--data runs/beauty-data --out runs/bench/beauty --results benchmarks/results/beauty`.
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

import numpy as np
import yaml
from toys import ROOT, prepare_toys, toys_dir

from mmsr_dgl.config import build_config
from mmsr_dgl.data.preprocess import PreprocessConfig
from mmsr_dgl.errors import UserError
from mmsr_dgl.training import TrainConfig, evaluate, train
from mmsr_dgl.training.run import CONFIG_FILE, load_run

PRESETS = Path(__file__).resolve().parent / "experiments"
KEYS = {"train", "preprocess", "split", "inputs", "test_after_epochs", "nproc"}
COLUMNS = ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr@10")
EARLY_COLUMNS = ("hr@5", "mrr@5", "hr@20", "mrr@20")  # the figures published for the original MMSR code
POPULARITY = {True: "popularity_seen_excluded.json", False: "popularity.json"}  # by `exclude_seen`


def overrides(mapping: dict) -> list[str]:
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in mapping.items()]


def load_preset(path: Path) -> dict:
    """A preset's `train` and `preprocess` overrides, split and early test epochs; raises UserError when invalid."""
    preset = yaml.safe_load(path.read_text()) or {}
    if not isinstance(preset, dict) or set(preset) - KEYS:
        raise UserError(f"{path}: expected a mapping with keys among {sorted(KEYS)}")
    if not all(isinstance(preset.get(k, {}), dict) for k in ("train", "preprocess")):
        raise UserError(f"{path}: `train` and `preprocess` must be mappings of settings")
    inputs = preset.get("inputs", {})
    if not isinstance(inputs, dict) or not all(isinstance(v, str) for v in inputs.values()):
        raise UserError(f"{path}: `inputs` must map `items` or a modality to a file")
    split, epochs = preset.get("split", "loo"), preset.get("test_after_epochs", [])
    if split not in ("loo", "ratio") or not all(isinstance(e, int) and e > 0 for e in epochs):
        raise UserError(f"{path}: `split` must be loo or ratio, `test_after_epochs` a list of epochs")
    nproc = preset.get("nproc", 1)
    if not isinstance(nproc, int) or nproc < 1 or (nproc > 1 and epochs):
        raise UserError(f"{path}: `nproc` must be a positive number of processes (1 with `test_after_epochs`)")
    train_overrides = overrides(preset.get("train", {}))
    preprocess_overrides = overrides(preset.get("preprocess", {})) + [f"split={split}"]
    try:
        build_config(TrainConfig, overrides=train_overrides)
        build_config(PreprocessConfig, overrides=preprocess_overrides)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    return {
        "train": train_overrides,
        "preprocess": preprocess_overrides,
        "split": split,
        "early": epochs,
        "inputs": {k: ROOT / v for k, v in inputs.items()},
        "nproc": nproc,
    }


def test_after_epochs(config: TrainConfig, data_dir: Path, run_dir: Path, epochs: list[int]) -> list[dict]:
    """Test metrics of the model after each of `epochs` (last.pt, not a selected checkpoint)."""
    path = run_dir / "early_test.json"
    done = json.loads(path.read_text()) if path.exists() else []
    for epoch in sorted(set(epochs) - {r["after_epochs"] for r in done}):
        train(
            dataclasses.replace(config, epochs=epoch),
            data_dir,
            run_dir,
            resume=(run_dir / CONFIG_FILE).exists(),
            echo=print,
            progress=False,
        )
        trained, data, model = load_run(run_dir, "last")
        done.append(
            {
                "after_epochs": epoch,
                "test": evaluate(model, data, "test", trained.eval_batch_size, trained.exclude_seen),
            }
        )
        path.write_text(json.dumps(done, indent=1) + "\n")
    return done


def dataset_record(data_dir: Path) -> dict:
    """What identifies a dataset other than Toys: its input files (name and SHA-256), fingerprint and counts."""
    manifest = json.loads((data_dir / "manifest.json").read_text())
    files = {
        kind: {"name": Path(f["path"]).name, "sha256": f["sha256"]} for kind, f in manifest["inputs"]["files"].items()
    }
    return {"files": files, "fingerprint": manifest["fingerprint"], "counts": manifest["counts"]}


def run_one(
    name: str,
    seed: int,
    preset: dict,
    data_dir: Path,
    run_dir: Path,
    summary_path: Path,
    extra: list[str],
    own_data: bool,
) -> None:
    train_overrides = preset["train"] + extra + [f"seed={seed}"]
    config = build_config(TrainConfig, overrides=train_overrides)
    start = time.perf_counter()
    early = test_after_epochs(config, data_dir, run_dir, preset["early"]) if preset["early"] else []
    results = train(
        config,
        data_dir,
        run_dir,
        resume=(run_dir / CONFIG_FILE).exists(),
        echo=print,
        progress=False,
        nproc=preset["nproc"],
    )
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = {
        "experiment": name,
        "seed": seed,
        "overrides": train_overrides,
        "preprocess_overrides": preset["preprocess"],
        **({"data": dataset_record(data_dir)} if own_data else {}),
        **({"inputs": {k: str(v.relative_to(ROOT)) for k, v in preset["inputs"].items()}} if preset["inputs"] else {}),
        **({"nproc": preset["nproc"]} if preset["nproc"] > 1 else {}),
        **results,
        "valid_ndcg10_per_epoch": [r["valid"]["ndcg@10"] for r in history],
        "epochs": [{"epoch": r["epoch"], "loss": r["loss"], "seconds": r["seconds"]} for r in history],
        "wall_minutes": round((time.perf_counter() - start) / 60, 2),
        # of the one process, or of the largest training process
        "peak_rss_gb": round(
            max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 2**20,
            2,
        ),
        **({"early_test": early} if early else {}),
    }
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=1) + "\n")
    popularity = summary_path.parent / POPULARITY[results["exclude_seen"]]
    if not popularity.exists():
        popularity.write_text(
            json.dumps({"experiment": "popularity", "test": results["popularity_test"]}, indent=1) + "\n"
        )


def missing_at_test(run_dir: Path, out: Path, rates: list[float]) -> dict:
    """NDCG@10 and HR@10 of a trained run with each modality missing for a share of the items, at test time only."""
    if not out.exists():
        config, data, model = load_run(run_dir)
        table = {}
        for modality in data.modalities:
            for rate in rates:
                dropped = dataclasses.replace(data)
                dropped.drop_codes(modality, rate, config.seed + 1)
                metrics = evaluate(model, dropped, "test", config.eval_batch_size, config.exclude_seen)
                table[f"{modality}@{rate}"] = {"ndcg@10": metrics["ndcg@10"], "hr@10": metrics["hr@10"]}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps({"run_config": dataclasses.asdict(config), "split": "test", "table": table}, indent=1) + "\n"
        )
    summary = json.loads(out.read_text())
    for cell, metrics in summary["table"].items():
        print(
            f"{out.name}: {cell} missing at test time: NDCG@10 {metrics['ndcg@10']:.4f}, HR@10 {metrics['hr@10']:.4f}"
        )
    return summary


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.4f}" + (f" ± {np.std(values, ddof=1):.4f}" if len(values) > 1 else "")


def table(results: Path, names: list[str]) -> str:
    """Mean ± std over seeds; s/epoch is the median over all epochs of all seeds; peak GB the lowest seed's."""
    head = [
        "experiment",
        "seeds",
        *COLUMNS,
        "valid ndcg@10",
        "valid hr@10",
        "best epoch",
        "s/epoch",
        "eval s",
        "minutes",
        "peak GB",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    early = []
    for name in names:
        runs = [json.loads(p.read_text()) for p in sorted(results.glob(f"{name}-s*.json"))]
        if not runs:
            continue
        epochs = [e["seconds"] for r in runs for e in r["epochs"]]
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    str(len(runs)),
                    *(mean_std([r["test"][c] for r in runs]) for c in COLUMNS),
                    *(f"{np.mean([r['valid'][c] for r in runs]):.4f}" for c in ("ndcg@10", "hr@10")),
                    f"{np.mean([r['best_epoch'] for r in runs]):.1f}",
                    f"{np.median(epochs):.1f}",
                    f"{np.mean([r['eval_seconds'] for r in runs]):.1f}",
                    " to ".join(dict.fromkeys(f"{f(r['wall_minutes'] for r in runs):.1f}" for f in (min, max))),
                    f"{min(r['peak_rss_gb'] for r in runs):.2f}",
                ]
            )
            + " |"
        )
        for r in (r for r in runs if "early_test" in r):
            rows = r["early_test"] + [{"after_epochs": f"best ({r['best_epoch']})", "test": r["test"]}]
            early += [
                f"| {name} s{r['seed']} | {e['after_epochs']} | "
                + " | ".join(f"{e['test'][c]:.4f}" for c in EARLY_COLUMNS)
                + " |"
                for e in rows
            ]
    for excluded in (True, False):
        if (results / POPULARITY[excluded]).exists():
            test = json.loads((results / POPULARITY[excluded]).read_text())["test"]
            lines.append(
                f"| popularity (seen items {'excluded' if excluded else 'kept'}) | - | "
                + " | ".join(f"{test[c]:.4f}" for c in COLUMNS)
                + " |"
                + " |" * 7
            )
    if early:
        lines += ["", "| run | after epochs | " + " | ".join(EARLY_COLUMNS) + " |", "|---|---|---|---|---|---|", *early]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="*", help="preset names (default: tabulate all)")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument(
        "--set",
        dest="extra",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="training setting added to every preset (recorded in the summaries)",
    )
    parser.add_argument("--missing-at-test", metavar="RATES", help="e.g. 0,0.2,0.5,1.0")
    parser.add_argument("--toys", type=Path, default=toys_dir())
    parser.add_argument(
        "--data",
        type=Path,
        help="a preprocessed dataset to use instead of Toys (the presets' preprocessing is then not applied)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench", help="where runs and data go")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    names = args.experiments or sorted(p.stem for p in PRESETS.glob("*.yaml"))
    try:
        presets = {name: load_preset(PRESETS / f"{name}.yaml") for name in names}
    except (OSError, UserError) as err:
        raise SystemExit(f"{err} (presets: {', '.join(sorted(p.stem for p in PRESETS.glob('*.yaml')))})")
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.data:
        data_split = json.loads((args.data / "manifest.json").read_text())["settings"]["split"]
        for preset in presets.values():
            preset["split"] = data_split

    def paths(name: str, seed: int) -> tuple[Path, Path]:
        split = presets[name]["split"]
        return args.out / split / f"{name}-s{seed}", args.results / split / f"{name}-s{seed}.json"

    todo = [(n, s) for n in args.experiments for s in seeds if not paths(n, s)[1].exists()]
    for name, seed in todo:
        if len(todo) > 1:  # one process per run: ru_maxrss is the peak of the whole process
            forward = [f"--{k}={getattr(args, k)}" for k in ("toys", "out", "results", "data") if getattr(args, k)]
            run = [sys.executable, __file__, name, f"--seeds={seed}", *forward, *(f"--set={e}" for e in args.extra)]
            if subprocess.run(run).returncode:
                raise SystemExit(
                    f"{name}, seed {seed}: the run stopped (its message is above); the runs after it did not start"
                )
            continue
        preset = presets[name]
        inputs = preset["inputs"]
        data_name = "-".join(["data", *preset["preprocess"], *(f"{k}={v.parent.name}" for k, v in inputs.items())])
        data_dir = args.data or prepare_toys(args.toys, args.out / data_name, preset["preprocess"], inputs)
        run_one(name, seed, preset, data_dir, *paths(name, seed), args.extra, own_data=args.data is not None)
    if args.missing_at_test:
        rates = [float(r) for r in args.missing_at_test.split(",")]
        for name in args.experiments:
            for seed in seeds:
                run_dir, summary = paths(name, seed)
                missing_at_test(run_dir, summary.parent / "missing" / f"{name}-s{seed}_test_only.json", rates)
    for split in sorted({p["split"] for p in presets.values()}):
        print(f"\n{split}:\n" + table(args.results / split, [n for n in names if presets[n]["split"] == split]))


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        raise SystemExit(str(err)) from None
