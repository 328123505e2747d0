"""Training, evaluation and top-K recommendation over a preprocessed dataset."""

from .config import TrainConfig
from .evaluate import evaluate, evaluate_scores, target_ranks
from .trainer import train

__all__ = ["TrainConfig", "evaluate", "evaluate_scores", "target_ranks", "train"]
