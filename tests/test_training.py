"""Training, evaluation, checkpoints, resume and recommend."""

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli.main import main
from mmsr_dgl.data import load_processed
from mmsr_dgl.data.preprocess import Inputs, PreprocessConfig, describe_file, preprocess
from mmsr_dgl.data.synthetic import SyntheticSpec
from mmsr_dgl.errors import UserError
from mmsr_dgl.training import TrainConfig, evaluate_scores, train
from mmsr_dgl.training.metrics import mask_seen, metric_sums, pessimistic_rank
from mmsr_dgl.training.run import load_checkpoint, load_run

TINY = dict(synthetic=SyntheticSpec(users=400, items=150, groups=8), n_codes=16, pca_dim=16)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "data"
    preprocess(PreprocessConfig(**TINY), Inputs(synthetic=True), out, log=lambda m: None)
    return out


def tiny_config(**overrides) -> TrainConfig:
    return TrainConfig(**{"dim": 32, "epochs": 3, "patience": 3, "batch_size": 128, "lr": 3e-3, **overrides})


def assert_named_error(result, message: str, exit_code: int = 2) -> None:
    """A CLI call that failed with the user's error `message` and no traceback."""
    assert result.exit_code == exit_code and message in result.output and "Traceback" not in result.output, (
        result.output
    )


def run_train(data: Path, out: Path, **overrides) -> dict:
    return train(tiny_config(**overrides), data, out, echo=lambda m: None, progress=False)


# ---- metrics -------------------------------------------------------------------------------------------------


def test_pessimistic_rank_and_metrics_by_hand():
    inf = float("-inf")
    scores = torch.tensor(
        [
            [inf, 0.9, 0.5, 0.5, 0.1],  # target 2 ties with item 3: ranked below it -> rank 2
            [inf, 0.9, 0.5, 0.5, 0.1],  # target 1: best -> rank 0
            [inf, 0.9, 0.5, 0.5, 0.1],
        ]
    )  # target 4: last of 4 real items -> rank 3
    ranks = pessimistic_rank(scores, torch.tensor([2, 1, 4]))
    assert ranks.tolist() == [2, 0, 3]
    sums = metric_sums(ranks, ks=(1, 3, 20))
    assert sums["hr@1"] == 1 and sums["hr@3"] == 2 and sums["hr@20"] == 3  # K beyond n_items: all hit
    assert sums["ndcg@3"] == pytest.approx(1.0 + 1 / np.log2(4))
    assert sums["mrr@3"] == pytest.approx(1.0 + 1 / 3)
    assert sums["ndcg@20"] == pytest.approx(1.0 + 1 / np.log2(4) + 1 / np.log2(5))
    assert sums["mrr@20"] == pytest.approx(1.0 + 1 / 3 + 1 / 4)


def test_mask_seen_keeps_the_target():
    scores = torch.arange(6, dtype=torch.float32)[None].repeat(2, 1)
    seq = torch.tensor([[0, 2, 3], [0, 0, 5]])
    masked = mask_seen(scores, seq, torch.tensor([3, 1]))
    assert masked[0].tolist() == [float("-inf"), 1, float("-inf"), 3, 4, 5]
    assert masked[1].tolist() == [float("-inf"), 1, 2, 3, 4, float("-inf")]


def test_nan_scores_rank_last():
    nan, inf = float("nan"), float("-inf")
    scores = torch.tensor([[inf, 1.0, nan, 0.5], [inf, nan, nan, nan]])
    assert pessimistic_rank(scores, torch.tensor([3, 2])).tolist() == [2, 3]


def test_constant_score_model_gets_nothing_for_free(tiny_data):
    data = load_processed(tiny_data)
    metrics = evaluate_scores(np.ones(data.n_items), data, "test")
    assert metrics["hr@20"] == 0.0 and metrics["ndcg@10"] == 0.0  # at or below the K / n_items of chance
    popularity = evaluate_scores(data.train_popularity(), data, "test")
    assert popularity["hr@10"] > 10 / (data.n_items - 1)


# ---- training ------------------------------------------------------------------------------------------------


def test_training_learns_and_beats_popularity(tiny_data, tmp_path):
    results = run_train(tiny_data, tmp_path / "run", epochs=5, patience=5)
    # 1.22 to 1.28 times popularity's over training seeds; an untrained model is far below it
    assert results["test"]["ndcg@10"] > 1.15 * results["popularity_test"]["ndcg@10"]
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5]
    assert history[-1]["loss"] < history[0]["loss"]
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "dim: 32" in saved and "train.log" in os.listdir(tmp_path / "run")


def test_sasrec_trains_through_the_same_harness(tiny_data, tmp_path):
    results = run_train(
        tiny_data,
        tmp_path / "run",
        model="sasrec",
        n_layers=2,
        epochs=3,
        dropout=0.1,
        attn_dropout=0.1,
        train_on="positions",
    )
    assert results["test"]["ndcg@10"] > results["popularity_test"]["ndcg@10"]
    _, _, model = load_run(tmp_path / "run")
    assert type(model).__name__ == "SASRec"


def test_missing_modality_setting_drops_codes(tiny_data, tmp_path):
    from mmsr_dgl.training.run import load_data

    full = load_data(tiny_config(), tiny_data)
    half = load_data(tiny_config(missing_modality="image", missing_rate=0.5), tiny_data)
    lost = (full.codes["image"][:, 0] >= 0) & (half.codes["image"][:, 0] < 0)
    assert 0.35 < lost.mean() < 0.65
    assert np.array_equal(full.codes["text"], half.codes["text"])
    none = load_data(tiny_config(missing_modality="image", missing_rate=1.0), tiny_data)
    assert (none.codes["image"] < 0).all()
    assert np.array_equal(half.features["image"][lost], np.zeros_like(half.features["image"][lost]))
    assert (np.abs(half.features["image"][half.codes["image"][:, 0] >= 0]).sum(1) > 0).all()
    assert np.array_equal(full.features["text"], half.features["text"])
    results = run_train(tiny_data, tmp_path / "run", epochs=1, missing_modality="image", missing_rate=1.0)
    assert 0 < results["test"]["hr@20"] <= 1


def test_evaluation_reads_item_codes_from_the_evaluated_data(tiny_data, tmp_path):
    import dataclasses

    from mmsr_dgl.training import evaluate

    run_train(tiny_data, tmp_path / "run", epochs=1, item_repr="id+codes")
    _, data, model = load_run(tmp_path / "run")
    full = evaluate(model, data, "valid")
    dropped = dataclasses.replace(data)
    dropped.drop_codes("text", 1.0, seed=0)
    missing = evaluate(model, dropped, "valid")
    assert torch.equal(model.item_codes_text, torch.full_like(model.item_codes_text, -1))
    assert (data.codes["text"] >= 0).any() and np.abs(data.features["text"]).sum() > 0  # the original is intact
    assert missing != full
    assert evaluate(model, data, "valid") == full


def test_same_seed_same_metrics(tiny_data, tmp_path):
    a = run_train(tiny_data, tmp_path / "a", epochs=2)
    b = run_train(tiny_data, tmp_path / "b", epochs=2)
    c = run_train(tiny_data, tmp_path / "c", epochs=2, seed=7)
    assert a["test"] == b["test"] and a["valid"] == b["valid"]
    assert a["test"] != c["test"]


def test_early_stopping_uses_validation_only(tiny_data, tmp_path, monkeypatch):
    from mmsr_dgl.training import trainer

    calls = []
    real = trainer.evaluate
    monkeypatch.setattr(
        trainer,
        "evaluate",
        lambda model, data, split, *a, **k: (calls.append(split), real(model, data, split, *a, **k))[1],
    )
    results = run_train(tiny_data, tmp_path / "run", epochs=30, patience=1, lr=0.05)
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert results["stopped_early"] and len(history) < 30
    scores = [r["valid"]["ndcg@10"] for r in history]
    assert results["best_epoch"] == int(np.argmax(scores)) + 1
    assert calls == ["valid"] * len(history) + ["test"]  # the test split is looked at once, at the very end


def test_resume_after_kill_matches_a_straight_run(tiny_data, tmp_path):
    straight = run_train(tiny_data, tmp_path / "straight", epochs=4, patience=4)
    run_dir = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "cli.main",
        "train",
        "--data",
        str(tiny_data),
        "--out",
        str(run_dir),
        "--set",
        "dim=32",
        "--set",
        "patience=4",
        "--set",
        "batch_size=128",
        "--set",
        "lr=0.003",
        "--epochs",
        "4",
        "--no-progress",
    ]
    proc = subprocess.Popen(args, cwd=Path(__file__).parents[1], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "results.json").exists(), "the run finished before it could be killed"
    resumed = train(
        tiny_config(epochs=4, patience=4), tiny_data, run_dir, resume=True, echo=lambda m: None, progress=False
    )
    assert resumed["test"] == straight["test"]
    assert resumed["valid"] == straight["valid"]


def test_resume_before_the_first_checkpoint_starts_again(tiny_data, tmp_path):
    straight = run_train(tiny_data, tmp_path / "straight", epochs=2)
    run_dir = tmp_path / "early"
    run_train(tiny_data, run_dir, epochs=2)
    for name in ("last.pt", "best.pt", "results.json", "metrics.jsonl"):
        (run_dir / name).unlink()  # as if killed during epoch 1: only config.yaml and train.log exist
    resumed = train(tiny_config(epochs=2), tiny_data, run_dir, resume=True, echo=lambda m: None, progress=False)
    assert resumed["test"] == straight["test"]


def test_resume_with_more_epochs_and_other_threads_recomputes_the_results(tiny_data, tmp_path):
    first = run_train(tiny_data, tmp_path / "run", epochs=1)
    assert TrainConfig().threads != 1
    more = train(
        tiny_config(epochs=3, threads=1), tiny_data, tmp_path / "run", resume=True, echo=lambda m: None, progress=False
    )
    assert first["epochs_run"] == 1 and more["epochs_run"] == 3
    assert json.loads((tmp_path / "run" / "results.json").read_text())["epochs_run"] == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "nowhere"], "nowhere"),
        (["--device", "cuda"], "--device cuda"),
        (["--set", "modalities=[video]"], "setting 'modalities'"),
        (["--set", "missing_modality=video"], "modality 'video'"),
        (["--set", "seed=-1"], "setting 'seed'"),
        (["--set", "dim=100000000"], "GiB"),
    ],
)
def test_overwrite_keeps_the_old_run_until_everything_is_checked(tiny_data, tmp_path, args, message):
    run = tmp_path / "run"
    run_train(tiny_data, run, epochs=1)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    args = [str(tmp_path / a) if a == "nowhere" else a for a in args]
    result = CliRunner().invoke(
        main, ["train", "--data", str(tiny_data), "--out", str(run), "--overwrite", "--epochs", "1", *args]
    )
    assert_named_error(result, message)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_overwrite_replaces_the_run_new_files_first(tiny_data, tmp_path):
    run = tmp_path / "run"
    run_train(tiny_data, run, epochs=2)
    first = (run / "metrics.jsonl").read_text().splitlines()
    result = CliRunner().invoke(
        main, ["train", "--data", str(tiny_data), "--out", str(run), "--overwrite", "--epochs", "1", "--set", "dim=16"]
    )
    assert result.exit_code == 0, result.output
    assert len(first) == 2 and len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert load_run(run)[0].dim == 16 and (run / "train.log").read_text().count("training mmsr") == 1


def test_train_refuses_a_dataset_folder_as_out_and_data_without_training_samples(tiny_data, tmp_path):
    with pytest.raises(UserError, match="is a dataset folder"):
        run_train(tiny_data, tiny_data, epochs=1)
    empty = tmp_path / "empty"
    shutil.copytree(tiny_data, empty)
    with np.load(empty / "data.npz") as arrays:
        arrays = dict(arrays)
    arrays["train_user"], arrays["train_pos"] = arrays["train_user"][:0], arrays["train_pos"][:0]
    np.savez(empty / "data.npz", **arrays)
    manifest = json.loads((empty / "manifest.json").read_text())
    manifest["data_file"] = describe_file(empty / "data.npz")  # a dataset that says it has no training samples
    (empty / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="no training samples"):
        run_train(empty, tmp_path / "run", epochs=1)
    assert not (tmp_path / "run").exists()


def test_resume_refuses_changed_settings(tiny_data, tmp_path):
    run_train(tiny_data, tmp_path / "run", epochs=1)
    with pytest.raises(UserError, match="differ.*dim"):
        train(
            tiny_config(epochs=2, dim=16), tiny_data, tmp_path / "run", resume=True, echo=lambda m: None, progress=False
        )
    with pytest.raises(UserError, match="already holds a run"):
        run_train(tiny_data, tmp_path / "run", epochs=1)


# ---- checkpoints ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tiny_data, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    run_train(tiny_data, run_dir, epochs=2)
    return run_dir


def test_checkpoints_load_with_weights_only(trained_run):
    for name in ("best.pt", "last.pt"):
        state = torch.load(trained_run / name, weights_only=True)
        assert "model" in state and state["format"] == 2
    last = torch.load(trained_run / "last.pt", weights_only=True)
    assert "optimizer" in last and last["optimizer"]["param_groups"][0]["lr"] == tiny_config().lr  # constant lr


def test_corrupted_and_mismatched_checkpoints_give_clear_errors(trained_run, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes((trained_run / "best.pt").read_bytes()[:500])
    with pytest.raises(UserError, match="broken.pt: not a readable mmsr-dgl checkpoint"):
        load_checkpoint(broken)
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": 2, "model": object()}, foreign)  # loads only with weights_only=False: never advised
    with pytest.raises(UserError, match="foreign.pt: not a readable mmsr-dgl checkpoint") as err:
        load_checkpoint(foreign)
    assert "weights_only" not in str(err.value)
    copy = tmp_path / "copy"
    copy.mkdir()
    config = (trained_run / "config.yaml").read_text().replace("dim: 32", "dim: 16")
    (copy / "config.yaml").write_text(config)
    (copy / "best.pt").write_bytes((trained_run / "best.pt").read_bytes())
    result = CliRunner().invoke(main, ["evaluate", "--run", str(copy)])
    assert_named_error(result, "settings dim differ from those best.pt was trained with (dim=32)")


def test_evaluate_cli_matches_training_validation(trained_run):
    result = CliRunner().invoke(main, ["evaluate", "--run", str(trained_run), "--split", "valid"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    valid = json.loads((trained_run / "results.json").read_text())["valid"]
    assert metrics["ndcg@10"] == pytest.approx(valid["ndcg@10"])
    assert {f"{m}@{k}" for m in ("hr", "ndcg", "mrr") for k in (5, 10, 20)} <= set(metrics)


def test_large_catalogues_are_scored_in_smaller_batches_with_the_same_ranks(trained_run, monkeypatch):
    evaluation = importlib.import_module("mmsr_dgl.training.evaluate")  # the package exports its function
    _, data, model = load_run(trained_run)
    whole = evaluation.target_ranks(model, data, "test", exclude_seen=True)
    popular = evaluation.fixed_ranking_ranks(data.train_popularity(), data, "test", exclude_seen=True)
    monkeypatch.setattr(evaluation, "SCORES_AT_ONCE", 7 * data.n_items)  # 7 users' scores at a time
    assert evaluation.scoring_batch_size(1024, data.n_items) == 7
    assert torch.equal(evaluation.target_ranks(model, data, "test", exclude_seen=True), whole)
    assert torch.equal(
        evaluation.fixed_ranking_ranks(data.train_popularity(), data, "test", exclude_seen=True), popular
    )


def test_evaluate_ratio_split(tmp_path):
    data = tmp_path / "ratio"
    preprocess(PreprocessConfig(**TINY, split="ratio"), Inputs(synthetic=True), data, log=lambda m: None)
    results = run_train(data, tmp_path / "run", epochs=1)
    assert 0 < results["test"]["hr@20"] <= 1


# ---- recommend -----------------------------------------------------------------------------------------------


def test_recommend_writes_top_k_without_seen_items(trained_run, tmp_path):
    out = tmp_path / "recs.tsv"
    result = CliRunner().invoke(
        main, ["recommend", "--run", str(trained_run), "--k", "7", "--out", str(out), "--exclude-seen"]
    )
    assert result.exit_code == 0, result.output
    _, data, _ = load_run(trained_run)
    rows = [line.split("\t") for line in out.read_text().splitlines()[1:]]
    assert len(rows) == 7 * len(data.user_ids)
    asin_to_id = {a: i for i, a in enumerate(data.item_asin.tolist())}
    by_user = {}
    for user, rank, item, score in rows:
        by_user.setdefault(user, []).append((int(rank), asin_to_id[item], float(score)))
    for u, user in enumerate(data.user_ids[:50]):
        recs = by_user[user]
        assert [r for r, _, _ in recs] == list(range(1, 8))
        assert [s for _, _, s in recs] == sorted((s for _, _, s in recs), reverse=True)
        assert not set(i for _, i, _ in recs) & set(data.history(u).tolist())
        assert 0 not in {i for _, i, _ in recs}


def test_seen_items_are_excluded_by_default_only_where_nobody_repeats_an_item(tiny_data, tmp_path):
    assert load_processed(tiny_data).repeats_items()  # the synthetic users buy some items again
    assert run_train(tiny_data, tmp_path / "again", epochs=1)["exclude_seen"] is False
    rng = np.random.default_rng(0)
    sequences = tmp_path / "sequences.txt"
    sequences.write_text(
        "".join(f"{u} {' '.join(map(str, rng.choice(np.arange(1, 30), 6, replace=False)))}\n" for u in range(60))
    )
    once = tmp_path / "once"
    preprocess(PreprocessConfig(k_core=0, n_codes=4, pca_dim=4), Inputs(sequences=sequences), once, log=lambda m: None)
    assert not load_processed(once).repeats_items()
    assert run_train(once, tmp_path / "excluded", epochs=1)["exclude_seen"] is True
    assert run_train(once, tmp_path / "kept", epochs=1, exclude_seen=False)["exclude_seen"] is False


def test_exclude_seen_covers_histories_longer_than_max_len(tmp_path):
    data_dir = tmp_path / "short"
    preprocess(PreprocessConfig(**TINY, max_len=3), Inputs(synthetic=True), data_dir, log=lambda m: None)
    run_train(data_dir, tmp_path / "run", epochs=1)
    out = tmp_path / "recs.jsonl"
    result = CliRunner().invoke(
        main, ["recommend", "--run", str(tmp_path / "run"), "--k", "20", "--out", str(out), "--exclude-seen"]
    )
    assert result.exit_code == 0, result.output
    _, data, _ = load_run(tmp_path / "run")
    asin_to_id = {a: i for i, a in enumerate(data.item_asin.tolist())}
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert max(len(data.history(u)) for u in range(len(lines))) > 3 * data.max_len
    for u, line in enumerate(lines):
        assert not {asin_to_id[a] for a in line["items"]} & set(data.history(u).tolist())


def test_recommend_jsonl_for_listed_users(trained_run, tmp_path):
    users = tmp_path / "users.txt"
    users.write_text("3\n1\n")
    out = tmp_path / "recs.jsonl"
    result = CliRunner().invoke(
        main, ["recommend", "--run", str(trained_run), "--k", "4", "--out", str(out), "--users", str(users)]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["user"] for line in lines] == ["3", "1"] and all(len(line["items"]) == 4 for line in lines)
    users.write_text("1\nnobody\n")
    result = CliRunner().invoke(
        main, ["recommend", "--run", str(trained_run), "--out", str(out), "--users", str(users)]
    )
    assert result.exit_code != 0 and "line 2: unknown user 'nobody'" in result.output


# ---- CLI errors ----------------------------------------------------------------------------------------------


def test_model_specific_settings_default_to_the_chosen_model():
    from mmsr_dgl.config import build_config

    sasrec = build_config(TrainConfig, overrides=["model=sasrec"])
    assert (sasrec.n_layers, sasrec.n_heads, sasrec.dropout, sasrec.attn_dropout, sasrec.temperature) == (
        1,
        1,
        0.2,
        0.2,
        0.0,
    )
    assert (sasrec.n_negatives, sasrec.train_on, sasrec.batch_size) == (0, "sequences", 128)
    mmsr = build_config(TrainConfig)
    assert (mmsr.n_layers, mmsr.dropout, mmsr.attn_dropout, mmsr.temperature) == (1, 0.2, 0.1, 0.1)
    assert (mmsr.n_negatives, mmsr.train_on, mmsr.batch_size) == (0, "positions", 256)
    assert build_config(TrainConfig, overrides=["model=sasrec", "dropout=0.3"]).dropout == 0.3


def test_scientific_notation_settings_parse():
    from mmsr_dgl.config import build_config

    assert build_config(TrainConfig, overrides=["lr=1e-3", "weight_decay=5E-5"]).lr == 0.001


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "dimm=3"], "unknown setting"),
        (["--set", "dim=abc"], "expected an integer"),
        (["--set", "fusion=magic"], "is not one of"),
        (["--set", "lr=abc"], "expected a finite number"),
        (["--set", "pool_weight=0.5"], "unknown setting"),
        (["--set", "lr_schedule=cosine"], "unknown setting"),
        (["--set", "code_init=random"], "unknown setting"),
        (["--set", "readout=ensemble"], "is not one of"),
        (["--set", "readout=mixture_gated"], "is not one of"),
        (["--device", "cuda"], "--device cuda"),
    ],
)
def test_train_cli_rejects_bad_settings(tiny_data, tmp_path, args, message):
    result = CliRunner().invoke(main, ["train", "--data", str(tiny_data), "--out", str(tmp_path / "r"), *args])
    assert_named_error(result, message)


def copy_run(trained_run: Path, to: Path, config_edit=None, checkpoint_edit=None) -> Path:
    """A copy of `trained_run` (config.yaml and best.pt), with its YAML payload or checkpoint state edited."""
    import yaml

    to.mkdir()
    payload = yaml.safe_load((trained_run / "config.yaml").read_text())
    if config_edit:
        config_edit(payload)
    (to / "config.yaml").write_text(yaml.safe_dump(payload))
    state = torch.load(trained_run / "best.pt", weights_only=True)
    if checkpoint_edit:
        checkpoint_edit(state)
    torch.save(state, to / "best.pt")
    return to


def test_the_copy_of_a_run_loads_unedited(trained_run, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--run", str(copy_run(trained_run, tmp_path / "copy"))])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "edit, fragments",
    [
        (lambda c: c.update(pool_weight=0.5), ["unknown setting 'pool_weight'"]),
        (
            lambda c: c.update(lr_schedule="constant", code_init="centroids"),
            ["unknown setting 'code_init', 'lr_schedule'"],
        ),
        (lambda c: c.pop("item_repr"), ["missing setting 'item_repr'"]),
        (lambda c: c.update(readout="ensemble"), ["setting 'readout'", "'ensemble' is not one of"]),
    ],
)
def test_a_run_of_an_earlier_version_is_refused_clearly(trained_run, tmp_path, edit, fragments):
    run_dir = copy_run(trained_run, tmp_path / "old", config_edit=lambda payload: edit(payload["config"]))
    with pytest.raises(UserError) as err:
        load_run(run_dir)
    message = str(err.value)
    assert str(run_dir / "config.yaml") in message and "made by an earlier version of mmsr-dgl, train again" in message
    for fragment in fragments:
        assert fragment in message
    result = CliRunner().invoke(main, ["evaluate", "--run", str(run_dir)])
    assert result.exit_code == 2 and "Traceback" not in result.output and fragments[0] in result.output


def test_a_checkpoint_of_an_earlier_format_is_refused_clearly(trained_run, tmp_path):
    run_dir = copy_run(trained_run, tmp_path / "old", checkpoint_edit=lambda state: state.update(format=1))
    with pytest.raises(
        UserError,
        match=r"best.pt: checkpoint format 1 \(this version reads 2\); made by an earlier "
        r"version of mmsr-dgl, train again",
    ):
        load_checkpoint(run_dir / "best.pt")
    result = CliRunner().invoke(main, ["evaluate", "--run", str(run_dir)])
    assert_named_error(result, "train again")
    foreign = copy_run(trained_run, tmp_path / "foreign", checkpoint_edit=lambda state: state.pop("format"))
    with pytest.raises(UserError, match="best.pt: not an mmsr-dgl checkpoint"):
        load_checkpoint(foreign / "best.pt")


def test_resume_refuses_a_checkpoint_of_an_earlier_format(tiny_data, tmp_path):
    run_train(tiny_data, tmp_path / "run", epochs=1)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    torch.save({**state, "format": 1}, tmp_path / "run" / "last.pt")
    with pytest.raises(UserError, match="last.pt: checkpoint format 1.*train again"):
        train(tiny_config(epochs=2), tiny_data, tmp_path / "run", resume=True, echo=lambda m: None, progress=False)


def test_a_run_on_changed_data_is_refused(trained_run, tiny_data, tmp_path):
    from mmsr_dgl.data.preprocess import data_fingerprint

    manifest = json.loads((Path(tiny_data) / "manifest.json").read_text())
    assert data_fingerprint(manifest["settings"], manifest["inputs"]) == manifest["fingerprint"]
    changed = data_fingerprint({**manifest["settings"], "n_codes": 7}, manifest["inputs"])
    run_dir = copy_run(trained_run, tmp_path / "run", config_edit=lambda p: p.update(data_fingerprint=changed))
    with pytest.raises(UserError, match="not the dataset this run was trained on, or it changed since"):
        load_run(run_dir)


def test_a_full_disk_mid_training_is_a_clear_error(tiny_data, tmp_path, monkeypatch):
    """The first checkpoint is written, the second finds the disk full: a one-line error, no temporary file left."""
    import errno

    real, calls = torch.save, []

    def save(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    run = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["train", "--data", str(tiny_data), "--out", str(run), "--epochs", "2", "--set", "dim=16"]
    )
    assert result.exit_code == 2 and "No space left on device" in result.output
    assert "Traceback" not in result.output and len(calls) == 2
    assert not [p for p in run.iterdir() if ".tmp-" in p.name]


def test_recommend_and_train_name_bad_arguments(trained_run, tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "users.txt").write_bytes(b"\xff\xfe1\n")
    for args, message in (
        (["--out", tmp_path / "folder"], "is a directory"),
        (["--out", tmp_path / "r.tsv", "--users", tmp_path / "users.txt"], "line 1: not UTF-8"),
    ):
        result = CliRunner().invoke(main, ["recommend", "--run", str(trained_run), *map(str, args)])
        assert_named_error(result, message)
    with pytest.raises(UserError, match="setting 'lr'"):
        tiny_config(lr=1e300).validate()
    with pytest.raises(UserError, match="needs 'missing_modality'"):
        tiny_config(missing_rate=0.5).validate()
    _, data, _ = load_run(trained_run)
    first, second = data.user_ids[:2].tolist()
    (tmp_path / "twice.txt").write_text(f"{first}\n{second}\n{first}\n")
    result = CliRunner().invoke(
        main,
        [
            "recommend",
            "--run",
            str(trained_run),
            "--out",
            str(tmp_path / "r.tsv"),
            "--users",
            str(tmp_path / "twice.txt"),
        ],
    )
    assert result.exit_code == 0 and "for 2 users" in result.output


def test_resume_reads_the_runs_own_settings_and_a_finished_run_says_so(tiny_data, tmp_path):
    run = tmp_path / "run"
    first = CliRunner().invoke(
        main,
        ["train", "--data", str(tiny_data), "--out", str(run), "--epochs", "1", "--set", "dim=16", "--set", "lr=0.003"],
    )
    assert first.exit_code == 0, first.output
    more = CliRunner().invoke(main, ["train", "--out", str(run), "--resume", "--epochs", "2", "--threads", "1"])
    assert more.exit_code == 0, more.output
    assert "resuming" in more.output and load_run(run)[0].dim == 16
    assert json.loads((run / "results.json").read_text())["epochs_run"] == 2
    again = CliRunner().invoke(main, ["train", "--out", str(run), "--resume", "--epochs", "2"])
    assert again.exit_code == 0 and "finished after 2 epochs" in again.output and "resuming" not in again.output


def test_a_run_whose_dataset_moved_is_pointed_at_it(trained_run, tiny_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    config = (run / "config.yaml").read_text().replace(str(Path(tiny_data).resolve()), str(tmp_path / "gone"))
    (run / "config.yaml").write_text(config)
    lost = CliRunner().invoke(main, ["evaluate", "--run", str(run)])
    assert lost.exit_code == 2 and "is not there (moved or deleted?)" in lost.output and "--data" in lost.output
    found = CliRunner().invoke(main, ["evaluate", "--run", str(run), "--data", str(tiny_data)])
    assert found.exit_code == 0, found.output
    recommended = CliRunner().invoke(
        main, ["recommend", "--run", str(run), "--data", str(tiny_data), "--out", str(tmp_path / "top.tsv")]
    )
    assert recommended.exit_code == 0 and (tmp_path / "top.tsv").is_file()


def test_progress_lines_when_there_is_no_progress_bar(tiny_data, tmp_path, monkeypatch):
    import mmsr_dgl.training.trainer as trainer

    monkeypatch.setattr(trainer, "PROGRESS_SECONDS", 0.0)
    lines = []
    train(tiny_config(epochs=1), tiny_data, tmp_path / "run", echo=lines.append, progress=False)
    steps = [line for line in lines if " batches, loss " in line]
    assert steps and steps[0].startswith("epoch 1: 1 of ") and "samples/s" in steps[0]


def test_sasrec_trains_on_whole_sequences_with_a_sampled_softmax(tiny_data, tmp_path):
    results = run_train(
        tiny_data,
        tmp_path / "run",
        model="sasrec",
        n_layers=1,
        n_heads=1,
        dropout=0.2,
        attn_dropout=0.2,
        n_negatives=64,
        train_on="sequences",
        epochs=20,
        patience=20,
        lr=3e-3,
    )
    assert results["test"]["ndcg@10"] > 1.1 * results["popularity_test"]["ndcg@10"]
    with pytest.raises(UserError, match="'train_on'"):
        tiny_config(train_on="sequences").validate()
    with pytest.raises(UserError, match="'n_negatives'"):
        tiny_config(n_negatives=-1).validate()


def test_mmsr_mixture_trains_with_a_sampled_softmax(tiny_data, tmp_path):
    results = run_train(tiny_data, tmp_path / "run", n_negatives=32, epochs=3)
    assert results["test"]["ndcg@10"] > results["popularity_test"]["ndcg@10"]
