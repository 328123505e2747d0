"""Reading a user's files, preprocessing them into a graph-ready dataset, and loading that dataset."""

from .dataset import ProcessedData, load_processed
from .preprocess import PreprocessConfig, preprocess

__all__ = ["PreprocessConfig", "ProcessedData", "load_processed", "preprocess"]
