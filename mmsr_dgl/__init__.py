"""mmsr-dgl: MMSR (Hu et al., CIKM 2023) on DGL heterographs."""
import os

# DGL reads this at import time; without it DGL writes ~/.dgl, which fails on a read-only HOME.
os.environ.setdefault("DGLBACKEND", "pytorch")
# How long an idle OpenMP thread of torch and DGL spins before it sleeps, read when torch is first imported. With
# the default, 2 threads run up to ten times slower while another process takes one of 2 cores; 1000 keeps most of
# their speed on an idle machine and holds up on a busy one (BENCHMARKS.md, "Threads").
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

__version__ = "0.1.0"
