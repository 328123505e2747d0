"""The settings reference in the docs names every setting the code has (and so goes stale visibly)."""

from pathlib import Path

import pytest

from mmsr_dgl.config import setting_types
from mmsr_dgl.data import PreprocessConfig
from mmsr_dgl.training import TrainConfig

REPO = Path(__file__).resolve().parents[1]
TRAIN_DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize(
    "config, docs",
    [(TrainConfig, TRAIN_DOCS), (PreprocessConfig, [REPO / "datasets/README.md"])],
    ids=["train", "preprocess"],
)
def test_every_setting_is_documented(config, docs):
    text = "".join(p.read_text() for p in docs)
    missing = [name for name in setting_types(config) if f"`{name}`" not in text]
    assert not missing, f"settings not named in {', '.join(p.name for p in docs)}: {missing}"
