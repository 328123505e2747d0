"""Benchmark `mmsr-dgl preprocess` on Amazon Toys: wall time and peak memory against the targets.

    python benchmarks/bench_preprocess.py [TOYS_DIR]

TOYS_DIR defaults to $MMSR_TOYS_DIR, else `shared/data/amazon-toys` beside the repository. Settings: the
defaults. Preprocessing runs in-process into a temporary directory; peak memory is this process's maximum resident
set size, so it includes the interpreter and imported libraries. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

from toys import has_toys, toys_dir, toys_inputs

from mmsr_dgl.config import build_config
from mmsr_dgl.data.preprocess import PreprocessConfig, preprocess

TARGET_SECONDS = 30.0
TARGET_BYTES = 2 * 1024**3


def main(argv: list[str]) -> int:
    toys = Path(argv[0]) if argv else toys_dir()
    if not has_toys(toys):
        print(f"Amazon Toys data not found at {toys}; pass its directory as the first argument", file=sys.stderr)
        return 2
    inputs = toys_inputs(toys)
    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as tmp:
        start = time.perf_counter()
        manifest = preprocess(build_config(PreprocessConfig), inputs, Path(tmp) / "toys", log=print)
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    counts = manifest["counts"]
    ok = seconds < TARGET_SECONDS and peak < TARGET_BYTES
    print(
        f"preprocess Amazon Toys ({counts['users']} users, {counts['items']} items, {counts['interactions']} "
        f"interactions): {seconds:.1f} s (target < {TARGET_SECONDS:.0f} s), peak RSS {peak / 1024**2:.0f} MiB "
        f"(target < {TARGET_BYTES / 1024**3:.0f} GiB): {'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
