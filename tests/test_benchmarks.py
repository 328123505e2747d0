"""The benchmark scripts' named experiments and trials are valid settings (a typo would fail only hours into a run)."""
import importlib
import sys
from pathlib import Path

import pytest

from mmsr_dgl.config import build_config
from mmsr_dgl.data.preprocess import PreprocessConfig
from mmsr_dgl.training import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
suite = importlib.import_module("suite")
tune = importlib.import_module("tune")


@pytest.mark.parametrize("name", sorted(suite.EXPERIMENTS))
def test_suite_experiment_builds(name):
    build_config(TrainConfig, overrides=suite.EXPERIMENTS[name])  # raises on an unknown setting or a bad value


@pytest.mark.parametrize("name", sorted(tune.TRIALS))
def test_tuning_trial_builds(name):
    train_overrides, data_overrides = tune.trial_settings(name)
    build_config(TrainConfig, overrides=train_overrides)
    build_config(PreprocessConfig, overrides=data_overrides)
