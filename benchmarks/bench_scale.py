"""How cost grows with data: preprocessing, one training epoch and one full evaluation on synthetic datasets of
growing size, each stage timed in its own process (its peak memory is its own).

    python benchmarks/bench_scale.py                       # 10k, 100k and 1M users; table and plot
    python benchmarks/bench_scale.py --users 10000 --steps 20
    python benchmarks/bench_scale.py --stages epoch --set readout=last+pool --set n_negatives=256

Datasets (cached under runs/bench/scale/): N users with 5 + Poisson(4) interactions each (Toys has 8.6 on
average), N / 2 items (at most 100k) drawn with Zipf-like popularity, 512-d image and 384-d text features with
cluster structure, written as the files `mmsr-dgl preprocess` reads (sequences.txt, image.npy, text.npy).
Stages, with the default settings throughout:
  preprocess  `preprocess` on those files (reading, 5-core, splits, PCA and k-means codes, writing);
  epoch       `--steps` training steps of the default MMSR after 3 warm-up steps, scaled to the epoch's batches;
  evaluate    full-ranking evaluation of the validation split (every user against every item), on at most
              `--eval-users` users, scaled to all of them.
`--set` changes training settings (epoch and evaluate). Peak memory is each stage process's maximum resident set
size (interpreter, torch and DGL included; `base` is that process's size after its imports). Rows go to
benchmarks/results/scale.json (scale-KEY=VALUE....json with `--set`); benchmarks/results/scale.png plots them all.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MAX_ITEMS = 100_000
DIMS = {"image": 512, "text": 384}


def rss_mib() -> float:
    """This process's resident set size now."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def make_dataset(users: int, out: Path, seed: int = 0) -> Path:
    """Write the raw files of a synthetic dataset with `users` users into `out` (kept when already there)."""
    if (out / "done").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = min(MAX_ITEMS, users // 2)
    lengths = 5 + rng.poisson(4, users)
    popularity = 1.0 / (np.arange(items) + 10.0) ** 0.8
    drawn = rng.choice(items, size=int(lengths.sum()), p=popularity / popularity.sum()) + 1
    names = np.arange(items + 1).astype(str)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    with (out / "sequences.txt").open("w") as handle:
        for u in range(users):
            handle.write(f"{u + 1} {' '.join(names[drawn[bounds[u] : bounds[u + 1]]])}\n")
    clusters = rng.integers(64, size=items)
    for modality, dim in DIMS.items():
        centres = rng.standard_normal((64, dim), dtype=np.float32)
        x = centres[clusters] + rng.standard_normal((items, dim), dtype=np.float32)
        np.save(out / f"{modality}.npy", x)
    (out / "done").touch()
    return out


def stage_preprocess(raw: Path, data_dir: Path, _: argparse.Namespace) -> dict:
    from mmsr_dgl.config import build_config
    from mmsr_dgl.data.preprocess import Inputs, PreprocessConfig, preprocess

    inputs = Inputs(sequences=raw / "sequences.txt", features={m: raw / f"{m}.npy" for m in DIMS})
    base = rss_mib()
    start = time.perf_counter()
    manifest = preprocess(build_config(PreprocessConfig), inputs, data_dir, log=lambda m: None, force=True)
    return {
        "seconds": time.perf_counter() - start,
        "base_mib": base,
        "counts": manifest["counts"],
        "stage_seconds": manifest["stage_seconds"],
    }


def _model(data_dir: Path, overrides: list[str]):
    import torch

    from mmsr_dgl.config import build_config
    from mmsr_dgl.training import TrainConfig
    from mmsr_dgl.training.run import build_model, load_data

    config = build_config(TrainConfig, overrides=overrides)
    torch.set_num_threads(config.threads or os.cpu_count())  # 0: every core (no other process runs here)
    torch.manual_seed(config.seed)
    data = load_data(config, data_dir)
    return config, data, build_model(config, data)


def stage_epoch(_: Path, data_dir: Path, args: argparse.Namespace) -> dict:
    from mmsr_dgl.training.loader import split_batches
    from mmsr_dgl.training.optim import make_optimizer

    base = rss_mib()
    config, data, model = _model(data_dir, args.overrides)
    optimizer = make_optimizer(model, config.lr, config.weight_decay)
    loader = split_batches(data, model, "train", config.batch_size, shuffle_seed=[config.seed, 0])
    model.train()
    warmup, steps, start = 3, min(args.steps, len(loader) - 3), 0.0
    for n, batch in enumerate(loader):
        if n == warmup:
            start = time.perf_counter()
        if n == warmup + steps:
            break
        loss = model.calculate_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    per_step = (time.perf_counter() - start) / steps
    return {"seconds": per_step * len(loader), "base_mib": base, "steps_timed": steps, "steps": len(loader)}


def stage_evaluate(_: Path, data_dir: Path, args: argparse.Namespace) -> dict:
    from mmsr_dgl.training.evaluate import target_ranks

    base = rss_mib()
    config, data, model = _model(data_dir, args.overrides)
    users, ends = data.splits["valid"]
    n = min(args.eval_users, len(users))
    data.splits = {**data.splits, "valid": (users[:n], ends[:n])}
    target_ranks(model, data, "valid", config.eval_batch_size, exclude_seen=True)  # warm-up: a first batch
    start = time.perf_counter()
    target_ranks(model, data, "valid", config.eval_batch_size, exclude_seen=True)
    return {
        "seconds": (time.perf_counter() - start) * len(users) / n,
        "base_mib": base,
        "users_timed": n,
        "users": len(users),
    }


STAGES = {"preprocess": stage_preprocess, "epoch": stage_epoch, "evaluate": stage_evaluate}


def run_stage(stage: str, raw: Path, data_dir: Path, args: argparse.Namespace) -> dict:
    """One stage in a fresh process: its figures, with that process's peak memory."""
    command = [
        sys.executable,
        __file__,
        "--stage",
        stage,
        "--raw",
        str(raw),
        "--data",
        str(data_dir),
        "--steps",
        str(args.steps),
        "--eval-users",
        str(args.eval_users),
        *(f"--set={o}" for o in args.overrides),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{stage} on {raw} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def plot(path: Path) -> None:
    """Time and peak memory of every stage in every results file beside `path`, against interactions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for results in sorted(path.parent.glob("scale*.json")):
        rows = json.loads(results.read_text())
        x = [r["interactions"] for r in rows]
        for stage in (s for s in STAGES if s in rows[0]):
            label = " ".join([stage, *rows[0]["settings"]])
            left.loglog(x, [r[stage]["seconds"] for r in rows], "o-", label=label)
            right.loglog(x, [r[stage]["peak_mib"] for r in rows], "o-", label=label)
            if stage == "epoch" and not rows[0]["settings"]:
                left.loglog(x, np.array(x) / x[0] * rows[0][stage]["seconds"], "k:", label="linear, from epoch")
    left.set(xlabel="interactions", ylabel="seconds (epoch and evaluate extrapolated)", title="time")
    right.set(xlabel="interactions", ylabel="peak RSS (MiB)", title="peak memory per process")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def table(rows: list[dict], stages: list[str]) -> str:
    lines = [
        "| users | items | interactions | " + " | ".join(f"{s} s | peak MiB" for s in stages) + " |",
        "|---:|---:|---:|" + "---:|---:|" * len(stages),
    ]
    for r in rows:
        cells = [f"{r['users']:,}", f"{r['items']:,}", f"{r['interactions']:,}"]
        for stage in stages:
            cells += [f"{r[stage]['seconds']:,.1f}", f"{r[stage]['peak_mib']:,.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", default="10000,100000,1000000", help="dataset sizes, comma-separated")
    parser.add_argument("--steps", type=int, default=30, help="training steps timed per dataset")
    parser.add_argument("--eval-users", type=int, default=20_000, help="users evaluated per dataset (at most)")
    parser.add_argument("--stages", default=",".join(STAGES), help="stages to run, comma-separated")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "scale")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--raw", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        result = STAGES[args.stage](args.raw, args.data, args)
        print(json.dumps({**result, "peak_mib": peak_mib()}))
        return
    stages = args.stages.split(",")
    if set(stages) - set(STAGES):
        raise SystemExit(f"--stages: expected some of {', '.join(STAGES)}")
    rows = []
    for users in map(int, args.users.split(",")):
        raw, data_dir = make_dataset(users, args.work / f"raw-{users}"), args.work / f"data-{users}"
        if "preprocess" not in stages and not (data_dir / "manifest.json").exists():
            raise SystemExit(f"{data_dir}: not preprocessed yet; run the preprocess stage first")
        row = {"users": users, "settings": args.overrides}
        for stage in stages:
            row[stage] = run_stage(stage, raw, data_dir, args)
            print(
                f"{users} users, {stage}: {row[stage]['seconds']:.1f} s, peak {row[stage]['peak_mib']:.0f} MiB "
                f"(base {row[stage]['base_mib']:.0f})",
                flush=True,
            )
        counts = json.loads((data_dir / "manifest.json").read_text())["counts"]
        row.update(items=counts["items"], interactions=counts["interactions"], users=counts["users"])
        rows.append(row)
    out = RESULTS / ("scale" + "".join(f"-{o}" for o in args.overrides) + ".json")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows, stages))
    plot(RESULTS / "scale.png")
    print(f"plot of every scale*.json: {RESULTS / 'scale.png'}")


if __name__ == "__main__":
    main()
