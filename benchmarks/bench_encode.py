"""Throughput of `mmsr-dgl encode` on Amazon Toys: item texts and the 400 raw images (run it alone on the machine).

python benchmarks/bench_encode.py                  # 2,000 texts, 400 images, 2 threads
python benchmarks/bench_encode.py --texts 11924 --threads 1
"""

from __future__ import annotations

import argparse
import resource
import tempfile
from pathlib import Path

import torch
from toys import toys_dir

from mmsr_dgl.encode import encode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toys", type=Path, default=toys_dir())
    parser.add_argument("--texts", type=int, default=2000, help="the first N items' texts")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = (args.toys / "items.tsv").read_text(encoding="utf-8").splitlines()
    stems = {p.stem for p in (args.toys / "images").iterdir()}
    with tempfile.TemporaryDirectory() as tmp:
        texts, images = Path(tmp) / "texts.tsv", Path(tmp) / "images.tsv"
        texts.write_text("\n".join(lines[: args.texts + 1]) + "\n", encoding="utf-8")
        images.write_text(
            "\n".join([lines[0]] + [x for x in lines[1:] if x.split("\t")[1] in stems]) + "\n", encoding="utf-8"
        )
        for modality, items, folder, column in (
            ("text", texts, None, "text"),
            ("image", images, args.toys / "images", None),
        ):
            summary = encode(
                items, Path(tmp) / modality, folder, column, batch_size=args.batch_size, log=lambda m: None
            )[modality]
            print(
                f"{modality}: {summary['encoded']} items encoded ({summary['skipped']} skipped) at "
                f"{summary['items_per_second']} items/s, {args.threads} threads, batch {args.batch_size}"
            )
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")


if __name__ == "__main__":
    main()
