"""`mmsr-dgl inspect`: every picture written and non-empty, its numbers those of the run's files; clear messages for
a run without metrics.jsonl and models without a gate or a graph."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from mmsr_dgl.data.preprocess import Inputs, PreprocessConfig, preprocess
from mmsr_dgl.data.synthetic import SyntheticSpec
from mmsr_dgl.training import TrainConfig, evaluate, train
from mmsr_dgl.training.evaluate import target_ranks
from mmsr_dgl.training.run import load_run

TINY = dict(synthetic=SyntheticSpec(users=300, items=120, groups=6), n_codes=12, pca_dim=16)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("inspect") / "data"
    preprocess(PreprocessConfig(**TINY), Inputs(synthetic=True), out, log=lambda m: None)
    return out


def trained(data: Path, run_dir: Path, **settings) -> Path:
    config = TrainConfig(**{"dim": 16, "epochs": 3, "patience": 3, "batch_size": 128, "lr": 3e-3, **settings})
    train(config, data, run_dir, echo=lambda m: None, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def async_run(data, tmp_path_factory) -> Path:
    return trained(data, tmp_path_factory.mktemp("async") / "run")


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG and path.stat().st_size > 10_000, path


def test_pictures_and_their_numbers(async_run):
    result = run_cli("inspect", "--run", async_run, "--user", "1")
    assert result.exit_code == 0, result.output
    out = async_run / "inspect"
    summary = json.loads((out / "inspect.json").read_text())
    assert summary["pictures"] == ["curves.png", "gates.png", "accuracy.png", "user_1.png"]
    for name in summary["pictures"]:
        assert_png(out / name)
    results = json.loads((async_run / "results.json").read_text())
    history = [json.loads(line) for line in (async_run / "metrics.jsonl").read_text().splitlines()]
    assert summary["best_epoch"] == results["best_epoch"] and summary["epochs"] == len(history)
    assert summary["best_valid"] == results["valid"]
    for metric in ("hr@10", "ndcg@10"):  # overall and per bucket: the run's own test figures
        assert summary["overall"]["model"][metric] == pytest.approx(results["test"][metric])
        assert summary["overall"]["popularity"][metric] == pytest.approx(results["popularity_test"][metric])
        for rows in summary["buckets"].values():
            assert sum(r["samples"] for r in rows) == 300
            mean = sum(r["model"][metric] * r["samples"] for r in rows) / 300
            assert mean == pytest.approx(results["test"][metric])
    gates = summary["gate_weight_of_order_a"]  # one layer: it updates the item nodes only
    config, data, _ = load_run(async_run)
    users, ends = data.splits["test"]  # the 300 test histories, all sampled: one item node per distinct item
    assert set(gates) == {"item"} and gates["item"]["nodes"] == sum(
        len(set(h.tolist())) for h in data.inputs(users, ends)
    )
    assert 0 <= gates["item"]["quartiles"][0] <= gates["item"]["quartiles"][2] <= 1
    top = summary["user"]["top"]
    assert len(top) == 10 and summary["user"]["edges"]["heterogeneous"] > 0
    assert [t["score"] for t in top] == sorted((t["score"] for t in top), reverse=True)
    _, _, model = load_run(async_run)  # the user's target and its rank: as evaluation ranks them
    row = int(np.flatnonzero(users == int(np.flatnonzero(data.user_ids == "1")[0]))[0])
    rank = int(target_ranks(model, data, "test", exclude_seen=config.exclude_seen)[row]) + 1
    assert summary["user"]["target"] == data.item_names[data.targets("test")[row]]
    assert summary["user"]["target_rank"] == rank and (rank <= 10) == any(
        t["item"] == summary["user"]["target"] for t in top
    )
    assert "selected epoch" in result.stdout and "pictures:" in result.stdout


def test_bucket_figures_agree_with_evaluate_on_valid(async_run, tmp_path):
    assert run_cli("inspect", "--run", async_run, "--split", "valid", "--out", tmp_path).exit_code == 0
    summary = json.loads((tmp_path / "inspect.json").read_text())
    config, data, model = load_run(async_run)
    expected = evaluate(model, data, "valid", exclude_seen=config.exclude_seen)
    assert summary["overall"]["model"]["ndcg@10"] == pytest.approx(expected["ndcg@10"])
    assert not (tmp_path / "user_1.png").exists()


def test_run_without_metrics_and_models_without_a_gate(data, async_run, tmp_path):
    sync = trained(data, tmp_path / "sync", fusion="sync")
    (sync / "metrics.jsonl").unlink()
    result = run_cli("inspect", "--run", sync, "--user", "2")
    assert result.exit_code == 0, result.output
    summary = json.loads((sync / "inspect" / "inspect.json").read_text())
    assert summary["pictures"] == ["accuracy.png", "user_2.png"]
    assert any("metrics.jsonl" in n for n in summary["notes"])
    assert any("no update gate" in n and "sync" in n for n in summary["notes"])
    assert "weight 0.5" in summary["user"]["legend"]  # a scale for the edge widths
    items_only = trained(data, tmp_path / "items-only", fusion="none")
    assert run_cli("inspect", "--run", items_only, "--user", "2").exit_code == 0
    legend = json.loads((items_only / "inspect" / "inspect.json").read_text())["user"]["legend"]
    assert "homogeneous edge" in legend and "heterogeneous edge" not in legend  # no code nodes: none drawn
    sasrec = trained(data, tmp_path / "sasrec", model="sasrec")
    result = run_cli("inspect", "--run", sasrec, "--user", "2")
    assert result.exit_code == 0, result.output
    summary = json.loads((sasrec / "inspect" / "inspect.json").read_text())
    assert summary["pictures"] == ["curves.png", "accuracy.png"] and len(summary["user"]["top"]) == 10
    assert any("reads no graph" in n for n in summary["notes"])
    no_modalities = trained(data, tmp_path / "no_modalities", modalities=[])  # async, but nothing to fuse
    result = run_cli("inspect", "--run", no_modalities)
    assert result.exit_code == 0, result.output
    assert "fusion none has none" in result.output
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "curves.png").write_text("a file of the user's")
    result = run_cli("inspect", "--run", async_run, "--out", mine)
    assert result.exit_code == 2 and "inspect did not write (curves.png)" in result.output
    assert (mine / "curves.png").read_text() == "a file of the user's"
    result = run_cli("inspect", "--run", async_run, "--user", "nobody", "--out", tmp_path / "x")
    assert result.exit_code == 2 and "'nobody': not a user" in result.output
    result = run_cli("inspect", "--run", tmp_path / "absent")
    assert result.exit_code == 2 and "absent" in result.output and "Traceback" not in result.output


def test_the_user_graph_draws_codes_at_their_items_position(async_run):
    from mmsr_dgl.graph import MSGraphSchema
    from mmsr_dgl.inspect.usergraph import DRAWN, layout
    from mmsr_dgl.nn import make_batch

    _, data, model = load_run(async_run)
    modalities, views = model.graph_spec()
    history = data.history(0)[-data.max_len :]
    graph = make_batch([history], data.max_len, {m: data.codes[m] for m in modalities}, views).graph
    ntypes = MSGraphSchema(tuple(modalities)).ntypes
    where = layout(graph, ntypes, DRAWN)
    for t in ntypes:
        latest = graph.nodes[t].data["pos"].argmax(1).tolist()  # each node's most recent position
        by_column: dict[int, list[float]] = {}
        for n, column in enumerate(latest):
            if column < DRAWN:
                by_column.setdefault(column, []).append(where[(t, n)][0])
        for column, xs in by_column.items():  # one node: at the position; several: spread evenly around it
            assert np.mean(xs) == pytest.approx(-column) and len(set(xs)) == len(xs)
            assert all(abs(x + column) < 0.5 for x in xs)


def test_pictures_fade_small_buckets_leave_empty_ones_blank_and_frame_a_single_epoch(tmp_path):
    from mmsr_dgl.inspect import figures

    def row(bucket, samples, hr):
        return {
            "bucket": bucket,
            "samples": samples,
            "model": {"hr@10": hr, "ndcg@10": hr / 2},
            "popularity": {"hr@10": hr / 4, "ndcg@10": hr / 8},
        }

    figure = figures.accuracy(
        {"history length": [row("1-2", 500, 0.2), row("2-3", 3, 1.0), row("3-5", 0, 0.0)]}, tmp_path / "accuracy.png"
    )
    axes = figure.axes[0]
    heights = sorted((round(p.get_height(), 3), p.get_alpha()) for p in axes.patches if p.get_x() < 1.5)
    assert (1.0, 0.3) in heights and (0.2, 1.0) in heights  # the 3-sample bucket drawn, but faded
    assert len(axes.patches) == 8 and not [p for p in axes.patches if p.get_x() > 1.5]  # none for the empty one,
    assert "no samples" in [t.get_text() for t in axes.texts]  # but said so
    history = [{"epoch": 1, "loss": 7.0, "valid": {"hr@10": 0.1, "ndcg@10": 0.05}}]
    figure = figures.curves(history, 1, tmp_path / "curves.png")
    assert all(a.get_xlim() == (0.5, 1.5) for a in figure.axes)
    assert [t for t in figure.axes[0].get_xticks() if 0.5 <= t <= 1.5] == [1.0]
    figure = figures.gates({"item": np.array([0.2, 0.7])}, "2 histories", tmp_path / "gates.png")
    assert any(line.get_xdata()[0] == 0.5 for line in figure.axes[0].lines)
