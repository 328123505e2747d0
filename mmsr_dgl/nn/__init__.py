"""MMSR propagation (dual attention, asynchronous update) and the recommender models."""
from .attention import HeterogeneousAttention, HomogeneousAttention, attend
from .layer import FUSIONS, MMSRLayer
from .mmsr import MMSR, MMSRConfig

__all__ = ["FUSIONS", "MMSR", "MMSRConfig", "MMSRLayer", "HeterogeneousAttention", "HomogeneousAttention",
           "attend"]
