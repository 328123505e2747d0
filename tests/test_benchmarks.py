"""The benchmark scripts: named experiments and trials are valid settings (a typo would fail only hours into a run),
and the ensemble evaluation agrees with the single-model one."""
import importlib
import sys
from pathlib import Path

import pytest
import torch

from mmsr_dgl.config import build_config
from mmsr_dgl.data.preprocess import PreprocessConfig
from mmsr_dgl.training import TrainConfig, evaluate, train
from mmsr_dgl.training.loader import split_batches
from mmsr_dgl.training.metrics import MetricAccumulator, pessimistic_rank
from mmsr_dgl.training.run import load_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
suite = importlib.import_module("suite")
tune = importlib.import_module("tune")
toys = importlib.import_module("toys")
ensemble = importlib.import_module("ensemble")
report = importlib.import_module("report")


@pytest.mark.parametrize("name", sorted(suite.EXPERIMENTS))
def test_suite_experiment_builds(name):
    build_config(TrainConfig, overrides=suite.EXPERIMENTS[name])  # raises on an unknown setting or a bad value
    build_config(PreprocessConfig, file=toys.SETTINGS, overrides=suite.preprocessing(name))


def test_suite_toys_default_is_the_dataset_files():
    """The suite's Toys-default experiment trains what datasets/amazon-toys*.yaml give a user."""
    name = suite.TOYS_DEFAULT
    assert (build_config(TrainConfig, overrides=suite.EXPERIMENTS[name])
            == build_config(TrainConfig, file=toys.TRAIN_SETTINGS))
    assert (build_config(PreprocessConfig, file=toys.SETTINGS, overrides=suite.preprocessing(name))
            == build_config(PreprocessConfig, file=toys.SETTINGS))
    earlier = build_config(PreprocessConfig, file=toys.SETTINGS, overrides=suite.preprocessing("async"))
    assert (earlier.n_codes, earlier.codes_per_item) == (256, 3)  # the ablations' codes, whatever the file says
    assert report.TOYS_DEFAULT == name and set(report.PLOTTED) <= set(suite.EXPERIMENTS)


def test_suite_preprocessing_names_experiments():
    assert set(suite.PREPROCESSING) <= set(suite.EXPERIMENTS)


@pytest.mark.parametrize("name", sorted(tune.TRIALS))
def test_tuning_trial_builds(name):
    train_overrides, data_overrides = tune.trial_settings(name)
    build_config(TrainConfig, overrides=train_overrides)
    build_config(PreprocessConfig, overrides=data_overrides)


def test_ensemble_members_and_self_ensemble_match_evaluate(synthetic_data_dir, tmp_path):
    for name, extra in (("last", {"readout": "last"}), ("mixture", {"readout": "mixture", "seed": 2})):
        config = TrainConfig(dim=16, epochs=1, batch_size=128, **extra)
        train(config, synthetic_data_dir, tmp_path / name, echo=lambda m: None, progress=False)
    alone, log_probs = {}, []
    for name in ("last", "mixture"):
        _, data, model = load_run(tmp_path / name)
        alone[name] = evaluate(model, data, "test")
        batch = next(iter(split_batches(data, model, "test", batch_size=10_000)))  # the whole split at once
        with torch.no_grad():
            log_probs.append(model.full_sort_predict(batch).log_softmax(-1))
    by_hand = MetricAccumulator()
    by_hand.add(pessimistic_rank((log_probs[0] + log_probs[1]) / 2, batch.targets))
    assert alone["last"] != alone["mixture"]
    own, mean = ensemble.evaluate_ensemble([tmp_path / "last", tmp_path / "mixture"], "test")
    assert own == [pytest.approx(alone["last"]), pytest.approx(alone["mixture"])]
    assert mean == pytest.approx(by_hand.result())
    _, twice = ensemble.evaluate_ensemble([tmp_path / "mixture", tmp_path / "mixture"], "test")
    assert twice == pytest.approx(alone["mixture"])
