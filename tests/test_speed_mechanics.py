"""What keeps training and evaluation cheap, checked by behaviour rather than by time: freed memory kept for
reuse, threads chosen by measured step times, one item table per evaluation."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from test_training import run_train

from mmsr_dgl.training import evaluate
from mmsr_dgl.training.run import load_run
from mmsr_dgl.training.threads import ThreadChooser

FAULTS = """
import ctypes, json, resource
import mmsr_dgl
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]


def block():  # a 64 MiB temporary, written and freed, as a step's large tensors are
    p = libc.malloc(1 << 26)
    ctypes.memset(p, 1, 1 << 26)
    libc.free(p)


block()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    block()
print(json.dumps((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5))
"""


def page_faults(env: dict) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator: Linux only")
def test_freed_memory_is_reused_without_page_faults():
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    kept = page_faults(env)
    returned = page_faults({**env, "MMSR_KEEP_FREED_MEMORY": "0"})
    # 16,384 pages faulted in again each time the block goes back to the system; none when the heap keeps it
    assert returned > 15_000 and kept < 100, (kept, returned)


def feed(chooser: ThreadChooser, seconds_for: dict[int, float], steps: int) -> list[int]:
    threads = []
    for _ in range(steps):
        threads.append(torch.get_num_threads())
        chooser.step_done(seconds_for[torch.get_num_threads()])
    return threads


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_move_to_one_when_it_runs_faster_and_back(restore_threads):
    chooser = ThreadChooser(2, window=4, first_check=8)
    feed(chooser, {2: 0.30, 1: 0.13}, 40)  # another process holds a core: 1 thread is faster
    assert torch.get_num_threads() == 1
    feed(chooser, {2: 0.09, 1: 0.13}, 200)  # the machine is free again
    assert torch.get_num_threads() == 2


def test_threads_stay_when_the_other_count_is_slower_and_checks_grow_rarer(restore_threads):
    chooser = ThreadChooser(2, window=4, first_check=8, longest_hold=64)
    used = feed(chooser, {2: 0.09, 1: 0.13}, 400)
    assert torch.get_num_threads() == 2
    tried = sum(1 for a, b in zip(used, used[1:]) if a == 2 and b == 1)
    assert 3 <= tried <= 10  # checks at 8, 16, 32, 64, 64, ... steps apart, not every few steps
    assert used.count(1) < 0.2 * len(used)


def test_fixed_threads_never_change(restore_threads):
    chooser = ThreadChooser(2, adaptive=False, window=4, first_check=8)
    assert set(feed(chooser, {2: 0.30, 1: 0.13}, 100)) == {2}


def test_evaluation_computes_the_item_table_once(synthetic_data_dir, tmp_path, monkeypatch):
    run_train(synthetic_data_dir, tmp_path / "run", epochs=1)
    _, data, model = load_run(tmp_path / "run")
    calls = []
    table = model.item_table
    monkeypatch.setattr(model, "item_table", lambda *a: calls.append(a) or table(*a))
    evaluate(model, data, "test", batch_size=16)
    assert len(data.splits["test"][0]) > 16 * 3 and len(calls) == 1
