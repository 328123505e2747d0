"""The benchmark harness (benchmarks/run.py): every preset is valid settings (a typo would otherwise fail only
hours into a run), the `default` preset is what the code does without settings, every committed result
can be traced to the preset that reproduces it, and the table formats mean ± std over seeds."""

import importlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mmsr_dgl.config import build_config
from mmsr_dgl.data.preprocess import PreprocessConfig
from mmsr_dgl.errors import UserError
from mmsr_dgl.training import TrainConfig

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
run = importlib.import_module("run")
toys = importlib.import_module("toys")

PRESET_FILES = sorted(run.PRESETS.glob("*.yaml"))
RESULTS = BENCHMARKS / "results"
SUMMARY = re.compile(r"(?P<name>.+)-s(?P<seed>\d+)")
# results/<split>/NAME-s<seed>.json on Toys; results/<dataset>/<split>/NAME-s<seed>.json on other data (`--data`)
SUMMARIES = sorted(p for p in [*RESULTS.glob("*/*.json"), *RESULTS.glob("*/*/*.json")] if SUMMARY.fullmatch(p.stem))
TEST_ONLY = sorted(RESULTS.glob("*/missing/*.json"))
SPEED_ONLY = {"threads", "num_workers"}  # `--set` may change these for a run: the same experiment, other timings


def test_the_presets_and_summaries_are_found():
    """Guards the parametrised tests below against an empty (always passing) parameter list."""
    assert {"default", "paper", "sasrec_ss"} <= {p.stem for p in PRESET_FILES}
    assert {p.parent.name for p in SUMMARIES} == {"loo"} and any(p.parent.parent != RESULTS for p in SUMMARIES)


@pytest.mark.parametrize("path", PRESET_FILES, ids=lambda p: p.stem)
def test_preset_loads(path):
    preset = run.load_preset(path)  # raises on an unknown key or setting, or a bad value
    raw = yaml.safe_load(path.read_text())
    assert preset["split"] == raw.get("split", "loo")
    assert f"split={preset['split']}" in preset["preprocess"]
    config = build_config(TrainConfig, overrides=preset["train"])
    assert all(getattr(config, k) == v for k, v in raw["train"].items())


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("trian:\n  fusion: sync\n", "expected a mapping with keys"),  # unknown top-level key
        ("- fusion: sync\n", "expected a mapping with keys"),  # not a mapping
        ("train: [fusion]\n", "must be mappings of settings"),
        ("split: kfold\ntrain: {}\n", "`split` must be loo or ratio"),
        ("split: ratio\ntest_after_epochs: [0]\ntrain: {}\n", "`test_after_epochs` a list of epochs"),
        ("train:\n  fusoin: sync\n", "unknown setting"),  # a misspelt training setting
        ("train:\n  fusion: parallel\n", "is not one of"),  # a value the setting does not take
        ("preprocess:\n  n_code: 256\n", "unknown setting"),  # a misspelt preprocessing setting
        ("preprocess:\n  codes_per_item: 0\n", "codes_per_item"),
        ("inputs: [text.npy]\ntrain: {}\n", "`inputs` must map"),
        ("nproc: 0\ntrain: {}\n", "`nproc` must be a positive number"),
    ],
)
def test_invalid_preset_is_refused_naming_its_file(tmp_path, text, fragment):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=re.escape(str(path))) as err:
        run.load_preset(path)
    assert fragment in str(err.value)


def test_default_preset_is_the_code_defaults():
    """The `default` rows are what `mmsr-dgl preprocess` and `mmsr-dgl train` do without settings."""
    preset = run.load_preset(run.PRESETS / "default.yaml")
    assert build_config(TrainConfig, overrides=preset["train"]) == TrainConfig()
    assert build_config(PreprocessConfig, overrides=preset["preprocess"]) == PreprocessConfig()


def test_ablations_change_one_setting_of_their_base():
    """A preset whose header says 'Ablation of BASE.yaml' differs from BASE in one training setting only."""
    ablations = 0
    for path in PRESET_FILES:
        found = re.match(r"# Ablation of (\w+)\.yaml", path.read_text())
        if not found:
            continue
        ablations += 1
        base = yaml.safe_load((run.PRESETS / f"{found[1]}.yaml").read_text())
        raw = yaml.safe_load(path.read_text())
        assert raw["preprocess"] == base["preprocess"], path.name
        changed = {k for k in raw["train"].keys() | base["train"].keys() if raw["train"].get(k) != base["train"].get(k)}
        assert len(changed) == 1, (path.name, changed)
    assert ablations >= 8


@pytest.mark.parametrize("path", SUMMARIES, ids=lambda p: str(p.relative_to(RESULTS).with_suffix("")))
def test_summary_names_the_preset_that_reproduces_it(path):
    """`python benchmarks/run.py NAME --seeds SEED` reproduces the row: the preset exists, has the summary's
    split, and agrees with every setting the summary recorded."""
    name, seed = SUMMARY.fullmatch(path.stem)["name"], int(SUMMARY.fullmatch(path.stem)["seed"])
    preset_path = run.PRESETS / f"{name}.yaml"
    assert preset_path.is_file(), f"{path} has no preset {preset_path.name}"
    preset = run.load_preset(preset_path)
    assert preset["split"] == path.parent.name
    summary = json.loads(path.read_text())
    assert (summary["experiment"], summary["seed"]) == (name, seed)
    other_data = path.parent.parent != RESULTS  # trained with --data: the summary names the dataset's files
    assert ("data" in summary) == other_data
    assert not other_data or all(len(f["sha256"]) == 64 for f in summary["data"]["files"].values())
    ours = build_config(TrainConfig, overrides=preset["train"] + [f"seed={seed}"])
    recorded = build_config(TrainConfig, overrides=summary["overrides"])
    for key in {o.partition("=")[0] for o in summary["overrides"]} - SPEED_ONLY:
        if key == "exclude_seen" and ours.exclude_seen is None:  # the preset leaves the protocol to the data
            assert recorded.exclude_seen == summary["exclude_seen"], key
            continue
        assert getattr(ours, key) == getattr(recorded, key), key
    assert {k: str(v.relative_to(run.ROOT)) for k, v in preset["inputs"].items()} == summary.get("inputs", {})
    assert summary.get("nproc", 1) == preset["nproc"]
    ours = build_config(PreprocessConfig, overrides=preset["preprocess"])
    recorded = build_config(PreprocessConfig, overrides=summary.get("preprocess_overrides", []))
    for key in {o.partition("=")[0] for o in summary.get("preprocess_overrides", [])}:
        assert getattr(ours, key) == getattr(recorded, key), key


@pytest.mark.parametrize("path", TEST_ONLY, ids=lambda p: p.stem)
def test_missing_at_test_results_name_a_trained_run(path):
    found = re.fullmatch(r"(.+-s\d+)_test_only", path.stem)
    assert found, path.name
    assert (path.parent.parent / f"{found[1]}.json").is_file()


def fake_summary(name, seed, ndcg10, minutes, peak):
    test = {c: 0.1 for c in run.COLUMNS} | {"ndcg@10": ndcg10}
    return {
        "experiment": name,
        "seed": seed,
        "test": test,
        "valid": {"ndcg@10": 0.06, "hr@10": 0.12},
        "best_epoch": 10 + seed,
        "epochs": [{"epoch": 1, "loss": 7.0, "seconds": 50.0 + seed}],
        "eval_seconds": 4.0,
        "wall_minutes": minutes,
        "peak_rss_gb": peak,
    }


def test_table_gives_mean_and_std_over_seeds(tmp_path):
    for seed, ndcg, minutes, peak in ((1, 0.05, 20.0, 1.2), (2, 0.06, 30.0, 1.1)):
        (tmp_path / f"fake-s{seed}.json").write_text(json.dumps(fake_summary("fake", seed, ndcg, minutes, peak)))
    (tmp_path / "fake_other-s1.json").write_text(json.dumps(fake_summary("fake_other", 1, 0.9, 5.0, 0.5)))
    lines = run.table(tmp_path, ["fake", "absent"]).splitlines()
    assert lines[0].startswith("| experiment | seeds | hr@10 | ndcg@10 |")
    assert len(lines) == 3  # header, rule, one row: nothing for `absent`, `fake_other` is another experiment
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert len(cells) == len(lines[0].strip("|").split("|"))
    row = dict(zip([c.strip() for c in lines[0].strip("|").split("|")], cells))
    std = np.std([0.05, 0.06], ddof=1)
    assert row["experiment"] == "fake" and row["seeds"] == "2"
    assert row["ndcg@10"] == f"0.0550 ± {std:.4f}" == "0.0550 ± 0.0071"
    assert row["hr@10"] == "0.1000 ± 0.0000"
    assert (row["best epoch"], row["s/epoch"], row["minutes"], row["peak GB"]) == (
        "11.5",
        "51.5",
        "20.0 to 30.0",
        "1.10",
    )


def test_table_one_seed_has_no_std_and_adds_popularity(tmp_path):
    (tmp_path / "fake-s3.json").write_text(json.dumps(fake_summary("fake", 3, 0.05, 20.0, 1.0)))
    (tmp_path / "popularity.json").write_text(json.dumps({"test": {c: 0.01 for c in run.COLUMNS}}))
    (tmp_path / "popularity_seen_excluded.json").write_text(json.dumps({"test": {c: 0.02 for c in run.COLUMNS}}))
    lines = run.table(tmp_path, ["fake"]).splitlines()
    assert "| fake | 1 | 0.1000 | 0.0500 |" in lines[2] and "±" not in lines[2]
    assert "| 20.0 | 1.00 |" in lines[2]  # one seed: its minutes, not a range
    assert lines[3].startswith("| popularity (seen items excluded) | - | 0.0200 | 0.0200 |")
    assert lines[4].startswith("| popularity (seen items kept) | - | 0.0100 | 0.0100 |")
