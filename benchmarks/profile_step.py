"""Where the time of one training step goes: collation, each attention phase, readout, item table, scores and
loss, backward, optimizer, and the process's kernel time and page faults.

    python benchmarks/profile_step.py --data DIR [--threads N] [--steps 30] [--set key=value ...]

Runs `--steps` training steps (after 5 warm-up ones) of the model the settings describe on random training
batches of the dataset, timing each stage by wrapping the model's methods (CPU work runs synchronously, so wall
time is the stage's). Prints one table in milliseconds per step. Works on any checkout of this repository that
has the same method names (run it with PYTHONPATH set to the checkout to compare two).
"""

from __future__ import annotations

import argparse
import resource
import time
from collections import defaultdict
from contextlib import contextmanager

import numpy as np
import torch

import mmsr_dgl  # noqa: F401  (before torch: the package's process settings)
from mmsr_dgl.config import build_config
from mmsr_dgl.data import load_processed
from mmsr_dgl.nn import make_batch
from mmsr_dgl.training import TrainConfig
from mmsr_dgl.training.run import build_model

TOTALS: dict[str, float] = defaultdict(float)


@contextmanager
def timed(name: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        TOTALS[name] += time.perf_counter() - start


def wrap(obj, method: str, name: str) -> None:
    """Time every call of obj.method under `name` (outermost calls only, when it calls itself)."""
    inner = getattr(obj, method)
    depth = [0]

    def call(*args, **kwargs):
        depth[0] += 1
        try:
            if depth[0] > 1:
                return inner(*args, **kwargs)
            with timed(name):
                return inner(*args, **kwargs)
        finally:
            depth[0] -= 1

    setattr(obj, method, call)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a preprocessed dataset directory")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_processed(args.data)
    config = build_config(TrainConfig, overrides=args.overrides)
    torch.manual_seed(args.seed)
    model = build_model(config, data).train()
    try:
        from mmsr_dgl.training.optim import make_optimizer

        optimizer = make_optimizer(model, config.lr, config.weight_decay)
    except ImportError:  # a checkout from before the sparse optimizer
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    spec = model.graph_spec()
    codes, views = (None, set()) if spec is None else ({m: data.codes[m] for m in spec[0]}, spec[1])
    users, positions = data.splits["train"]
    targets = data.targets("train")
    rng = np.random.default_rng(args.seed)

    stages = [("item_table", "item table"), ("node_inputs", "node inputs"), ("readout", "readout")]
    for method, name in stages:
        if hasattr(model, method):
            wrap(model, method, name)
    for layer in getattr(model, "layers", []):
        wrap(layer, "homo_then_hetero", "order A (homo -> hetero)")
        wrap(layer, "hetero_then_homo", "order B (hetero -> homo)")
        wrap(layer, "update", "layer total")
    wrap(model, "calculate_loss", "forward total")

    def step() -> None:
        idx = rng.choice(len(users), size=min(config.batch_size, len(users)), replace=False)
        histories = data.inputs(users[idx], positions[idx])
        with timed("collation (make_batch)"):
            batch = make_batch(histories, data.max_len, codes, views, targets[idx])
        optimizer.zero_grad(set_to_none=True)
        loss = model.calculate_loss(batch)
        with timed("backward"):
            loss.backward()
        with timed("optimizer"):
            optimizer.step()

    for _ in range(5):
        step()
    TOTALS.clear()
    usage, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(args.steps):
        step()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)

    per = {k: v / args.steps * 1e3 for k, v in TOTALS.items()}
    phases = per.get("order A (homo -> hetero)", 0) + per.get("order B (hetero -> homo)", 0)
    derived = {
        "gate, norm and residual": per.get("layer total", 0) - phases,
        "scores and loss": per["forward total"]
        - sum(per.get(k, 0) for k in ("item table", "node inputs", "layer total", "readout")),
    }
    rows = [
        "collation (make_batch)",
        "item table",
        "node inputs",
        "order A (homo -> hetero)",
        "order B (hetero -> homo)",
        "gate, norm and residual",
        "readout",
        "scores and loss",
        "backward",
        "optimizer",
    ]
    values = {**per, **derived}
    print(
        f"model {config.model} {' '.join(args.overrides)}; {args.threads} thread(s), {args.steps} steps, "
        f"batch {config.batch_size}, {data.n_items - 1} items"
    )
    print(f"{'stage':28s} {'ms/step':>8s}")
    for row in rows:
        if row in values:
            print(f"{row:28s} {values[row]:8.1f}")
    print(f"{'step (wall)':28s} {wall / args.steps * 1e3:8.1f}")
    print(f"{'  CPU user':28s} {(after.ru_utime - usage.ru_utime) / args.steps * 1e3:8.1f}")
    print(f"{'  CPU system (kernel)':28s} {(after.ru_stime - usage.ru_stime) / args.steps * 1e3:8.1f}")
    print(f"{'  page faults per step':28s} {(after.ru_minflt - usage.ru_minflt) / args.steps:8.0f}")


if __name__ == "__main__":
    main()
