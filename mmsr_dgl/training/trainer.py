"""The training loop: Adam on the model's loss, validation every epoch, early stopping, one final test; in one
process or several (DistributedDataParallel, each process a share of every batch, rank 0 writing the run)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Callable

import dgl
import numpy as np
import torch
from tqdm import tqdm

from ..data import ProcessedData
from ..errors import UserError
from ..io import claim_dir, read_json, write_file_atomic
from .config import TrainConfig
from .distributed import Group, launch, seed_for
from .evaluate import evaluate, evaluate_scores
from .loader import prefetched, sequence_batches, split_batches
from .optim import make_optimizer
from .run import (
    CONFIG_FILE,
    build_model,
    load_checkpoint,
    load_data,
    read_run_config,
    remove_run,
    restore_model,
    save_checkpoint,
    settings_differ,
    write_run_config,
)
from .threads import ThreadChooser

RESULTS = "results.json"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    dgl.seed(seed)


def resolve_device(name: str) -> str:
    if name == "cpu":
        return name
    if not name.startswith("cuda"):
        raise UserError(f"--device {name!r}: expected cpu or cuda[:N]")
    if not torch.cuda.is_available():
        raise UserError(f"--device {name}: PyTorch sees no CUDA device here")
    try:
        dgl.graph(([0], [0])).to(name)
    except Exception:  # the CPU build of DGL raises DGLError when asked for CUDA
        raise UserError(f"--device {name}: the installed DGL is a CPU build without CUDA support") from None
    return name


def _logger(run_dir: Path, echo: Callable[[str], None]) -> Callable[[str], None]:
    logger = logging.getLogger(f"mmsr_dgl.train.{run_dir.resolve()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for stale in list(logger.handlers):  # an earlier train() of this directory in this process
        logger.removeHandler(stale)
        stale.close()
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)

    def log(message: str) -> None:
        logger.info(message)
        echo(message)

    return log


def _check_resume(run_dir: Path, config: TrainConfig, data: ProcessedData) -> dict:
    if not data.matches(read_run_config(run_dir / CONFIG_FILE)["data_fingerprint"]):
        raise UserError(f"{run_dir}: --resume on a dataset that changed since the run started (fingerprint)")
    state = load_checkpoint(run_dir / "last.pt")
    differs = settings_differ(config, state)
    if differs:
        raise UserError(f"{run_dir}: --resume with settings that differ from the run's: {', '.join(differs)}")
    return state


def train(
    config: TrainConfig,
    data_dir: Path,
    run_dir: Path,
    resume: bool = False,
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    nproc: int = 1,
) -> dict:
    """Train into `run_dir` (or continue it with `resume`), then test; returns the contents of results.json.
    `overwrite` replaces an earlier run there once every setting has been checked and the model built.
    `nproc` > 1 trains in that many processes on this machine; in a process torchrun started, the processes of
    that launch train together whatever `nproc` says."""
    if nproc > 1:
        result = launch(nproc, _process, config, Path(data_dir), Path(run_dir), resume, overwrite, progress)
        if isinstance(result, UserError):
            raise result
        return result
    group = Group.join(config.device)
    try:
        with contextlib.ExitStack() as held:  # the run directory, held by the main process while it trains
            return _train(group, held, config, data_dir, Path(run_dir), resume, overwrite, echo, progress)
    finally:
        group.leave()


def _process(
    config: TrainConfig, data_dir: Path, run_dir: Path, resume: bool, overwrite: bool, progress: bool
) -> dict | UserError:
    """One of the processes `train(nproc=N)` starts; its UserError (every process meets the same) is returned."""
    try:
        return train(
            config, data_dir, run_dir, resume, overwrite, lambda m: print(m, file=sys.stderr, flush=True), progress
        )
    except UserError as err:
        return err


def _claim_run_dir(held: contextlib.ExitStack, run_dir: Path, resume: bool, overwrite: bool) -> bool:
    """Hold `run_dir` (see `io.claim_dir`) until `held` closes; returns whether there is a run to resume. Refuses
    to start over an existing run without `overwrite`, and to resume a run whose last checkpoint is gone."""
    found = held.enter_context(claim_dir(run_dir, "run"))
    if not resume and not overwrite and found:
        raise UserError(
            f"{run_dir}: already holds a run; use --resume to continue it, --overwrite to replace it, "
            f"or choose another --out"
        )
    if resume and not (run_dir / "last.pt").exists():
        if not found:
            raise UserError(f"{run_dir}: nothing to resume (no run there)")
        made = [name for name in ("best.pt", RESULTS, "metrics.jsonl") if (run_dir / name).exists()]
        if made:
            raise UserError(
                f"{run_dir}: last.pt is missing, so the run cannot continue (its {', '.join(made)} are "
                f"kept); --overwrite trains it again from the first epoch"
            )
        return False  # interrupted during its first epoch: nothing to continue, start it again
    return resume


def _train(
    group: Group,
    held: contextlib.ExitStack,
    config: TrainConfig,
    data_dir: Path,
    run_dir: Path,
    resume: bool,
    overwrite: bool,
    echo: Callable[[str], None],
    progress: bool,
) -> dict:
    if overwrite and resume:
        raise UserError("--overwrite and --resume exclude each other")
    data = load_data(config, data_dir)
    group.check_same(data.manifest["fingerprint"], "dataset (its manifest's fingerprint)")
    if not len(data.splits["train"][0]):
        raise UserError(f"{data.path}: the dataset has no training samples; preprocess it with more data")
    if config.exclude_seen is None:
        config = dataclasses.replace(config, exclude_seen=not data.repeats_items())
    device = resolve_device(config.device)
    if device.startswith("cuda") and group.world > 1:
        device = f"cuda:{group.local_rank}"
    resume = group.from_main(lambda: _claim_run_dir(held, run_dir, resume, overwrite))
    threads = group.threads(config.threads)
    seed_everything(config.seed)
    model = build_model(config, data).to(device)
    optimizer = make_optimizer(model, config.lr, config.weight_decay)
    state = {"epoch": 0, "history": [], "best": None, "bad_epochs": 0}
    if resume:
        saved = group.from_main(lambda: _check_resume(run_dir, config, data))
        restore_model(model, saved, run_dir / "last.pt")
        optimizer.load_state_dict(saved["optimizer"])
        state = {k: saved[k] for k in state}
    elif group.main:  # the new run's config replaces an earlier run's, then that run's other files go
        write_run_config(run_dir, config, data_dir, data.manifest["fingerprint"])
        if overwrite:
            remove_run(run_dir, keep=(CONFIG_FILE,))
    log = _logger(run_dir, echo) if group.main else (lambda message: None)
    finished = state["epoch"] >= config.epochs or state["bad_epochs"] >= config.patience
    done = group.from_main(lambda: read_json(run_dir / RESULTS)) if resume and finished else None
    if done is not None:
        log(
            f"{run_dir}: finished after {state['epoch']} epochs (best epoch {state['best']['epoch']}); nothing to "
            f"resume (a larger --epochs continues a run the epoch limit ended)"
        )
        return done
    log(_start_message(config, data, group, threads, state["epoch"], resume))
    _epochs(model, optimizer, data, config, run_dir, state, device, group, threads, progress, log)
    return _finish(model, data, config, run_dir, state, device, group, log)


def _start_message(
    config: TrainConfig, data: ProcessedData, group: Group, threads: int, epoch: int, resume: bool
) -> str:
    name = f"mmsr/{config.fusion}" if config.model == "mmsr" else config.model
    samples = (
        f"{int((data.splits['valid'][1] >= 2).sum())} training sequences"
        if config.train_on == "sequences"
        else f"{len(data.splits['train'][0])} training samples"
    )
    seen = "excluded from" if config.exclude_seen else "kept in"
    processes = f"; {group.world} processes, {threads} thread{'s' * (threads > 1)} each" if group.world > 1 else ""
    return (
        f"{'resuming' if resume else 'training'} {name} on {data.path} ({samples}) from epoch {epoch + 1}; "
        f"seen items {seen} the ranking{processes}"
    )


def _epochs(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: ProcessedData,
    config: TrainConfig,
    run_dir: Path,
    state: dict,
    device: str,
    group: Group,
    threads: int,
    progress: bool,
    log: Callable[[str], None],
) -> None:
    """Train and validate epoch by epoch until the epoch limit or the patience ends it, checkpointing each."""
    chooser = ThreadChooser(threads, adaptive=config.threads == 0)
    step = group.loss_step(model)
    while state["epoch"] < config.epochs and state["bad_epochs"] < config.patience:
        epoch = state["epoch"]
        record = _train_epoch(step, model, optimizer, data, config, epoch, device, group, chooser, progress, log)
        start = time.perf_counter()
        valid = evaluate(
            model,
            data,
            "valid",
            config.eval_batch_size,
            config.exclude_seen,
            device,
            config.num_workers,
            progress and group.main,
            group,
        )
        record.update(eval_seconds=round(time.perf_counter() - start, 2), valid=valid)
        score = valid[config.valid_metric]
        improved = state["best"] is None or score > state["best"]["score"]
        if improved:
            state["best"] = {"epoch": epoch + 1, "score": score, "valid": valid}
            state["bad_epochs"] = 0
        else:
            state["bad_epochs"] += 1
        state["history"].append(record)
        state["epoch"] = epoch + 1
        if group.main:
            _checkpoint(run_dir, model, optimizer, config, state, improved)
        log(
            f"epoch {epoch + 1}: loss {record['loss']:.4f}, valid {config.valid_metric} {score:.4f}"
            f"{' (best)' if improved else ''}, {record['seconds']:.1f} s train + {record['eval_seconds']:.1f} s eval"
        )


def _checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    state: dict,
    improved: bool,
) -> None:
    """After an epoch: best.pt when it improved, last.pt and metrics.jsonl always; stale results removed."""
    settings = dataclasses.asdict(config)
    if improved:
        save_checkpoint(run_dir / "best.pt", {"model": model.state_dict(), "epoch": state["epoch"], "config": settings})
    save_checkpoint(
        run_dir / "last.pt",
        {**state, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "config": settings},
    )
    _write_metrics(run_dir, state["history"])
    (run_dir / RESULTS).unlink(missing_ok=True)  # results of an earlier, shorter run are stale now


PROGRESS_SECONDS = 60.0  # without a progress bar, a progress line this often


def _train_epoch(
    step: torch.nn.Module,
    model,
    optimizer,
    data: ProcessedData,
    config: TrainConfig,
    epoch: int,
    device: str,
    group: Group,
    chooser: ThreadChooser,
    progress: bool,
    log: Callable[[str], None],
) -> dict:
    """One pass over the training samples; `step(batch)` is the loss (DistributedDataParallel's in a group)."""
    model.train()
    torch.manual_seed(seed_for(config.seed, epoch, group.rank))
    loader = _training_batches(data, model, config, epoch, group)
    total, count, start = 0.0, 0, time.perf_counter()
    said = last = start
    bar = tqdm(
        prefetched(loader),
        desc=f"epoch {epoch + 1}",
        total=len(loader),
        leave=False,
        disable=not (progress and group.main),
    )
    for n, batch in enumerate(bar, 1):
        batch = batch.to(device)
        total += _optimise(step, optimizer, batch, epoch) * len(batch)
        count += len(batch)
        now = time.perf_counter()
        chooser.step_done(now - last)
        last = now
        bar.set_postfix(loss=f"{total / count:.4f}", samples_per_s=f"{count * group.world / (now - start):.0f}")
        if not progress and now - said >= PROGRESS_SECONDS:
            said = now
            log(
                f"epoch {epoch + 1}: {n} of {len(loader)} batches, loss {total / count:.4f}, "
                f"{count * group.world / (now - start):.0f} samples/s"
            )
    seconds = time.perf_counter() - start
    total, count = group.sum([total, count])
    return {
        "epoch": epoch + 1,
        "loss": total / count,
        "seconds": round(seconds, 2),
        "samples_per_s": round(count / seconds, 1),
        "threads": torch.get_num_threads(),
    }


def _training_batches(data: ProcessedData, model, config: TrainConfig, epoch: int, group: Group):
    """This epoch's training batches (this process's share): samples, or (train_on sequences) whole histories."""
    if config.train_on == "sequences":
        return sequence_batches(data, config.batch_size, [config.seed, epoch], group)
    return split_batches(
        data,
        model,
        "train",
        config.batch_size,
        shuffle_seed=[config.seed, epoch],
        num_workers=config.num_workers,
        group=group,
    )


def _optimise(step: torch.nn.Module, optimizer, batch, epoch: int) -> float:
    """One optimisation step on `batch`; its loss."""
    loss = step(batch)
    if not torch.isfinite(loss):
        raise UserError(
            f"epoch {epoch + 1}: the training loss became {loss.item()}; lower the learning rate "
            "(--set lr=...) and start again"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def _write_metrics(run_dir: Path, history: list[dict]) -> None:
    text = "".join(json.dumps(r) + "\n" for r in history)
    write_file_atomic(run_dir / "metrics.jsonl", lambda tmp: tmp.write_text(text))


def _finish(
    model,
    data: ProcessedData,
    config: TrainConfig,
    run_dir: Path,
    state: dict,
    device: str,
    group: Group,
    log: Callable[[str], None],
) -> dict:
    """Test the best checkpoint once, next to a popularity ranking, and write results.json."""
    best_path = run_dir / "best.pt"
    restore_model(model, group.from_main(lambda: load_checkpoint(best_path)), best_path)
    test = evaluate(
        model, data, "test", config.eval_batch_size, config.exclude_seen, device, config.num_workers, group=group
    )
    if not group.main:
        return {}
    popularity = evaluate_scores(data.train_popularity(), data, "test", exclude_seen=config.exclude_seen)
    history = state["history"]
    results = {
        "best_epoch": state["best"]["epoch"],
        "epochs_run": len(history),
        "stopped_early": state["bad_epochs"] >= config.patience,
        "valid": state["best"]["valid"],
        "test": test,
        "popularity_test": popularity,
        "seconds_per_epoch": round(float(np.mean([r["seconds"] for r in history])), 2),
        "eval_seconds": round(float(np.mean([r["eval_seconds"] for r in history])), 2),
        "exclude_seen": config.exclude_seen,
    }
    write_file_atomic(run_dir / RESULTS, lambda tmp: tmp.write_text(json.dumps(results, indent=2) + "\n"))
    log(
        f"test (best epoch {results['best_epoch']}): "
        + ", ".join(f"{k} {test[k]:.4f}" for k in ("hr@10", "ndcg@10", "mrr@10"))
        + " | popularity: "
        + ", ".join(f"{k} {popularity[k]:.4f}" for k in ("hr@10", "ndcg@10", "mrr@10"))
    )
    return results
