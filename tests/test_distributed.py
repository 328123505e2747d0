"""Training in two processes (DistributedDataParallel over gloo, one thread each): same quality as one process,
the same weights on every rank, a killed process stops the run, and the run resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mmsr_dgl.errors import UserError
from mmsr_dgl.training import TrainConfig, evaluate, train
from mmsr_dgl.training.distributed import Group, launch
from mmsr_dgl.training.loader import split_batches
from mmsr_dgl.training.optim import make_optimizer
from mmsr_dgl.training.run import build_model, load_data, load_run
from mmsr_dgl.training.trainer import seed_everything

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"dim": 32, "batch_size": 128, "lr": 3e-3, "threads": 1}


@pytest.fixture(scope="module")
def data(synthetic_data_dir) -> Path:
    return synthetic_data_dir


def config(**overrides) -> TrainConfig:
    return TrainConfig(**{**SETTINGS, "epochs": 3, "patience": 3, **overrides})


def quiet_train(cfg: TrainConfig, data: Path, out: Path, **kwargs) -> dict:
    return train(cfg, data, out, echo=lambda m: None, progress=False, **kwargs)


def test_each_process_gets_a_contiguous_share_of_every_batch():
    order = [np.arange(0, 5), np.arange(5, 10), np.arange(10, 11)]
    shares = [Group(rank, 2).share(order, whole=True) for rank in (0, 1)]
    assert [len(s) for s in shares] == [2, 2]  # the one-sample tail joined the batch before
    for i, batch in enumerate([order[0], np.concatenate(order[1:])]):
        assert np.array_equal(np.concatenate([shares[0][i], shares[1][i]]), batch)
    assert Group(1, 2).share([np.arange(1)], whole=False) == []  # evaluation: nothing to rank here
    with pytest.raises(UserError, match="1 training samples cannot be shared by 2 processes"):
        Group(0, 2).share([np.arange(1)], whole=True)


def _one_step(data_dir: Path, n_negatives: int) -> dict:
    """In each of two processes: one training step on its share of a batch; rank 0 returns what it learnt."""
    group = Group.join("cpu")
    torch.set_num_threads(1)
    cfg = config(n_negatives=n_negatives)
    data = load_data(cfg, data_dir)
    seed_everything(cfg.seed)
    model = build_model(cfg, data)
    before = torch.cat([p.detach().flatten() for p in model.parameters()]).clone()
    optimizer = make_optimizer(model, cfg.lr)
    batch = next(iter(split_batches(data, model, "train", cfg.batch_size, shuffle_seed=0, group=group)))
    torch.manual_seed(group.rank)  # different dropout masks in each process
    model.train()
    step = group.loss_step(model)
    step(batch).backward()
    optimizer.step()
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    everyone = [None] * group.world
    torch.distributed.all_gather_object(everyone, (after, batch.targets))
    group.leave()
    return {
        "moved": (after - before).abs().max().item(),
        "rank_difference": (everyone[0][0] - everyone[1][0]).abs().max().item(),
        "same_samples": torch.equal(everyone[0][1], everyone[1][1]),
    }


@pytest.mark.parametrize("n_negatives", [0, 16])  # 16: sparse gradients of the id embeddings, a lazy Adam
def test_parameters_are_identical_on_every_rank_after_a_step(data, n_negatives):
    seen = launch(2, _one_step, data, n_negatives)
    assert not seen["same_samples"]  # each process trained on its own share of the batch...
    assert seen["moved"] > 1e-4  # ...the step changed the weights...
    assert seen["rank_difference"] == 0.0  # ...and both processes hold the same weights after it


def test_two_processes_train_like_one_and_evaluate_alike(data, tmp_path):
    # without dropout the only differences are in the order of float sums
    exact = {"dropout": 0.0, "attn_dropout": 0.0}
    one = quiet_train(config(**exact), data, tmp_path / "one-exact")
    two = quiet_train(config(**exact), data, tmp_path / "two-exact", nproc=2)
    assert two["valid"]["ndcg@10"] == pytest.approx(one["valid"]["ndcg@10"], abs=2e-3)
    # with it, the run lands within one process's seed-to-seed spread
    one = [quiet_train(config(seed=seed), data, tmp_path / f"one-{seed}")["valid"]["ndcg@10"] for seed in range(1, 6)]
    two = quiet_train(config(seed=1), data, tmp_path / "two", nproc=2)
    spread = max(one) - min(one)
    assert min(one) - spread / 2 <= two["valid"]["ndcg@10"] <= max(one) + spread / 2, (one, two["valid"])
    # the sharded, gathered evaluation is the one-process evaluation of the same weights
    cfg, loaded, model = load_run(tmp_path / "two")
    assert evaluate(model, loaded, "test", exclude_seen=cfg.exclude_seen) == pytest.approx(two["test"], abs=1e-12)
    assert two["epochs_run"] == 3 and (tmp_path / "two" / "metrics.jsonl").read_text().count("\n") == 3


def _workers(launcher: int) -> list[int]:
    ps = ["ps", "-ww", "-o", "pid=,args=", "--ppid", str(launcher)]
    out = subprocess.run(ps, capture_output=True, text=True).stdout
    return sorted(int(line.split()[0]) for line in out.splitlines() if "spawn_main" in line)


def _start_training(data: Path, run_dir: Path) -> subprocess.Popen:
    """`train --nproc 2` in a session of its own (as a terminal's foreground job), once its first epoch is done."""
    args = [
        sys.executable,
        "-m",
        "cli.main",
        "train",
        "--data",
        str(data),
        "--out",
        str(run_dir),
        "--nproc",
        "2",
        "--no-progress",
        *(f"--set={k}={v}" for k, v in SETTINGS.items()),
        "--set=patience=3",
        "--epochs=3",
    ]
    proc = subprocess.Popen(
        args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        time.sleep(0.05)
    return proc


def _stopped(proc: subprocess.Popen, within: float) -> str:
    """The stopped command's stderr without its progress lines; fails when it has not exited `within` seconds."""
    try:
        _, stderr = proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the run was still there {within} s after it was stopped")
    progress = ("training mmsr/", "epoch ")
    return "\n".join(line for line in stderr.splitlines() if not line.startswith(progress))


def _group_alive(group: int, within: float) -> bool:
    """Whether a process of the process group is still there after `within` seconds."""
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.parametrize("victim", [0, 1])
def test_a_killed_process_stops_the_run_which_resumes(data, tmp_path, victim):
    straight = quiet_train(config(), data, tmp_path / "straight", nproc=2)
    run_dir = tmp_path / "killed"
    proc = _start_training(data, run_dir)
    workers = _workers(proc.pid)
    assert len(workers) == 2, workers
    os.kill(workers[victim], signal.SIGKILL)
    stderr = _stopped(proc, within=60)  # the others are stopped: no hang
    assert proc.returncode == 2, stderr
    # one line: no launcher traceback, no warning about the killed process's semaphores
    assert stderr == (
        f"error: training process {victim} of 2 was killed by SIGKILL; the others were stopped. "
        "Continue the run with --resume"
    ), stderr
    assert not (run_dir / "results.json").exists(), "the run finished before it could be killed"
    resumed = quiet_train(config(), data, run_dir, resume=True, nproc=2)
    assert resumed["valid"] == straight["valid"] and resumed["test"] == straight["test"]


@pytest.mark.parametrize(("how", "status"), [("ctrl-c", 130), ("sigterm", 143)])
def test_an_interrupted_run_stops_every_process_at_once_and_quietly(data, tmp_path, how, status):
    run_dir = tmp_path / "interrupted"
    proc = _start_training(data, run_dir)
    if how == "ctrl-c":  # the terminal signals its foreground job: the launcher and its processes alike
        os.killpg(proc.pid, signal.SIGINT)
    else:
        os.kill(proc.pid, signal.SIGTERM)
    stderr = _stopped(proc, within=20)
    assert proc.returncode == status, stderr
    assert stderr == (
        "error: interrupted; nothing half-written was left (a `train` continues with --resume)"
        if how == "ctrl-c"
        else ""
    ), stderr
    assert not _group_alive(proc.pid, within=5), "a training process outlived the launcher"
    left = {p.name for p in run_dir.iterdir()}
    assert left <= {"best.pt", "config.yaml", "last.pt", "metrics.jsonl", "train.log"}, left


def test_torchrun_starts_the_same_training(data, tmp_path):
    run_dir = tmp_path / "torchrun"
    args = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "cli.main",
        "train",
        "--data",
        str(data),
        "--out",
        str(run_dir),
        "--no-progress",
        *(f"--set={k}={v}" for k, v in SETTINGS.items()),
        "--epochs=1",
    ]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads((run_dir / "results.json").read_text())
    printed = json.loads(done.stdout)  # printed once, by the first process
    assert printed["model"] == results["test"]
    assert "2 processes, 1 thread each" in (run_dir / "train.log").read_text()


def _agree(values: list) -> str:
    group = Group.join("cpu")
    try:
        group.check_same(values[group.rank], "dataset")
        return "same"
    except UserError as err:
        return str(err)
    finally:
        group.leave()


def test_processes_that_read_different_datasets_are_stopped():
    assert launch(2, _agree, ["a", "a"]) == "same"
    assert "processes 1 of 2 hold another dataset than process 0" in launch(2, _agree, ["a", "b"])
