"""mmsr-dgl: MMSR (Hu et al., CIKM 2023) on DGL heterographs."""
import os

# DGL reads this at import time; without it DGL writes ~/.dgl, which fails on a read-only HOME.
os.environ.setdefault("DGLBACKEND", "pytorch")

__version__ = "0.1.0"
