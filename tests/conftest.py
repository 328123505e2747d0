"""Shared fixtures: the Amazon Toys data (skipped where absent), a small synthetic dataset, and a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli.main import main

REPO = Path(__file__).resolve().parents[1]
TOYS_FILES = ("sequences.txt", "items.tsv", "image_clip_vitb32.npy", "text_clip_vitb32.npy")


def run_cli(*args) -> Result:
    """Invoke `mmsr-dgl ARGS...` in-process; `result.stdout` / `result.stderr` are separate, `output` has both."""
    return CliRunner().invoke(main, [str(a) for a in args])


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry under `root` (files by content, links by target, other non-folders by kind): equal snapshots
    taken before and after a command show that it changed nothing there."""
    found: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = f"link to {os.readlink(path)}"
            elif path.is_file():
                found[rel] = path.read_bytes()
            elif not path.is_dir():
                found[rel] = "special"
    return found


def toys_path() -> Path:
    """The Amazon Toys directory: $MMSR_TOYS_DIR, else `shared/data/amazon-toys` beside the repository."""
    return Path(os.environ.get("MMSR_TOYS_DIR") or REPO.parent / "shared/data/amazon-toys")


@pytest.fixture(scope="session")
def toys_dir() -> Path:
    path = toys_path()
    missing = [name for name in TOYS_FILES if not (path / name).is_file()]
    if missing:
        pytest.skip(
            f"Amazon Toys data not found at {path}: missing {', '.join(missing)} (set MMSR_TOYS_DIR to its directory)"
        )
    return path


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory) -> Path:
    """A small preprocessed synthetic dataset (about 300 users, 230 items, image and text codes), built once."""
    out = tmp_path_factory.mktemp("synthetic") / "data"
    result = run_cli("preprocess", "--synthetic", "--out", out, "--set", "synthetic.users=300", "--set", "n_codes=16")
    assert result.exit_code == 0, result.output
    return out
