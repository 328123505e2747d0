"""Where the benchmarks find Amazon Toys, and its preprocessing inputs."""

from __future__ import annotations

import os
from pathlib import Path

from mmsr_dgl.data.preprocess import Inputs

ROOT = Path(__file__).resolve().parents[1]
FILES = ("sequences.txt", "items.tsv", "image_clip_vitb32.npy", "text_clip_vitb32.npy")


def toys_dir() -> Path:
    """$MMSR_TOYS_DIR, else `shared/data/amazon-toys` beside the repository."""
    return Path(os.environ.get("MMSR_TOYS_DIR") or ROOT.parent / "shared" / "data" / "amazon-toys")


def has_toys(toys: Path) -> bool:
    return all((toys / name).is_file() for name in FILES)


def toys_inputs(toys: Path, replaced: dict[str, Path] | None = None) -> Inputs:
    """Toys' input files, with `replaced` ones (`items`, or a modality -> its feature matrix) swapped in."""
    replaced = dict(replaced or {})
    items = replaced.pop("items", toys / "items.tsv")
    features = {"image": toys / "image_clip_vitb32.npy", "text": toys / "text_clip_vitb32.npy"} | replaced
    return Inputs(sequences=toys / "sequences.txt", items=items, features=features)


def prepare_toys(toys: Path, data_dir: Path, overrides: list[str], replaced: dict[str, Path] | None = None) -> Path:
    """Preprocess Toys (with `replaced` input files) with the default settings and these overrides into `data_dir`
    (does nothing when it is up to date)."""
    from mmsr_dgl.config import build_config
    from mmsr_dgl.data.preprocess import PreprocessConfig, preprocess

    config = build_config(PreprocessConfig, overrides=overrides)
    # runs started side by side share one dataset: the second waits for the first to build it
    preprocess(config, toys_inputs(toys, replaced), data_dir, log=lambda m: None, wait=True)
    return data_dir
