"""mmsr-dgl: MMSR (Hu et al., CIKM 2023) on DGL heterographs."""

import os

from ._allocator import keep_freed_memory

# DGL reads this at import time; without it DGL writes ~/.dgl, which fails on a read-only HOME.
os.environ.setdefault("DGLBACKEND", "pytorch")
# How long an idle OpenMP thread of torch and DGL spins before it sleeps, read when torch is first imported. With
# the default (300,000) 2 threads run up to ten times slower while another process takes one of 2 cores; with
# 1,000 a thread sleeps between most operations and each wakes it again (a quarter of a step's time on an idle
# machine). 10,000 keeps the speed of the default when idle; training drops to 1 thread when another process
# makes 2 slower (training/threads.py; BENCHMARKS.md, "Threads").
os.environ.setdefault("GOMP_SPINCOUNT", "10000")
keep_freed_memory()

__version__ = "0.1.0"
