"""MMSR propagation (dual attention, asynchronous update) and the recommender models."""
from .attention import HeterogeneousAttention, HomogeneousAttention, attend
from .layer import FUSIONS, MMSRLayer
from .mmsr import MMSR, MMSRConfig
from .sasrec import SASRec, SASRecConfig
from .scoring import FullSortRecommender as Recommender

__all__ = ["FUSIONS", "MMSR", "MMSRConfig", "MMSRLayer", "Recommender", "SASRec", "SASRecConfig",
           "HeterogeneousAttention", "HomogeneousAttention", "attend"]
