"""Micro-benchmark of one training step: MSGraph batch collation and model forward + backward.

    python benchmarks/bench_model.py                      # the Toys default (datasets/amazon-toys*.yaml)
    python benchmarks/bench_model.py --set fusion=sync    # any training setting; --preprocess-set n_codes=64 ...
    python benchmarks/bench_model.py --config ''          # the code defaults instead of the Toys training file
    python benchmarks/bench_model.py --data DIR           # an already preprocessed dataset directory

Random training batches (user, target position) are drawn from the dataset's 'train' split. Reported: the
median time of `make_batch` (graph collation, the histories already sliced), the median time of
`calculate_loss` + `backward` after warm-up (the optimizer step runs but is not timed), and peak memory.
Targets (d=64, 1 layer, batch 256): collation < 10 ms, forward + backward < 150 ms.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from toys import ROOT, has_toys, prepare_toys, toys_dir

import mmsr_dgl  # noqa: F401  (before torch: it sets DGL's backend and the OpenMP defaults)
from mmsr_dgl.config import build_config
from mmsr_dgl.data import PreprocessConfig, load_processed, preprocess
from mmsr_dgl.data.preprocess import Inputs
from mmsr_dgl.nn import make_batch
from mmsr_dgl.training import TrainConfig
from mmsr_dgl.training.optim import make_optimizer
from mmsr_dgl.training.run import build_model

COLLATE_TARGET_MS, STEP_TARGET_MS = 10.0, 150.0
WARMUP = 3


def prepare(args: argparse.Namespace, scratch: Path) -> Path:
    """The dataset directory to benchmark: --data, else Toys preprocessed into --out, else synthetic."""
    if args.data:
        return Path(args.data)
    toys = toys_dir()
    start = time.perf_counter()
    if has_toys(toys):
        out = Path(args.out)
        print(f"dataset: Amazon Toys from {toys} (default settings {' '.join(args.preprocess_set)}), in {out}")
        prepare_toys(toys, out, args.preprocess_set)
    else:
        out = scratch / "data"
        print(
            f"NOTICE: Amazon Toys not found at {toys} (set MMSR_TOYS_DIR); benchmarking the synthetic default instead"
        )
        preprocess(
            build_config(PreprocessConfig, overrides=args.preprocess_set),
            Inputs(synthetic=True),
            out,
            log=lambda message: None,
        )
    print(f"preprocess (or check it is up to date): {time.perf_counter() - start:.1f} s")
    return out


def percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="a preprocessed dataset directory (default: preprocess Amazon Toys)")
    parser.add_argument(
        "--out",
        default=str(ROOT / "runs" / "bench" / "model-data"),
        help="where to preprocess Toys when --data is not given; reused when up to date",
    )
    parser.add_argument("--config", default="", help="training settings file (default: none, the code defaults)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a training setting (model, fusion, dim, n_layers, batch_size, readout, ...)",
    )
    parser.add_argument("--preprocess-set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--iters", type=int, default=20, help="timed iterations, after 3 warm-up ones")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="mmsr-bench-") as scratch:
        data = load_processed(prepare(args, Path(scratch)))
    users, positions = data.splits["train"]
    targets = data.targets("train")
    counts = data.manifest["counts"]
    print(
        f"data: {counts['users']} users, {counts['items']} items, {len(users)} training samples, "
        f"max_len {data.max_len}, modalities {data.modalities or 'none'}"
    )

    config = build_config(TrainConfig, file=args.config or None, overrides=args.overrides)
    torch.manual_seed(args.seed)
    model = build_model(config, data).train()
    codes, views = model.graph_inputs(data)  # None, set(): the model reads only the padded sequences
    optim = make_optimizer(model, config.lr, config.weight_decay)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"model: {config.model} {args.config or '(code defaults)'} {' '.join(args.overrides)}, "
        f"{n_params:,} parameters; "
        f"batch {config.batch_size}, {args.iters} timed iterations after {WARMUP} warm-up, "
        f"{torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.2f}"
    )

    rng = np.random.default_rng(args.seed)
    collate, forward, step, nodes, edges = [], [], [], [], []
    for it in range(WARMUP + args.iters):
        idx = rng.choice(len(users), size=min(config.batch_size, len(users)), replace=False)
        histories = data.inputs(users[idx], positions[idx])

        t0 = time.perf_counter()
        batch = make_batch(histories, data.max_len, codes, views, targets[idx])
        t1 = time.perf_counter()
        optim.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        loss = model.calculate_loss(batch)
        t3 = time.perf_counter()
        loss.backward()
        t4 = time.perf_counter()
        optim.step()
        if not torch.isfinite(loss):
            print(f"iteration {it}: loss is {loss.item()}", file=sys.stderr)
            return 1
        if it >= WARMUP:
            collate.append(t1 - t0)
            forward.append(t3 - t2)
            step.append(t4 - t2)
            nodes.append(0 if batch.graph is None else batch.graph.num_nodes())
            edges.append(0 if batch.graph is None else batch.graph.num_edges())

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    collate_ms, step_ms = percentile_ms(collate, 50), percentile_ms(step, 50)
    print(f"graph per batch: {np.mean(nodes):,.0f} nodes, {np.mean(edges):,.0f} edges (mean)")
    print(
        f"collation (make_batch):    median {collate_ms:7.2f} ms   p90 {percentile_ms(collate, 90):7.2f} ms   "
        f"target < {COLLATE_TARGET_MS:.0f} ms  {'OK' if collate_ms < COLLATE_TARGET_MS else 'MISSED'}"
    )
    print(
        f"forward + backward:        median {step_ms:7.2f} ms   p90 {percentile_ms(step, 90):7.2f} ms   "
        f"target < {STEP_TARGET_MS:.0f} ms  {'OK' if step_ms < STEP_TARGET_MS else 'MISSED'}"
    )
    print(f"  of which forward:        median {percentile_ms(forward, 50):7.2f} ms")
    print(f"peak memory (ru_maxrss):   {peak_mb:,.0f} MB" + ("" if args.data else " (process, incl. preprocessing)"))
    if (config.dim, config.n_layers, config.batch_size) != (64, 1, 256):
        print("note: the targets are stated for d=64, 1 layer, batch 256")
    missed = collate_ms >= COLLATE_TARGET_MS or step_ms >= STEP_TARGET_MS
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
