"""End-to-end smoke run on a real subset: the first 2,000 Amazon Toys users, one epoch of the default settings (with
32 codes for the subset); no accuracy asserted."""

import json

import numpy as np
from conftest import run_cli


def test_toys_subset_end_to_end(toys_dir, tmp_path):
    lines = (toys_dir / "sequences.txt").read_text().splitlines()[:2000]
    sequences = tmp_path / "sequences.txt"
    sequences.write_text("\n".join(lines) + "\n")
    data, run = tmp_path / "data", tmp_path / "run"
    result = run_cli(
        "preprocess",
        "--sequences",
        sequences,
        "--items",
        toys_dir / "items.tsv",
        "--features",
        f"image={toys_dir / 'image_clip_vitb32.npy'}",
        "--features",
        f"text={toys_dir / 'text_clip_vitb32.npy'}",
        "--out",
        data,
        "--set",
        "n_codes=32",
    )
    assert result.exit_code == 0, result.output
    result = run_cli("train", "--data", data, "--out", run, "--epochs", "1")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert "exclude_seen: true" in (run / "config.yaml").read_text()  # no Toys user buys an item twice
    assert set(printed) == {"model", "popularity"} and 0 <= printed["model"]["ndcg@10"] <= 1
    result = run_cli("evaluate", "--run", run, "--split", "test")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ndcg@10"] == printed["model"]["ndcg@10"]
    out = tmp_path / "top5.tsv"
    result = run_cli("recommend", "--run", run, "--k", "5", "--out", out)  # seen items left out: nobody repeats
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in out.read_text().splitlines()[1:]]
    manifest = json.loads((data / "manifest.json").read_text())
    assert len(rows) == 5 * manifest["counts"]["users"]
    asins = {line.split("\t")[1] for line in (toys_dir / "items.tsv").read_text().splitlines()[1:]}
    assert {item for _, _, item, _ in rows} <= asins  # raw ids shown as ASINs
    assert np.isfinite([float(score) for *_, score in rows]).all()
