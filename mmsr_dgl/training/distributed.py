"""Training in several processes with torch.distributed (gloo on CPU, nccl on CUDA): the process group, each
process's share of a batch, and the few collectives the training loop needs. Started by `train --nproc N` (the
same elastic launcher as torchrun, in-process) or by torchrun itself."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..errors import UserError

# how long a process waits for the others in one collective before the run stops: longer than any one step or
# checkpoint write, short enough that a lost machine does not hold the others for hours
TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class Group:
    """This process's place among the training processes; a single process is rank 0 of 1."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def join(cls, device: str) -> Group:
        """The group torchrun (or `launch`) set up in the environment, joined; rank 0 of 1 without one."""
        if int(os.environ.get("WORLD_SIZE", "1")) == 1 and not dist.is_initialized():
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=TIMEOUT)
        return cls(
            dist.get_rank(),
            dist.get_world_size(),
            int(os.environ.get("LOCAL_RANK", "0")),
            int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size())),
        )

    def threads(self, wanted: int) -> int:
        """Intra-op threads for this process: `wanted` (0: its share of this machine's cores), but no more than
        that share."""
        share = max(1, (os.cpu_count() or 1) // self.local_world)
        return min(wanted, share) if wanted else share

    def share(self, order: list[np.ndarray], whole: bool) -> list[np.ndarray]:
        """This process's part of every batch (contiguous, in rank order). `whole`: every process gets a part of
        every batch (training steps are collective), so a last batch smaller than the group joins the one before;
        otherwise empty parts are left out."""
        if self.world == 1:
            return order
        if whole and len(order) > 1 and len(order[-1]) < self.world:
            order = [*order[:-2], np.concatenate(order[-2:])]
        if whole and len(order[-1]) < self.world:
            raise UserError(f"{len(order[-1])} training samples cannot be shared by {self.world} processes")
        parts = [np.array_split(batch, self.world)[self.rank] for batch in order]
        return parts if whole else [p for p in parts if len(p)]

    def gather(self, index: np.ndarray, values: torch.Tensor, n: int) -> torch.Tensor:
        """[n]: every process's `values` put at their sample `index` (each sample given by one process, in order
        when there is one process)."""
        if self.world == 1:
            return values
        everyone = [None] * self.world
        dist.all_gather_object(everyone, (index, values))
        out = torch.empty(n, dtype=values.dtype)
        for idx, vals in everyone:
            out[torch.as_tensor(idx, dtype=torch.long)] = vals
        return out

    def sum(self, values: list[float]) -> list[float]:
        """Each value summed over the processes."""
        if self.world == 1:
            return values
        total = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(total)
        return total.tolist()

    def from_main(self, work: Callable[[], Any]) -> Any:
        """`work()` done by rank 0 alone (it reads or checks the run directory), its result or its UserError
        given to every process."""
        if self.world == 1:
            return work()
        outcome = [None]
        if self.main:
            try:
                outcome = [("ok", work())]
            except UserError as err:
                outcome = [("error", str(err))]
        dist.broadcast_object_list(outcome, src=0)
        kind, value = outcome[0]
        if kind == "error":
            raise UserError(value)
        return value

    def check_same(self, value: Any, what: str) -> None:
        """Refuse, in every process, to go on unless all of them hold the same `value` (e.g. their dataset's
        fingerprint: each machine reads its own copy)."""
        if self.world == 1:
            return
        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        differ = [rank for rank, v in enumerate(values) if v != values[0]]
        if differ:
            raise UserError(
                f"training processes {', '.join(map(str, differ))} of {self.world} hold another {what} "
                f"than process 0; give every process the same one"
            )

    def loss_step(self, model: torch.nn.Module) -> torch.nn.Module:
        """`step(batch)` -> the model's training loss; in a group, its backward also averages the gradients."""
        if self.world == 1:
            return _Loss(model)
        # the last MMSR layer updates item nodes only, so its code-node weights get no gradient
        return DistributedDataParallel(_Loss(model), forward_sync_buffers=False, find_unused_parameters=True)

    def leave(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


class _Loss(torch.nn.Module):
    """The model's training loss as a module's forward, which DistributedDataParallel wraps."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch) -> torch.Tensor:
        return self.model.calculate_loss(batch)


def seed_for(seed: int, epoch: int, rank: int) -> int:
    """The torch seed of one process in one epoch (dropout, sampled negatives): a resumed run draws the same."""
    return int(np.random.default_rng([seed, epoch, rank]).integers(2**63))


# the launcher's own reports (a worker's traceback, "Closing process via signal"), which `launch` says in one line
QUIET = ("torch.distributed.elastic", "torch.multiprocessing")


def launch(nproc: int, work: Callable, *args) -> Any:
    """Run `work(*args)` in `nproc` processes on this machine (torch's elastic launcher, as torchrun does) and
    return rank 0's result. A process that fails or is killed stops the others; the error says which. Ctrl-C or
    SIGTERM stops every process, each after its own cleanup; then Ctrl-C raises KeyboardInterrupt, SIGTERM exits
    with status 143."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if dist.is_torchelastic_launched():
        raise UserError("--nproc inside a torchrun launch: give torchrun --nproc-per-node instead")
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.5,
        start_method="spawn",
    )
    try:
        with _quiet_launcher():
            return elastic_launch(config, _worker)(work, *args)[0]
    except SignalException as err:
        if err.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        sys.exit(128 + err.sigval)
    except ChildFailedError as err:
        # a killed process is the cause; the others may have failed first, in a collective it left
        killed = [(rank, f) for rank, f in sorted(err.failures.items()) if f.exitcode < 0]
        rank, failure = killed[0] if killed else err.get_first_failure()
        killer = failure.signal_name()
        how = (
            f"was killed by {killer}"
            if failure.exitcode < 0 and killer != "<N/A>"
            else f"failed: {failure.message}"
            if isinstance(failure.message, str) and failure.message
            else f"exited with status {failure.exitcode}"
        )
        raise UserError(
            f"training process {rank} of {nproc} {how}; the others were stopped. Continue the run with --resume"
        ) from None


@contextlib.contextmanager
def _quiet_launcher() -> Iterator[None]:
    """The launcher's reports and a killed process's semaphore warning left out while the block runs."""
    # each of the launcher's modules sets its logger's level itself
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.startswith(QUIET)]
    levels = {logger: logger.level for logger in loggers}
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    # a killed process leaves its semaphores to the resource tracker, which frees them with a warning
    warnings = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = ",".join(
        filter(None, [warnings, "ignore::UserWarning:multiprocessing.resource_tracker"])
    )
    try:
        yield
    finally:
        for logger, level in levels.items():
            logger.setLevel(level)
        if warnings is None:
            del os.environ["PYTHONWARNINGS"]
        else:
            os.environ["PYTHONWARNINGS"] = warnings


def _worker(work: Callable, *args) -> Any:
    """One process of `launch`: `work(*args)`. Ctrl-C or SIGTERM (from the terminal or the launcher) raises
    KeyboardInterrupt once, so that the work removes what it was writing, then the process ends without a traceback."""
    stopped = []

    def stop(signum, frame):
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second one (terminal, then launcher) must not cut the cleanup
            signal.signal(sig, signal.SIG_IGN)
        stopped.append(signum)
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    try:
        return work(*args)
    except BaseException:
        if not stopped:
            raise
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + stopped[0])
