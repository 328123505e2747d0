"""MMSR propagation (dual attention, asynchronous update) and the recommender models."""

from .attention import HeterogeneousAttention, HomogeneousAttention, attend
from .batch import Batch, make_batch, pad_left
from .content import ITEM_REPRS
from .layer import FUSIONS, MMSRLayer
from .mmsr import MMSR, MMSRConfig
from .readout import READOUTS
from .sasrec import SASRec, SASRecConfig
from .scoring import FullSortRecommender as Recommender

__all__ = [
    "FUSIONS",
    "ITEM_REPRS",
    "READOUTS",
    "MMSR",
    "MMSRConfig",
    "MMSRLayer",
    "Recommender",
    "SASRec",
    "SASRecConfig",
    "Batch",
    "make_batch",
    "pad_left",
    "HeterogeneousAttention",
    "HomogeneousAttention",
    "attend",
]
